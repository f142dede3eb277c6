"""Hostile and broken clients (SPEC §3 "Hostile and broken peers"): bounded memory
for a client that never reads, the junk-command limit, SMTP synchronisation
(pre-greeting talk, pipelining after EHLO/DATA or in a HELO session), BDAT, HTTP
requests, AUTH= on MAIL FROM, 8-bit addresses without SMTPUTF8, the Received:
line length, bad base64 in AUTH PLAIN, and refusals on an implicit-TLS listener.

Each test checks what the client saw and what the recording backend received."""

import base64
import os
import signal
import socket
import ssl
import sys
import threading
import time

import support
from support import IntegrationTestCase, dot_stuff

HOSTNAME = "gw.example.test"
CLIENT = "127.0.0.5"
SYNC_ERROR = b"554 5.5.0 Error: SMTP protocol synchronization\r\n"


def message(subject):
    return ("From: a@other.example\r\nTo: user@example.com\r\nSubject: %s\r\n\r\n"
            "Body of %s.\r\n" % (subject, subject)).encode()


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def rss_factor(pid):
    """What the same allocations cost in RSS in this build of the gateway, relative to a
    normal one: under ThreadSanitizer every byte of memory touched has 4 bytes of shadow;
    AddressSanitizer's allocator adds redzones and keeps freed chunks (its quarantine is
    off for these tests, see UNQUARANTINED, else RSS says nothing)."""
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read()
    if "libtsan" in maps:
        return 5
    if "libasan" in maps:
        return 2
    return 1


# For the gateway of a test that measures its RSS: ASan's quarantine keeps up to 256 MB of
# freed memory mapped (the log lines of the refusals alone churn through 80 MB).
UNQUARANTINED = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0")
                 .lstrip(":")}


def process_state(pid):
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


class HostileClientTestCase(IntegrationTestCase):

    def start(self, backend_options=None, listeners=(("mx", "mx"),), env=None, **sections):
        self.backend = self.start_backend(**(backend_options or {}))
        sections.setdefault("message", {"received_header": False})
        self.policy = support.gateway_policy(self.backend.address, listeners=listeners,
                                             hostname=HOSTNAME, **sections)
        self.gw = self.start_gateway(self.policy, env=env)
        return self.gw

    def client(self, listener="mx", source=CLIENT, ehlo=True):
        c = self.raw_client(self.gw, listener, source)
        self.assertReply(c.greeting(), 220)
        if ehlo:
            self.assertReply(c.ehlo(), 250)
        return c

    def assertClosedWith(self, c, expected, timeout=5.0):
        """The client receives exactly `expected` (bytes, maybe b"") and then EOF."""
        self.assertTrue(c.is_closed(timeout), "connection still open; got %r" % c.buf)
        self.assertEqual(c.buf, expected)

    def connect_while_stopped(self, data):
        """Connects and sends `data` while the gateway is SIGSTOPped, so the bytes are
        waiting before the gateway accepts the connection and greets."""
        time.sleep(0.2)
        self.gw.signal(signal.SIGSTOP)
        try:
            support.wait_until(lambda: process_state(self.gw.proc.pid) == "T", 5, 0.01,
                               "the gateway stopped")
            c = support.RawClient(self.gw.host("mx"), self.gw.port("mx"), CLIENT)
            self.addCleanup(c.close)
            c.send(data)
            time.sleep(0.05)
        finally:
            self.gw.signal(signal.SIGCONT)
        return c


class OutputBoundTest(HostileClientTestCase):

    def test_client_that_never_reads_keeps_memory_bounded_and_is_closed(self):
        # Refused recipients are answered without limit (each is a policy decision, not an
        # error), so a client that pipelines them and never reads is the worst case.
        self.start(timeouts={"command": "3s"}, env=UNQUARANTINED)
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        pid = self.gw.proc.pid
        base = rss_kb(pid)
        chunk = b"RCPT TO:<victim@gmail.example>\r\n" * 2048      # 64 KiB
        c.sock.setblocking(False)
        sent, peak, blocked_since = 0, base, None
        deadline = time.monotonic() + 15
        while sent < 200 * 1024 * 1024 and time.monotonic() < deadline:
            try:
                sent += c.sock.send(chunk)
                blocked_since = None
            except BlockingIOError:
                if blocked_since is None:
                    blocked_since = time.monotonic()
                elif time.monotonic() - blocked_since > 1.0:
                    break       # the gateway stopped reading us
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
            peak = max(peak, rss_kb(pid))
        peak = max(peak, rss_kb(pid))
        sys.stderr.write("\n[non-reading client] sent %.1f MB; gateway VmRSS %d -> %d kB\n"
                         % (sent / 1e6, base, peak))
        # Stopped long before 200 MB: only the socket buffers and one held read are taken.
        self.assertLess(sent, 32 * 1024 * 1024, "the gateway kept reading a non-reading client")
        # The log queue may take up to 1 MiB (+1 MiB being written) of the refusals' lines.
        self.assertLess(peak - base, 4096 * rss_factor(pid),
                        "RSS grew from %d to %d kB" % (base, peak))
        # Over the bound for timeouts.command: closed.
        closed = self.gw.wait_for_log(event="session_close", timeout=15)
        self.assertEqual(closed["state"], "timeout")
        c.sock.setblocking(True)
        # The gateway is still healthy for everyone else.
        other = self.client(source="127.0.0.6")
        self.assertReply(other.command("NOOP"), 250)

    def test_client_that_reads_late_gets_every_reply(self):
        # More replies than the bound: the gateway pauses, then goes on as the client reads.
        self.start()
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        n = 5000       # 160 KB of commands, 165 KB of replies
        sender = threading.Thread(
            target=lambda: c.sock.sendall(b"RCPT TO:<victim@gmail.example>\r\n" * n
                                          + b"RCPT TO:<user@example.com>\r\n"))
        sender.start()
        time.sleep(1.0)         # the client reads nothing meanwhile
        codes = [c.read_reply(timeout=10).code for _ in range(n + 1)]
        sender.join(10)
        self.assertEqual(codes, [554] * n + [250])
        self.assertReply(c.command("QUIT"), 221)

    def test_many_non_reading_clients_pushing_noop_and_ehlo(self):
        self.start(env=UNQUARANTINED)
        pid = self.gw.proc.pid
        base = rss_kb(pid)
        clients = []
        for i in range(20):
            c = self.client(source="127.0.0.%d" % (10 + i))
            c.sock.setblocking(False)
            clients.append(c)
        payloads = [b"NOOP\r\n" * 10000, b"EHLO x\r\n" * 8000]
        deadline = time.monotonic() + 5
        open_clients = list(clients)
        peak = base
        while open_clients and time.monotonic() < deadline:
            for i, c in enumerate(list(open_clients)):
                try:
                    c.sock.send(payloads[i % 2])
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    open_clients.remove(c)
            peak = max(peak, rss_kb(pid))
            time.sleep(0.01)
        self.assertLess(peak - base, 8192 * rss_factor(pid),
                        "RSS grew from %d to %d kB" % (base, peak))
        # Every one of them was closed: junk limit (NOOP) or synchronisation (EHLO).
        support.wait_until(lambda: len(self.gw.find(event="session_close")) >= 20, 10,
                           message="20 sessions closed")
        rules = {d["rule"] for d in self.gw.decisions()}
        self.assertEqual(rules, {"protocol.junk", "protocol.sync"})


class JunkCommandTest(HostileClientTestCase):

    def test_more_than_100_junk_commands_get_421_and_close(self):
        self.start()
        c = self.client()          # EHLO is the first junk command
        c.send(b"NOOP\r\n" * 98 + b"RSET\r\nHELP\r\nVRFY x\r\nXYZZY\r\n")
        codes = [c.read_reply().code for _ in range(99)]
        self.assertEqual(codes, [250] * 98 + [250])
        r = c.read_reply()     # HELP: junk #101
        self.assertEqual(r.raw, b"421 4.7.0 Error: too many junk commands\r\n")
        self.assertTrue(c.is_closed())
        d = self.gw.wait_for_log(event="decision", rule="protocol.junk")
        self.assertEqual(d["reply"], "421 4.7.0 Error: too many junk commands")

    def test_a_transaction_resets_the_count(self):
        self.start()
        c = self.client()
        for round_ in range(3):
            c.send(b"NOOP\r\n" * 90)
            self.assertEqual([c.read_reply().code for _ in range(90)], [250] * 90)
            self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
            self.assertReply(c.command("RSET"), 250)
        self.assertReply(c.command("QUIT"), 221)


class SynchronisationTest(HostileClientTestCase):

    def test_talking_before_the_greeting(self):
        self.start()
        c = self.connect_while_stopped(b"EHLO early.example\r\n")
        self.assertClosedWith(c, SYNC_ERROR)
        d = self.gw.wait_for_log(event="decision", rule="protocol.sync")
        self.assertEqual(d["stage"], "connect")
        self.gw.wait_for_log(event="session_close", state="protocol_sync")
        self.assertEqual(self.backend.connections(), [])

    def test_http_request_is_closed_without_a_reply(self):
        self.start()
        c = self.connect_while_stopped(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertClosedWith(c, b"")
        # After the greeting too: a first line that is an HTTP request.
        for verb in (b"POST", b"CONNECT", b"OPTIONS"):
            c = self.client(ehlo=False)
            c.send(verb + b" / HTTP/1.1\r\n")
            self.assertClosedWith(c, b"")
        support.wait_until(lambda: len(self.gw.decisions(rule="protocol.http")) == 4, 5,
                           message="4 protocol.http decisions")
        self.assertEqual(self.backend.connections(), [])

    def test_command_pipelined_after_ehlo(self):
        self.start()
        c = self.client(ehlo=False)
        c.send(b"EHLO client.example\r\nMAIL FROM:<a@other.example>\r\n")
        self.assertClosedWith(c, SYNC_ERROR)
        self.assertFalse(self.backend.saw("MAIL"))

    def test_message_pipelined_after_data(self):
        self.start()
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
        c.send(b"DATA\r\n" + dot_stuff(message("too early")) + b".\r\n")
        self.assertClosedWith(c, SYNC_ERROR)
        self.backend.wait_for_disconnect()
        self.assertFalse(self.backend.saw("DATA"))
        self.assertEqual(self.backend.messages(), [])

    def test_data_pipelined_after_recipients_is_fine_but_not_the_body(self):
        self.start()
        c = self.client()
        c.send(b"MAIL FROM:<a@other.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
        self.assertEqual([c.read_reply().code for _ in range(3)], [250, 250, 354])
        c.send(dot_stuff(message("in step")) + b".\r\nQUIT\r\n")
        self.assertReply(c.read_reply(), 250)
        self.assertReply(c.read_reply(), 221)
        self.assertEqual(len(self.backend.wait_for_messages(1)), 1)

    def test_pipelining_in_a_helo_session(self):
        self.start()
        c = self.client(ehlo=False)
        self.assertReply(c.command("HELO client.example"), 250)
        c.send(b"MAIL FROM:<a@other.example>\r\nRCPT TO:<user@example.com>\r\n")
        self.assertClosedWith(c, SYNC_ERROR)
        self.assertFalse(self.backend.saw("MAIL"))
        # One command at a time is fine in a HELO session.
        c = self.client(ehlo=False)
        self.assertReply(c.command("HELO client.example"), 250)
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)

    def test_bdat_chunk_is_never_read_as_commands(self):
        self.start()
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
        c.send(b"BDAT 25 LAST\r\nRCPT TO:<x@gmail.example>\r\n")
        self.assertClosedWith(c, b"502 5.5.1 Error: command not implemented\r\n")
        self.backend.wait_for_disconnect()
        self.assertEqual(self.backend.verbs(), ["EHLO", "MAIL", "RCPT"])


class EnvelopeTest(HostileClientTestCase):

    def test_auth_parameter_is_removed_before_forwarding(self):
        self.start()
        c = self.client()
        self.assertReply(c.command("MAIL FROM:<bounce@ext.example> AUTH=<ceo@example.com> "
                                   "BODY=8BITMIME"), 250)
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
        self.assertReply(c.command("RSET"), 250)
        self.assertReply(c.command("MAIL FROM:<b@ext.example> auth=<> SIZE=100"), 250)
        mails = [l for l in self.backend.commands() if l.upper().startswith("MAIL")]
        self.assertEqual(mails, ["MAIL FROM:<bounce@ext.example> BODY=8BITMIME",
                                 "MAIL FROM:<b@ext.example> SIZE=100"])

    def test_auth_parameter_removed_for_a_login_too(self):
        login, password = "cms@example.com", "cms-secret"
        self.backend = self.start_backend(users={login: password})
        self.policy = support.gateway_policy(
            self.backend.address, listeners=(("sub", "submission"),), hostname=HOSTNAME,
            submission={"access": {"default": "allow"}, "require_tls": False,
                        "auth_match": "none"})
        self.gw = self.start_gateway(self.policy)
        c = self.client("sub")
        blob = base64.b64encode(("\0%s\0%s" % (login, password)).encode()).decode()
        self.assertReply(c.command("AUTH PLAIN " + blob), 235)
        self.assertReply(c.command("MAIL FROM:<cms@example.com> AUTH=<ceo@example.com>"), 250)
        mails = [l for l in self.backend.commands() if l.upper().startswith("MAIL")]
        self.assertEqual(mails, ["MAIL FROM:<cms@example.com>"])

    def test_8bit_addresses_need_smtputf8(self):
        self.start()
        c = self.client()
        r = c.command("MAIL FROM:<j\u00f6rg@other.example>")
        self.assertEqual(r.raw, b"553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n")
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        r = c.command("RCPT TO:<j\u00f6rg@example.com>")
        self.assertReply(r, 553, "5.6.7")
        self.assertReply(c.command("RSET"), 250)
        self.assertReply(c.command("MAIL FROM:<j\u00f6rg@other.example> SMTPUTF8"), 250)
        self.assertReply(c.command("RCPT TO:<j\u00f6rg@example.com>"), 250)
        mails = [l for l in self.backend.commands() if l.upper().startswith(("MAIL", "RCPT"))]
        utf8 = "j\u00f6rg".encode().decode("latin-1")     # how the backend records the bytes
        self.assertEqual(mails, ["MAIL FROM:<a@other.example>",
                                 "MAIL FROM:<%s@other.example> SMTPUTF8" % utf8,
                                 "RCPT TO:<%s@example.com>" % utf8])

    def test_received_header_lines_stay_within_998_octets(self):
        self.start(message={"received_header": True})
        c = self.client(ehlo=False)
        helo = "h" * 990
        self.assertReply(c.command("EHLO " + helo), 250)
        rcpt = "u" * 60 + "@example.com"
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % rcpt), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(message("long helo")) + b".\r\n")
        self.assertReply(c.read_reply(), 250)
        data = self.backend.wait_for_messages(1)[0]["data"]
        header = data.split(b"\r\n\r\n", 1)[0]
        self.assertTrue(header.startswith(b"Received: from hhh"))
        for line in header.split(b"\r\n"):
            self.assertLessEqual(len(line), 998, line[:80])
        self.assertIn(b"for <%s>" % rcpt.encode(), header)


class AuthTest(HostileClientTestCase):

    def test_plain_initial_response_that_is_not_base64(self):
        self.backend = self.start_backend(users={"u@example.com": "pw"})
        self.policy = support.gateway_policy(
            self.backend.address, listeners=(("sub", "submission"),), hostname=HOSTNAME,
            submission={"access": {"default": "allow"}, "require_tls": False})
        self.gw = self.start_gateway(self.policy)
        c = self.client("sub")
        self.assertEqual(c.command("AUTH PLAIN not-b64!").raw,
                         b"501 5.5.2 Cannot decode response\r\n")
        blob = base64.b64encode(b"no-nul-at-all").decode()
        self.assertEqual(c.command("AUTH PLAIN " + blob).raw,
                         b"501 5.5.4 Malformed credentials\r\n")
        self.assertFalse(self.backend.saw("AUTH"))


class ImplicitTlsRefusalTest(HostileClientTestCase):

    def test_denied_client_gets_handshake_then_554(self):
        tmp = support.make_tempdir()
        self.addCleanup(lambda: __import__("shutil").rmtree(tmp, ignore_errors=True))
        cert, key = support.make_test_cert(tmp)
        self.start(listeners=(("smtps", "submission", "implicit"),),
                   tls={"cert": cert, "key": key},
                   submission={"access": {"default": "deny"}})
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection((self.gw.host("smtps"), self.gw.port("smtps")), 10,
                                       source_address=(CLIENT, 0))
        self.addCleanup(raw.close)
        tls = ctx.wrap_socket(raw, server_hostname="localhost")   # handshake first
        self.addCleanup(tls.close)
        tls.settimeout(10)
        got = b""
        while True:
            chunk = tls.recv(4096)
            if not chunk:
                break
            got += chunk
        self.assertEqual(got, b"554 5.7.1 %s access denied\r\n" % HOSTNAME.encode())
        self.gw.wait_for_log(event="session_close", state="refused")
        self.assertEqual(self.backend.connections(), [])


if __name__ == "__main__":
    import unittest
    unittest.main()
