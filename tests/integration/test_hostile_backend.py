"""smtpgate in front of a broken or hostile backend (SPEC §3, "Hostile and broken
peers"): replies of the wrong class (354 to RCPT, 250 to DATA), replies beyond
those owed (an extra 250 after MAIL, a 250 in the same write as the 354, a 250
in the middle of the body, a reply nobody asked for), a backend that closes
mid-body, and control characters in reply text. The backend is
scripted_backend.ScriptedBackend (in-process); each test checks what the client
saw, the bytes the backend received and the gateway's JSON log."""

import base64
import json
import os
import resource
import time
import unittest

import support
from scripted_backend import CLOSE, ScriptedBackend, ehlo_reply
from support import IntegrationTestCase, dot_stuff

HOSTNAME = "gw.example.test"
CLIENT = "127.0.0.5"
SENDER = "a@other.example"
RCPT = "user@example.com"

PROTOCOL_ERROR = b"451 4.3.0 Error: backend protocol error\r\n"
BACKEND_DOWN = b"421 4.4.1 backend unavailable, try later\r\n"

HALF_BODY = (b"From: a@other.example\r\nTo: user@example.com\r\nSubject: hostile\r\n"
             b"\r\nThe first half of the body.\r\n")
REST_OF_BODY = b"The second half of the body.\r\n"


def control_chars(text):
    return [c for c in text if ord(c) < 0x20 or ord(c) == 0x7f]


def strings_in(obj):
    """Every str inside a parsed JSON value (keys and values)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from strings_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings_in(v)


class HostileBackendTestCase(IntegrationTestCase):
    """One scripted backend and one gateway (mx listener) per test."""

    def start(self, replies=None, mid_body=None, pipelining=True, **sections):
        self.backend = ScriptedBackend(replies, pipelining, mid_body).start()
        self.addCleanup(self.backend.stop)
        sections.setdefault("message", {"received_header": False})
        policy = support.gateway_policy(self.backend.address, listeners=(("mx", "mx"),),
                                        hostname=HOSTNAME, **sections)
        self.gw = self.start_gateway(policy)
        return self.gw

    def client(self):
        c = self.raw_client(self.gw, "mx", CLIENT)
        self.assertEqual(c.greeting().code, 220)
        self.assertEqual(c.ehlo().code, 250)
        return c

    def conn(self, n=1):
        """The backend's n-th connection (1-based), waiting for it."""
        return self.backend.wait_for_connections(n, timeout=10)[n - 1]

    def wait_backend_eof(self, conn):
        """The gateway closed this backend connection (the backend saw EOF)."""
        self.backend.wait_for(lambda: conn.eof or conn.closed, timeout=10,
                              message="the gateway to close backend connection %d"
                              % conn.index)
        self.assertTrue(conn.eof, "the backend closed connection %d itself: %r"
                        % (conn.index, conn))

    def assertNoFinalDot(self):
        for conn in self.backend.connections():
            self.assertEqual(conn.bodies, [], conn)
            self.assertNotIn(b"\r\n.\r\n", conn.raw, conn)

    def assertNothingDelivered(self):
        delivered = [o for o in self.gw.find(event="message") if o.get("delivered") is not False]
        self.assertEqual(delivered, [], "message log lines not delivered:false:\n%s"
                         % self.gw.text())

    def assertNoStrayReply(self, c, *forbidden):
        """Nothing more arrives at the client within a short while (or, if it
        does, none of the forbidden byte strings is in it)."""
        extra = c.pending(0.3)
        for f in forbidden:
            self.assertNotIn(f, extra)
        return extra

    def quit(self, c):
        self.assertReply(c.command("QUIT"), 221)
        self.assertTrue(c.is_closed())
        self.gw.wait_for_log(event="session_close", timeout=10)

    def backend_error(self):
        return self.gw.wait_for_log(event="error", component="backend", timeout=10)


class WrongClassTest(HostileBackendTestCase):
    """A reply of the wrong class for the command it answers."""

    def test_354_to_rcpt(self):
        self.start(replies={"RCPT": b"354 go ahead, send the body\r\n"})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 250)
        r = c.command("RCPT TO:<%s>" % RCPT)
        self.assertEqual(r.raw, PROTOCOL_ERROR)
        data = c.command("DATA")
        self.assertIn(data.code // 100, (4, 5), data)
        self.assertNotEqual(data.code, 354, data)
        self.assertNoStrayReply(c, b"354")
        self.backend_error()
        conn = self.conn(1)
        self.wait_backend_eof(conn)
        self.assertEqual(conn.verbs(), ["EHLO", "MAIL", "RCPT"])
        self.assertNotIn(b"DATA", conn.raw)
        self.assertEqual(len(self.backend.connections()), 1)
        self.assertReply(c.command("NOOP"), 250)   # the session goes on
        self.quit(c)
        self.assertNothingDelivered()

    def test_250_to_data(self):
        self.start(replies={"DATA": b"250 2.0.0 Ok: no body needed\r\n"})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % RCPT), 250)
        r = c.command("DATA")
        self.assertEqual(r.raw, PROTOCOL_ERROR)
        self.assertNoStrayReply(c, b"354", b"250")
        self.backend_error()
        conn = self.conn(1)
        self.wait_backend_eof(conn)
        self.assertEqual(conn.verbs(), ["EHLO", "MAIL", "RCPT", "DATA"])
        self.assertTrue(conn.raw.endswith(b"\r\nDATA\r\n"), conn)  # not a byte of body
        self.assertReply(c.command("NOOP"), 250)
        self.quit(c)
        self.assertNoFinalDot()
        self.assertNothingDelivered()


class OutOfTurnTest(HostileBackendTestCase):
    """Replies beyond those owed when the bytes arrived."""

    def test_extra_reply_after_pipelined_mail(self):
        self.start(replies={"MAIL": b"250 ok\r\n250 extra\r\n"})
        c = self.client()
        c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n" % (SENDER.encode(), RCPT.encode()))
        first, second = c.read_reply(), c.read_reply()
        self.assertIn(first.code // 100, (2, 4), first)
        self.assertIn(second.code // 100, (2, 4), second)
        # However the extra 250 was paired up, the transaction cannot go on: the backend
        # was out of step, and the gateway noticed by the time the RCPT's real reply came.
        self.backend_error()
        data = c.command("DATA")
        self.assertIn(data.code // 100, (4, 5), data)
        self.assertNotEqual(data.code, 354, data)
        self.assertNoStrayReply(c, b"354", b"250")
        conn = self.conn(1)
        self.wait_backend_eof(conn)
        self.assertNotIn("DATA", conn.verbs()[:3])
        self.assertReply(c.command("NOOP"), 250)
        self.quit(c)
        self.assertNoFinalDot()
        self.assertNothingDelivered()

    def test_extra_reply_after_mail_without_pipelining(self):
        # Without PIPELINING at the backend the gateway holds the client's RCPT until MAIL is
        # answered, so only one reply is owed when "250 ok\r\n250 extra\r\n" arrives: the
        # extra one is caught at once and never becomes the RCPT's reply.
        self.start(replies={"MAIL": b"250 ok\r\n250 extra\r\n"}, pipelining=False)
        c = self.client()
        c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n" % (SENDER.encode(), RCPT.encode()))
        self.assertEqual(c.read_reply().raw, b"250 ok\r\n")
        self.assertEqual(c.read_reply().raw, PROTOCOL_ERROR)
        data = c.command("DATA")
        self.assertIn(data.code // 100, (4, 5), data)
        self.assertNotEqual(data.code, 354, data)
        self.assertNoStrayReply(c, b"extra", b"354")
        self.backend_error()
        conn = self.conn(1)
        self.wait_backend_eof(conn)
        self.assertNotIn("DATA", conn.verbs())
        self.quit(c)
        self.assertNoFinalDot()
        self.assertNothingDelivered()

    def test_250_in_same_write_as_354(self):
        self.start(replies={"DATA": b"354 go\r\n250 2.0.0 Ok: queued as FAKE\r\n"})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % RCPT), 250)
        seen = []
        r = c.command("DATA")
        seen.append(r.raw)
        if r.code == 354:
            c.send(dot_stuff(HALF_BODY + REST_OF_BODY) + b".\r\n")
            r = c.read_reply(timeout=10)
            seen.append(r.raw)
        self.assertEqual(r.raw, PROTOCOL_ERROR, seen)
        # the dot of a body already answered gets no second reply
        seen.append(self.assertNoStrayReply(c, b"FAKE", b"250"))
        self.assertNotIn(b"FAKE", b"".join(seen))
        self.backend_error()
        logged = self.gw.wait_for_log(event="message", timeout=10)
        self.assertIs(logged.get("delivered"), False, logged)
        conn = self.conn(1)
        self.wait_backend_eof(conn)
        self.assertNoFinalDot()
        self.assertReply(c.command("NOOP"), 250)   # the session goes on
        self.quit(c)
        self.assertNothingDelivered()

    def test_250_in_the_middle_of_the_body(self):
        self.start(mid_body=b"250 2.0.0 Ok: FAKE\r\n")
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % RCPT), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(HALF_BODY))
        conn = self.conn(1)
        acted_at = self.backend.wait_for(lambda: conn.mid_body_at, timeout=10,
                                         message="the backend's mid-body 250")
        r = c.read_reply(timeout=5)
        waited = time.monotonic() - acted_at
        self.assertEqual(r.raw, PROTOCOL_ERROR)
        self.assertLessEqual(waited, 1.0, "451 came %.2fs after the backend's 250" % waited)
        c.send(dot_stuff(REST_OF_BODY) + b".\r\n")
        self.assertReply(c.command("NOOP"), 250)   # no reply to the dot; the session goes on
        self.assertNoStrayReply(c, b"FAKE")
        self.wait_backend_eof(conn)
        self.assertNoFinalDot()
        self.assertNotIn(b"second half", conn.raw)
        logged = self.gw.wait_for_log(event="message", timeout=10)
        self.assertIs(logged.get("delivered"), False, logged)
        self.backend_error()
        self.quit(c)
        self.assertNothingDelivered()


class BackendClosesTest(HostileBackendTestCase):

    def test_backend_closes_mid_body(self):
        self.start(mid_body=CLOSE)
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % RCPT), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(HALF_BODY))
        conn = self.conn(1)
        acted_at = self.backend.wait_for(lambda: conn.mid_body_at, timeout=10,
                                         message="the backend to close mid-body")
        r = c.read_reply(timeout=5)
        waited = time.monotonic() - acted_at
        self.assertEqual(r.raw, BACKEND_DOWN)
        self.assertLessEqual(waited, 1.0, "421 came %.2fs after the backend closed" % waited)
        # The rest of the body is read and dropped; after a 421 the session ends.
        try:
            c.send(dot_stuff(REST_OF_BODY) + b".\r\n")
        except OSError:
            pass
        self.assertTrue(c.is_closed(timeout=10), "session still open after the 421")
        self.assertNotIn(b"250", c.buf)
        self.backend.wait_for(lambda: conn.closed, timeout=10)
        self.assertNoFinalDot()
        logged = self.gw.wait_for_log(event="message", timeout=10)
        self.assertIs(logged.get("delivered"), False, logged)
        self.backend_error()
        self.gw.wait_for_log(event="session_close", timeout=10)
        self.assertNothingDelivered()


class OrderTest(HostileBackendTestCase):

    def test_many_pipelined_recipients_without_backend_pipelining_keep_their_order(self):
        # More recipients than replies the gateway keeps owed at once (128): it pauses the
        # client and goes on from each backend reply. Commands written from there must queue
        # behind those still held, or every later reply lands on the wrong recipient.
        n = 140
        self.start(replies={"RCPT": lambda conn, line: b"250 2.1.5 ok\r\n" if "<r000@" in line
                            else b"550 5.1.1 no such user\r\n"},
                   pipelining=False, mx={"max_recipients": 1000})
        c = self.client()
        rcpts = ["r%03d@example.com" % i for i in range(n)]
        c.send(("MAIL FROM:<%s>\r\n" % SENDER
                + "".join("RCPT TO:<%s>\r\n" % r for r in rcpts)).encode())
        self.assertEqual(c.read_reply().code, 250)
        codes = [c.read_reply(timeout=15).code for _ in rcpts]
        self.assertEqual(codes, [250] + [550] * (n - 1))
        sent = [l for l in self.conn().commands if l.upper().startswith("RCPT")]
        self.assertEqual(sent, ["RCPT TO:<%s>" % r for r in rcpts])


class ReplyTextTest(HostileBackendTestCase):

    DIRTY_RCPT = b"550 5.1.1 bad \x1b[31mred\x00 text\rX\r\n"
    DIRTY_DOT = b"554 5.7.1 spam \x1b[0m\x07here\x00\rX\x7f\r\n"

    def test_reply_text_sanitised(self):
        def rcpt(conn, line):
            return self.DIRTY_RCPT if "bad@" in line else b"250 2.1.5 Ok\r\n"

        self.start(replies={"RCPT": rcpt, "DOT": self.DIRTY_DOT})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 250)
        r = c.command("RCPT TO:<bad@example.com>")
        self.assertEqual(r.raw, b"550 5.1.1 bad ?[31mred? text?X\r\n")
        self.assertReply(c.command("RCPT TO:<%s>" % RCPT), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(HALF_BODY + REST_OF_BODY) + b".\r\n")
        r = c.read_reply()
        self.assertEqual(r.raw, b"554 5.7.1 spam ?[0m?here??X?\r\n")
        self.quit(c)
        # the backend did get both commands (the text came from it, not from the gateway)
        conn = self.conn(1)
        self.assertIn("RCPT TO:<bad@example.com>", conn.commands)
        self.assertEqual(len(conn.bodies), 1)
        logged = self.gw.wait_for_log(event="message", timeout=10)
        self.assertIs(logged.get("delivered"), False, logged)
        self.assertTrue(logged.get("reply", "").startswith("554 5.7.1 spam ?[0m?here"), logged)
        for line in self.gw.lines:
            self.assertEqual(control_chars(line), [], line)
            # JSON escapes would hide them in the raw line: look at the decoded strings too
            for s in strings_in(json.loads(line)):
                self.assertEqual(control_chars(s), [], line)
            self.assertNotIn("\x1b", line)
        carrying = [l for l in self.gw.lines if "spam" in l or "5.1.1 bad" in l]
        self.assertTrue(carrying, self.gw.text())
        for line in carrying:
            for s in strings_in(json.loads(line)):
                self.assertTrue(all(0x20 <= ord(ch) <= 0x7e for ch in s), line)


class UnsolicitedReplyTest(HostileBackendTestCase):
    """A reply nobody asked for: never taken as the answer to a later command."""

    def test_unsolicited_reply_between_commands(self):
        # MAIL is answered, then 0.3 s later, with nothing in flight, a 250 arrives.
        self.start(replies={"MAIL": [b"250 2.1.0 Ok\r\n", 0.3, b"250 surprise\r\n"]})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 250)
        self.backend_error()
        r = c.command("RCPT TO:<%s>" % RCPT)
        self.assertEqual(r.raw, PROTOCOL_ERROR)
        data = c.command("DATA")
        self.assertIn(data.code // 100, (4, 5), data)
        self.assertNotEqual(data.code, 354, data)
        self.assertNoStrayReply(c, b"surprise", b"354")
        conn = self.conn(1)
        self.wait_backend_eof(conn)
        self.assertEqual(conn.verbs(), ["EHLO", "MAIL"])
        self.assertReply(c.command("RSET"), 250)
        self.quit(c)
        self.assertNoFinalDot()
        self.assertNothingDelivered()

    def test_second_reply_to_rset(self):
        self.start(replies={"RSET": b"250 2.0.0 Ok\r\n250 surprise\r\n"})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 250)
        self.assertReply(c.command("RSET"), 250)   # the gateway's own reply
        conn1 = self.conn(1)
        self.backend.wait_for(lambda: "RSET" in conn1.verbs(), timeout=10)
        self.backend_error()
        self.wait_backend_eof(conn1)
        # The next transaction runs on a new backend connection and gets its real replies.
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 250)
        r = c.command("RCPT TO:<%s>" % RCPT)
        self.assertEqual(r.raw, b"250 2.1.5 Ok\r\n")
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(HALF_BODY + REST_OF_BODY) + b".\r\n")
        r = c.read_reply()
        self.assertEqual(r.raw, b"250 2.0.0 Ok: queued as REAL\r\n")
        self.assertNoStrayReply(c, b"surprise")
        self.quit(c)
        self.assertEqual(conn1.verbs(), ["EHLO", "MAIL", "RSET"])
        conn2 = self.conn(2)
        self.assertEqual(conn2.verbs()[:4], ["EHLO", "MAIL", "RCPT", "DATA"])
        self.assertEqual(conn2.bodies, [HALF_BODY + REST_OF_BODY])
        logged = self.gw.wait_for_log(event="message", timeout=10)
        self.assertIs(logged.get("delivered"), True, logged)

    def test_extra_reply_with_the_ehlo_reply(self):
        # The surprise comes in the same write as the EHLO reply: the MAIL the gateway sends
        # next must not take it as its answer.
        self.start(replies={"EHLO": ehlo_reply() + b"250 surprise\r\n"})
        c = self.client()
        r = c.command("MAIL FROM:<%s>" % SENDER)
        self.assertEqual(r.raw, PROTOCOL_ERROR)
        self.assertReply(c.command("RCPT TO:<%s>" % RCPT), 503)   # no transaction began
        self.assertNoStrayReply(c, b"surprise")
        self.backend_error()
        conn = self.conn(1)
        self.wait_backend_eof(conn)
        self.assertNotIn("RCPT", conn.verbs())
        self.quit(c)
        self.assertNoFinalDot()
        self.assertNothingDelivered()


if __name__ == "__main__":
    unittest.main()


class SynchronousConnectFailureTest(HostileBackendTestCase):
    """A backend connect that fails inside uv_tcp_connect (here EMFILE: the gateway may open
    no more descriptors) while the client's pipelined commands are held. The failure is
    handled after the command that caused it has returned, so held input is read once, in
    order, and the session ends with one 421 (a gateway that handled it inline read the held
    commands again from inside the failure, and recursed until its stack ran out)."""

    def test_held_pipelined_commands_after_a_synchronous_connect_failure(self):
        gw_box = []

        def auth_then_no_more_descriptors(conn, line):
            # The gateway's newest descriptor is this backend connection's; from now on it may
            # open none below it, so once the connection is dropped the next connect fails
            # with EMFILE inside uv_tcp_connect. Only in the second session: the first one
            # takes the same path with descriptors to spare, so that a sanitizer runtime has
            # done its first-time checks (UBSan's vptr check opens a pipe on a cache miss,
            # which EMFILE would turn into a false report).
            if conn.index == 1:
                return b"250 2.0.0 not an answer to AUTH\r\n"
            pid = gw_box[0].proc.pid
            fds = [int(n) for n in os.listdir("/proc/%d/fd" % pid)]
            soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (max(fds), hard))
            gw_box.append(soft)
            return b"250 2.0.0 not an answer to AUTH\r\n"  # a protocol error: the backend is dropped

        replies = {"EHLO": b"250-scripted\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n",
                   "AUTH": auth_then_no_more_descriptors}
        self.backend = ScriptedBackend(replies).start()
        self.addCleanup(self.backend.stop)
        policy = support.gateway_policy(self.backend.address,
                                        listeners=(("sub", "auto"),), hostname=HOSTNAME,
                                        message={"received_header": False},
                                        submission={"access": {"default": "allow"},
                                                    "require_tls": False})
        self.gw = self.start_gateway(policy)
        gw_box.append(self.gw)
        creds = base64.b64encode(b"\0user@example.com\0secret").decode()
        warm = self.raw_client(self.gw, "sub", CLIENT)
        self.assertEqual(warm.greeting().code, 220)
        self.assertEqual(warm.ehlo().code, 250)
        warm.send(("AUTH PLAIN %s\r\nMAIL FROM:<user@example.com>\r\n"
                   "RCPT TO:<someone@example.com>\r\nNOOP\r\n" % creds).encode())
        self.assertReply(warm.read_reply(), 454)
        for code in (250, 250, 250):
            self.assertReply(warm.read_reply(), code)
        self.assertReply(warm.command("QUIT"), 221)
        self.gw.wait_for_log(event="session_close")
        c = self.raw_client(self.gw, "sub", CLIENT)
        self.assertEqual(c.greeting().code, 220)
        self.assertEqual(c.ehlo().code, 250)
        # AUTH waits for the backend; everything after it is held meanwhile.
        c.send(("AUTH PLAIN %s\r\nMAIL FROM:<user@example.com>\r\n"
                "RCPT TO:<someone@example.com>\r\nNOOP\r\nNOOP\r\n" % creds).encode())
        self.assertReply(c.read_reply(), 454)  # AUTH: the backend broke
        self.assertReply(c.read_reply(), 421, "4.4.1")  # MAIL: no backend can be had
        self.assertTrue(c.is_closed())
        self.assertEqual(c.pending(0.3), b"")
        self.assertEqual(self.gw.proc.poll(), None, "the gateway is gone")
        resource.prlimit(self.gw.proc.pid, resource.RLIMIT_NOFILE,
                         (gw_box[1], resource.prlimit(self.gw.proc.pid,
                                                      resource.RLIMIT_NOFILE)[1]))
        errors = support.wait_until(
            lambda: [o for o in self.gw.find(event="error", component="backend")
                     if "open files" in o.get("reason", "")],
            timeout=10, message="the connect failure's log line")
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("connect", errors[0]["reason"])
        closes = support.wait_until(
            lambda: self.gw.find(event="session_close")[1:], timeout=10,
            message="the second session's close")
        self.assertEqual(closes[0]["state"], "closed")
        # The warm-up's two connections and this session's AUTH; its MAIL reached no backend.
        self.assertEqual(len(self.backend.connections()), 3)
        self.assertNotIn("MAIL", self.conn(3).verbs())
        # The gateway still serves: a new session is greeted.
        c2 = self.raw_client(self.gw, "sub", CLIENT)
        self.assertEqual(c2.greeting().code, 220)
