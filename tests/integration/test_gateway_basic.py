"""smtpgate in front of the recording backend: the SMTP surface of SPEC §2–§4
on an `mx` listener (greeting, EHLO, relay control, pipelining, byte-exact
forwarding, size and line limits, smuggling, timeouts, backend failures)."""

import json
import re
import smtplib
import time
import unittest

import support
from support import IntegrationTestCase, RawClient, dot_stuff

HOSTNAME = "gw.example.test"
CLIENT = "127.0.0.5"


def message(subject="basic", extra=b""):
    return (b"From: sender@other.example\r\nTo: user@example.com\r\n"
            b"Subject: " + subject.encode() + b"\r\nMessage-ID: <" + subject.encode()
            + b"@other.example>\r\n\r\nHello.\r\n.a line with a leading dot\r\n"
            + extra + b"Bye.\r\n")


def header_block_ok(block):
    """block is one or more header fields, CRLF-terminated, folded correctly."""
    if not block.endswith(b"\r\n"):
        return False
    lines = block[:-2].split(b"\r\n")
    if not re.match(rb"^[!-9;-~]+:", lines[0]):
        return False
    return all(b"\n" not in l and b"\r" not in l for l in lines)


class GatewayTestCase(IntegrationTestCase):
    """One recording backend and one gateway (mx listener) per test."""

    backend_options = {}

    def start(self, backend=None, listeners=(("mx", "mx"),), **sections):
        if backend is None:
            self.backend = self.start_backend(**self.backend_options)
            address = self.backend.address
        else:
            self.backend = None
            address = backend
        self.policy = support.gateway_policy(address, listeners=listeners,
                                             hostname=HOSTNAME, **sections)
        self.gw = self.start_gateway(self.policy)
        return self.gw

    def client(self, source=CLIENT, listener="mx", greet=True, ehlo=True):
        c = self.raw_client(self.gw, listener, source)
        if greet:
            self.assertEqual(c.greeting().code, 220)
        if ehlo:
            self.assertEqual(c.ehlo().code, 250)
        return c

    def transaction(self, c, mail_from, rcpts, body):
        """MAIL/RCPT.../DATA/body one step at a time; returns the final reply."""
        self.assertReply(c.command("MAIL FROM:<%s>" % mail_from), 250)
        for r in rcpts:
            self.assertReply(c.command("RCPT TO:<%s>" % r), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(body) + b".\r\n")
        return c.read_reply()


class GreetingAndEhloTest(GatewayTestCase):

    def test_greeting_names_the_hostname(self):
        self.start()
        c = self.client(ehlo=False)
        c2 = self.raw_client(self.gw, "mx", "127.0.0.6")
        greeting = c2.greeting()
        self.assertEqual(greeting.code, 220)
        self.assertTrue(greeting.lines[0].startswith(HOSTNAME), greeting)
        self.assertReply(c.command("HELO client.example.org"), 250)
        self.assertReply(c.command("QUIT"), 221)
        self.assertTrue(c.is_closed())

    def test_ehlo_on_mx_listener(self):
        self.start()
        c = self.client(ehlo=False)
        r = c.ehlo()
        self.assertEqual(r.code, 250)
        self.assertTrue(r.lines[0].startswith(HOSTNAME), r)
        keywords = {l.split()[0].upper(): l.split()[1:] for l in r.lines[1:] if l.strip()}
        for kw in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
            self.assertIn(kw, keywords, r)
        self.assertNotIn("AUTH", keywords, r)
        self.assertFalse(any(l.upper().startswith("AUTH") for l in r.lines), r)
        if keywords["SIZE"]:
            self.assertEqual(int(keywords["SIZE"][0]), 52428800, r)
        # EHLO is answered by the gateway itself: the backend is not even connected.
        self.assertEqual(self.backend.connections(), [])

    def test_size_advertises_message_max_bytes(self):
        self.start(message={"max_bytes": 123456})
        r = self.client(ehlo=False).ehlo()
        size = [l.split() for l in r.lines if l.upper().startswith("SIZE")]
        self.assertTrue(size, r)
        if len(size[0]) > 1:
            self.assertEqual(int(size[0][1]), 123456, r)


class DeliveryTest(GatewayTestCase):

    def test_delivered_byte_exact_with_received_header(self):
        self.start()  # message.received_header defaults to true
        msg = message("with-received")
        s = self.smtp(self.gw, source=CLIENT)
        self.assertEqual(s.sendmail("sender@other.example", ["user@example.com"], msg), {})
        s.quit()
        msgs = self.backend.wait_for_messages(1)
        self.assertEqual(len(msgs), 1)
        m = msgs[0]
        self.assertEqual(m["mail_from"], "sender@other.example")
        self.assertEqual(m["rcpt_tos"], ["user@example.com"])
        data = m["data"]
        self.assertTrue(data.endswith(msg), data[:400])
        prefix = data[:len(data) - len(msg)]
        self.assertTrue(prefix.startswith(b"Received:"), prefix)
        self.assertTrue(header_block_ok(prefix), prefix)
        self.assertEqual(prefix.count(b"Received:"), 1, prefix)
        # continuation lines of a folded header start with whitespace
        for line in prefix[:-2].split(b"\r\n")[1:]:
            self.assertIn(line[:1], (b" ", b"\t"), prefix)
        self.assertIn(CLIENT.encode(), prefix)
        self.assertIn(HOSTNAME.encode(), prefix)

    def test_delivered_byte_exact_without_received_header(self):
        self.start(message={"received_header": False})
        msg = message("no-received", extra=b"8bit: \xc3\xa9\xe2\x82\xac\r\n..two dots\r\n")
        s = self.smtp(self.gw, source=CLIENT)
        s.sendmail("sender@other.example", ["user@example.com", "alice@example.net"], msg)
        s.quit()
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["data"], msg)
        self.assertEqual(m["rcpt_tos"], ["user@example.com", "alice@example.net"])
        # the backend got a canonical, dot-stuffed stream with exactly one end of data
        raw = self.backend.raw_all()
        self.assertEqual(raw.count(b"\r\n.\r\n"), 1)
        self.assertIn(b"\r\n..a line with a leading dot\r\n", raw)
        self.assertIn(b"\r\n...two dots\r\n", raw)

    def test_null_sender_accepted_on_mx(self):
        self.start(message={"received_header": False})
        c = self.client()
        r = self.transaction(c, "", ["postmaster@example.com"], message("bounce"))
        self.assertEqual(r.code, 250, r)
        self.assertEqual(self.backend.wait_for_messages(1)[0]["mail_from"], "")

    def test_five_megabyte_message_byte_exact(self):
        self.start(message={"received_header": False})
        parts = [b"From: big@other.example\r\nTo: user@example.com\r\nSubject: big\r\n\r\n"]
        line = b"".join(bytes([33 + (i % 90)]) for i in range(76)) + b"\r\n"
        n = 0
        size = sum(len(p) for p in parts)
        while size < 5 * 1024 * 1024:
            if n % 1000 == 0:
                chunk = b"." + line                       # needs dot-stuffing
            elif n % 1000 == 500:
                chunk = b"L" * 20000 + b"\r\n"            # a very long body line
            elif n % 777 == 0:
                chunk = b"\xc3\xa9\xe2\x82\xac 8-bit\r\n"
            else:
                chunk = line
            parts.append(chunk)
            size += len(chunk)
            n += 1
        msg = b"".join(parts)
        s = self.smtp(self.gw, source=CLIENT, timeout=60)
        t0 = time.monotonic()
        s.sendmail("big@other.example", ["user@example.com"], msg)
        s.quit()
        m = self.backend.wait_for_messages(1, timeout=30)[0]
        self.assertEqual(len(m["data"]), len(msg))
        self.assertTrue(m["data"] == msg, "5 MB message altered in transit")
        self.assertLess(time.monotonic() - t0, 60)

    def test_swaks_pipelined_delivery(self):
        if not support.have_swaks():
            self.skipTest("swaks not installed")
        self.start(message={"received_header": False})
        r = support.run_swaks(self.gw.host("mx"), self.gw.port("mx"), "--pipeline",
                              "--from", "swaks@other.example", "--to", "user@example.com",
                              "--header", "Subject: via swaks", source="127.0.0.8")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["mail_from"], "swaks@other.example")
        self.assertIn(b"Subject: via swaks", m["data"])


class RelayTest(GatewayTestCase):

    def test_relay_to_foreign_domain_refused(self):
        self.start()
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<spammer@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<someone@gmail.example>"), 554, "5.7.1",
                         "relay access denied")
        self.assertReply(c.command("RCPT TO:<victim@example.com.gmail.example>"), 554, "5.7.1")
        r = c.command("DATA")                          # no valid recipient:
        self.assertIn(r.code, (503, 554), r)           # RFC 5321 §3.3 allows either
        self.assertReply(c.command("QUIT"), 221)
        c.close()
        # The backend never saw a recipient, let alone data.
        if self.backend.connections():
            self.backend.wait_for_disconnect()
        self.assertFalse(self.backend.saw("RCPT"), self.backend.commands())
        self.assertFalse(self.backend.saw("DATA"), self.backend.commands())
        self.assertEqual(self.backend.messages(), [])
        d = self.gw.wait_for_log(event="decision", rule="mx.relay")
        self.assertEqual(d.get("verdict"), "reject", d)
        self.assertEqual(d.get("stage"), "rcpt", d)
        self.assertTrue(str(d.get("reply", "")).startswith("554 5.7.1"), d)

    def test_percent_hack_and_bang_path_refused(self):
        self.start()
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<someone%gmail.example@example.com>"), 554, "5.7.1")
        self.assertReply(c.command("RCPT TO:<gmail.example!someone@example.com>"), 554, "5.7.1")
        self.assertReply(c.command("RCPT TO:<@example.com:someone@gmail.example>"), 554, "5.7.1")
        self.assertFalse(self.backend.saw("RCPT"))

    def test_local_recipient_after_refused_one(self):
        self.start(message={"received_header": False})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<someone@gmail.example>"), 554, "5.7.1")
        self.assertReply(c.command("RCPT TO:<User@Example.COM>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(message("mixed")) + b".\r\n")
        self.assertReply(c.read_reply(), 250)
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["rcpt_tos"], ["User@Example.COM"])
        self.assertNotIn("gmail", " ".join(self.backend.commands()))


class CommandsTest(GatewayTestCase):

    def test_simple_commands(self):
        self.start()
        c = self.client()
        self.assertReply(c.command("NOOP"), 250)
        self.assertReply(c.command("RSET"), 250)
        help_reply = c.command("HELP")
        self.assertIn(help_reply.code, (211, 214), help_reply)
        self.assertReply(c.command("VRFY user@example.com"), 252)
        unknown = c.command("FROBNICATE now")
        self.assertEqual(unknown.code, 500, unknown)
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 503)   # before MAIL
        self.assertReply(c.command("DATA"), 503)                         # before MAIL
        # none of this needed the backend: it was never contacted
        self.assertEqual(self.backend.connections(), [])
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("MAIL FROM:<b@other.example>"), 503)  # nested MAIL
        self.assertReply(c.command("RSET"), 250)
        self.assertReply(c.command("MAIL FROM:<b@other.example>"), 250)
        self.assertReply(c.command("QUIT"), 221)
        self.assertTrue(c.is_closed())

    def test_pipelined_commands_answered_in_order(self):
        self.start(message={"received_header": False})
        c = self.client()
        c.send(b"MAIL FROM:<p@other.example>\r\n"
               b"RCPT TO:<user@example.com>\r\n"
               b"RCPT TO:<someone@gmail.example>\r\n"
               b"RCPT TO:<postmaster@example.com>\r\n"
               b"DATA\r\n")
        codes = [c.read_reply().code for _ in range(5)]
        self.assertEqual(codes, [250, 250, 554, 250, 354])
        c.send(dot_stuff(message("pipelined")) + b".\r\nNOOP\r\nQUIT\r\n")
        self.assertReply(c.read_reply(), 250)
        self.assertReply(c.read_reply(), 250)
        self.assertReply(c.read_reply(), 221)
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["rcpt_tos"], ["user@example.com", "postmaster@example.com"])
        self.assertEqual(m["data"], message("pipelined"))

    def test_two_transactions_in_one_session(self):
        self.start(message={"received_header": False})
        c = self.client()
        self.assertReply(self.transaction(c, "a@other.example", ["user@example.com"],
                                          message("first")), 250)
        self.assertReply(self.transaction(c, "b@other.example", ["alice@example.net"],
                                          message("second")), 250)
        msgs = self.backend.wait_for_messages(2)
        self.assertEqual([(m["mail_from"], m["data"]) for m in msgs],
                         [("a@other.example", message("first")),
                          ("b@other.example", message("second"))])

    def test_command_line_too_long(self):
        self.start(message={"received_header": False})
        c = self.client()
        # 1000 octets including CRLF is the limit; one more is too long.
        ok_line = b"NOOP " + b"x" * (1000 - 2 - 5)
        self.assertEqual(len(ok_line) + 2, 1000)
        self.assertReply(c.command(ok_line), 250)
        self.assertReply(c.command(ok_line + b"y"), 500, "5.5.2", "line too long")
        self.assertReply(c.command(b"NOOP " + b"z" * 5000), 500, "5.5.2", "line too long")
        long_mail = b"MAIL FROM:<" + b"a" * 1100 + b"@other.example>"
        self.assertReply(c.command(long_mail), 500, "5.5.2", "line too long")
        self.assertFalse(any("aaaaaaaaaa" in l for l in self.backend.commands()))
        # the session goes on
        self.assertReply(c.command("NOOP"), 250)
        self.assertReply(self.transaction(c, "a@other.example", ["user@example.com"],
                                          message("after-long-line")), 250)
        self.assertEqual(len(self.backend.wait_for_messages(1)), 1)

    def test_command_ending_in_bare_lf_accepted(self):
        self.start(message={"received_header": False})
        c = self.client()
        c.send(b"MAIL FROM:<lf@other.example>\n")
        self.assertReply(c.read_reply(), 250)
        c.send(b"RCPT TO:<user@example.com>\n")
        self.assertReply(c.read_reply(), 250)
        # forwarded with CRLF
        for e in self.backend.events("command"):
            self.assertEqual(e["ending"], "\r\n", e)


class BackendFailureTest(GatewayTestCase):

    def test_backend_down_gives_421(self):
        dead = support.listen_addr("127.0.0.1", support.free_port())
        self.start(backend=dead, timeouts={"backend_connect": "3s"})
        c = self.client()
        t0 = time.monotonic()
        r = c.command("MAIL FROM:<a@other.example>", timeout=15)
        self.assertEqual(r.code, 421, r)
        self.assertEqual(r.enhanced, "4.4.1", r)
        self.assertLess(time.monotonic() - t0, 10)

    def test_backend_data_done_timeout_gives_421(self):
        # The backend takes 4 s to answer the final dot; backend_data_done is 1 s. The client
        # gets 421 after about a second, never the backend's late 250. Earlier commands in the
        # same session move the deadline: it must count from the dot, not from MAIL.
        self.backend_options = {"data_delay": 4}
        self.start(timeouts={"backend_reply": "1s", "backend_data_done": "1s"})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        time.sleep(0.6)
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
        time.sleep(0.6)
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(message("slow")) + b".\r\n")
        t0 = time.monotonic()
        r = c.read_reply(timeout=10)
        waited = time.monotonic() - t0
        self.assertReply(r, 421, "4.4.1")
        self.assertGreater(waited, 0.8)
        self.assertLess(waited, 3.0)
        self.gw.wait_for_log(event="error", component="backend")

    def test_final_reply_may_take_longer_than_backend_reply(self):
        # Content scanning: the final dot's reply has its own bound (10 minutes by default,
        # RFC 5321 §4.5.3.2.6), not backend_reply's.
        self.backend_options = {"data_delay": 2}
        self.start(timeouts={"backend_reply": "1s"})
        c = self.client()
        r = self.transaction(c, "a@other.example", ["user@example.com"], message("scanned"))
        self.assertReply(r, 250)
        self.assertEqual(len(self.backend.wait_for_messages(1)), 1)
        name = support.client_address(c)
        self.assertReply(c.command("QUIT"), 221)
        # The log is written in order: once the session_close is in, so is every line before.
        self.gw.wait_for_log(event="session_close", client=name)
        self.assertEqual(self.gw.find(event="error", component="backend"), [])

    def test_backend_rejecting_data_is_relayed(self):
        self.backend_options = {"data_reply": "554 5.7.1 rejected by content filter"}
        self.start()
        c = self.client()
        r = self.transaction(c, "a@other.example", ["user@example.com"], message("filtered"))
        self.assertReply(r, 554, "5.7.1", "rejected by content filter")
        self.assertEqual(self.backend.messages(), [])
        # the session stays usable
        self.assertReply(c.command("NOOP"), 250)

    def test_backend_rejecting_rcpt_is_relayed(self):
        self.backend_options = {"reject_rcpt": ["nobody@example.com"]}
        self.start(message={"received_header": False})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        r = c.command("RCPT TO:<nobody@example.com>")
        self.assertReply(r, 550, "5.1.1", "user unknown")
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(message("one-rcpt")) + b".\r\n")
        self.assertReply(c.read_reply(), 250)
        self.assertEqual(self.backend.wait_for_messages(1)[0]["rcpt_tos"], ["user@example.com"])

    def test_client_disconnect_mid_data_delivers_nothing(self):
        self.start()
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(b"Subject: cut\r\n\r\nthis message is never finished\r\nmore\r\n")
        time.sleep(0.3)
        c.abort()
        # the gateway aborts the backend transaction by closing the connection
        self.backend.wait_for_disconnect(timeout=10)
        self.assertEqual(self.backend.messages(), [])
        self.assertNotIn(b"\r\n.\r\n", self.backend.raw_all())


class SmugglingTest(GatewayTestCase):
    """SMTP smuggling: a non-CRLF "end of data" inside the body followed by a
    second message's commands must never give the backend a second message."""

    SECOND = (b"MAIL FROM:<evil@other.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n"
              b"From: ceo@example.com\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")
    VARIANTS = {
        "LF.CRLF": b"\n.\r\n",
        "CRLF.LF": b"\r\n.\n",
        "CR.CR": b"\r.\r",
        "LF.LF": b"\n.\n",
        "CR.CRLF": b"\r.\r\n",
    }

    def body(self, boundary):
        return (b"From: a@other.example\r\nSubject: carrier\r\n\r\nhello" + boundary
                + self.SECOND + b".\r\n")

    def test_bare_newline_reject_default(self):
        self.start()
        for name, boundary in self.VARIANTS.items():
            with self.subTest(variant=name):
                c = self.client()
                self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
                self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
                self.assertReply(c.command("DATA"), 354)
                c.send(self.body(boundary))
                r = c.read_reply()
                self.assertReply(r, 521, "5.5.2")
                self.assertTrue(c.is_closed(), "connection not closed after 521")
                c.close()
        if self.backend.connections():
            self.backend.wait_for_disconnect()
        self.assertEqual(self.backend.messages(), [])
        self.assertNotIn("MAIL FROM:<evil@other.example>", self.backend.commands())
        self.assertNotIn(b"\r\n.\r\n", self.backend.raw_all())
        d = self.gw.wait_for_log(event="decision", rule="message.bare_newline")
        self.assertEqual(d.get("verdict"), "reject", d)

    def test_bare_newline_normalize(self):
        self.start(message={"bare_newline": "normalize", "received_header": False})
        for i, (name, boundary) in enumerate(self.VARIANTS.items()):
            with self.subTest(variant=name):
                c = self.client()
                self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
                self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
                self.assertReply(c.command("DATA"), 354)
                c.send(self.body(boundary))
                self.assertReply(c.read_reply(), 250)
                # the smuggled commands were body text: nothing more is answered
                self.assertReply(c.command("NOOP"), 250)
                self.assertReply(c.command("QUIT"), 221)
                msgs = self.backend.wait_for_messages(i + 1)
                self.assertEqual(len(msgs), i + 1)
                data = msgs[-1]["data"]
                self.assertIn(b"MAIL FROM:<evil@other.example>", data)
                self.assertIsNone(re.search(rb"\r(?!\n)|(?<!\r)\n", data), data)
                raw = self.backend.raw(msgs[-1]["conn"])
                self.assertEqual(raw.count(b"\r\n.\r\n"), 1, raw)
        self.assertEqual(len(self.backend.messages()), len(self.VARIANTS))
        self.assertNotIn("MAIL FROM:<evil@other.example>", self.backend.commands())


class SizeLimitTest(GatewayTestCase):

    def test_message_over_max_bytes(self):
        self.start(message={"max_bytes": 10000, "received_header": False})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
        self.assertReply(c.command("DATA"), 354)
        big = b"Subject: big\r\n\r\n" + (b"z" * 98 + b"\r\n") * 200     # ~20 KB
        c.send(big + b".\r\n")
        self.assertReply(c.read_reply(timeout=15), 552, "5.3.4")
        self.assertEqual(self.backend.messages(), [])
        self.assertNotIn(b"\r\n.\r\n", self.backend.raw_all())
        # the session continues, and a small message still goes through
        self.assertReply(c.command("NOOP"), 250)
        small = b"Subject: small\r\n\r\n" + (b"s" * 98 + b"\r\n") * 40     # ~4 KB
        self.assertReply(self.transaction(c, "a@other.example", ["user@example.com"], small),
                         250)
        msgs = self.backend.wait_for_messages(1)
        self.assertEqual([m["data"] for m in msgs], [small])

    def test_size_parameter_above_max(self):
        self.start(message={"max_bytes": 10000})
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example> SIZE=20000"), 552, "5.3.4")
        self.assertFalse(self.backend.saw("MAIL"))
        self.assertReply(c.command("MAIL FROM:<a@other.example> SIZE=5000"), 250)


class TimeoutTest(GatewayTestCase):

    def test_idle_timeout(self):
        self.start(timeouts={"command": "2s"})
        c = self.client()
        t0 = time.monotonic()
        r = c.read_reply(timeout=10)
        elapsed = time.monotonic() - t0
        self.assertReply(r, 421, "4.4.2")
        self.assertIn(HOSTNAME, r.text)
        self.assertGreater(elapsed, 1.5)
        self.assertLess(elapsed, 8)
        self.assertTrue(c.is_closed())


class ClientIpTest(GatewayTestCase):
    """backend.client_ip: the backend learns the real client address."""

    def deliver(self, source):
        s = self.smtp(self.gw, source=source)
        s.sendmail("a@other.example", ["user@example.com"], message("client-ip"))
        s.quit()
        return self.backend.wait_for_messages(1)[0]

    def test_xclient(self):
        self.backend_options = {"xclient": True}
        self.start(client_ip="xclient")
        m = self.deliver("127.0.0.22")
        self.assertIsNotNone(m["xclient"], "the gateway sent no XCLIENT")
        self.assertEqual(m["xclient"].get("ADDR"), "127.0.0.22", m["xclient"])
        self.assertEqual(m["mail_from"], "a@other.example")

    def test_proxy_v1(self):
        self.backend_options = {"proxy_protocol": True}
        self.start(client_ip="proxy-v1")
        m = self.deliver("127.0.0.23")
        self.assertEqual((m["proxy"]["version"], m["proxy"]["src_addr"]), (1, "127.0.0.23"))

    def test_proxy_v2(self):
        self.backend_options = {"proxy_protocol": True}
        self.start(client_ip="proxy-v2")
        m = self.deliver("127.0.0.24")
        self.assertEqual((m["proxy"]["version"], m["proxy"]["src_addr"]), (2, "127.0.0.24"))

    def test_none_sends_neither(self):
        self.backend_options = {"xclient": True}
        self.start()                                     # client_ip "none"
        m = self.deliver("127.0.0.25")
        self.assertIsNone(m["xclient"])
        self.assertFalse(self.backend.saw("XCLIENT"))
        self.assertEqual(m["peer"][0], "127.0.0.1")       # the gateway's own address


class LogTest(GatewayTestCase):

    def test_json_log_lines(self):
        self.start()
        c = self.client()
        name = support.client_address(c)
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<someone@gmail.example>"), 554)
        self.assertReply(c.command("QUIT"), 221)
        c.close()
        # The log is written in order, by a thread: once the session_close is in, so is
        # every line of the session.
        closed = self.gw.wait_for_log(event="session_close", client=name)
        for line in list(self.gw.lines):
            if line.strip():
                self.assertIsInstance(json.loads(line), dict, line)
        opened = [o for o in self.gw.find(event="session_open")
                  if str(o.get("client", "")).startswith(CLIENT + ":")]
        self.assertEqual(len(opened), 1, self.gw.find(event="session_open"))
        o = opened[0]
        for key in ("ts", "session", "client", "listener", "class"):
            self.assertIn(key, o)
        self.assertTrue(o["client"].startswith(CLIENT + ":"), o)
        self.assertEqual(o["listener"], "mx")
        self.assertEqual(o["class"], "mx")
        self.assertEqual(closed["session"], o["session"], closed)
        self.assertEqual(closed["client"], o["client"])
        d = self.gw.decisions(rule="mx.relay")[0]
        for key in ("stage", "rule", "verdict", "enforced", "reason", "reply", "session"):
            self.assertIn(key, d)
        self.assertIs(d["enforced"], True)


if __name__ == "__main__":
    unittest.main()
