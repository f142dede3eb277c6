"""Tests of the integration fixtures themselves (no gateway needed)."""

import base64
import smtplib
import socket
import struct
import unittest

import support
from support import IntegrationTestCase, RawClient, check_no_secret


def sample_message(subject="fixture test", body_lines=20):
    lines = [b"From: sender@other.example", b"To: user@example.com",
             b"Subject: " + subject.encode(), b"MIME-Version: 1.0",
             b"Content-Type: text/plain; charset=utf-8",
             b"Content-Transfer-Encoding: 8bit", b""]
    for i in range(body_lines):
        lines.append(b"line %d \xc3\xa9\xe2\x82\xac" % i)
    lines += [b".leading dot", b"..two dots", b".", b"x" * 4000, b"", b"end"]
    return b"\r\n".join(lines) + b"\r\n"


class RecordingBackendTest(IntegrationTestCase):

    def setUp(self):
        self.backend = self.start_backend(users={"cms@example.com": "secret"})

    def client(self, source="127.0.0.5"):
        s = support.smtp_client("127.0.0.1", self.backend.port, source)
        self.addCleanup(support._close_smtp, s)
        return s

    def test_records_message_byte_exact(self):
        msg = sample_message()
        s = self.client()
        refused = s.sendmail("sender@other.example", ["user@example.com", "b@example.net"], msg)
        self.assertEqual(refused, {})
        s.quit()
        msgs = self.backend.wait_for_messages(1)
        self.assertEqual(len(msgs), 1)
        m = msgs[0]
        self.assertEqual(m["data"], msg)
        self.assertEqual(base64.b64decode(m["data_b64"]), msg)
        self.assertEqual(m["mail_from"], "sender@other.example")
        self.assertEqual(m["rcpt_tos"], ["user@example.com", "b@example.net"])
        self.assertEqual(m["peer"][0], "127.0.0.5")
        self.assertEqual(m["helo"], "client.example.org")
        self.assertFalse(m["authenticated"])
        self.assertIsNone(m["login"])
        # the command log has the envelope, the raw log the dot-stuffed stream
        self.assertIn("MAIL", self.backend.verbs())
        self.assertEqual(self.backend.verbs().count("RCPT"), 2)
        self.assertFalse(self.backend.saw("AUTH"))
        raw = self.backend.raw(1)
        self.assertEqual(raw.count(b"\r\n.\r\n"), 1)
        self.assertIn(b"\r\n..leading dot\r\n", raw)
        self.assertIn(b"\r\n...two dots\r\n", raw)

    def test_null_sender_recorded_as_empty(self):
        s = self.client()
        s.sendmail("", ["user@example.com"], b"Subject: bounce\r\n\r\nx\r\n")
        s.quit()
        self.assertEqual(self.backend.wait_for_messages(1)[0]["mail_from"], "")

    def test_auth_plain_and_login(self):
        s = self.client()
        self.assertIn("PLAIN", s.esmtp_features.get("auth", ""))
        s.login("cms@example.com", "secret")          # smtplib prefers PLAIN here
        s.sendmail("noreply@example.com", ["x@gmail.example"], b"Subject: a\r\n\r\nb\r\n")
        s.quit()
        m = self.backend.wait_for_messages(1)[0]
        self.assertTrue(m["authenticated"])
        self.assertEqual(m["login"], "cms@example.com")

        s = self.client()
        s.user, s.password = "cms@example.com", "secret"
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        self.assertEqual(code, 235)
        s.quit()

        s = self.client()
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.login("cms@example.com", "wrong")
        self.assertEqual(cm.exception.smtp_code, 535)
        s.quit()
        results = [(e["mechanism"], e["success"]) for e in self.backend.events("auth_result")]
        # smtplib.login() tries every mechanism before giving up
        self.assertEqual(results, [("PLAIN", True), ("LOGIN", True),
                                   ("PLAIN", False), ("LOGIN", False)])
        self.assertTrue(self.backend.saw("AUTH"))

    def test_raw_stream_keeps_exact_bytes(self):
        c = RawClient("127.0.0.1", self.backend.port, "127.0.0.7")
        self.addCleanup(c.close)
        self.assertEqual(c.greeting().code, 220)
        self.assertEqual(c.command("EHLO raw.example").code, 250)
        sent = (b"MAIL FROM:<a@other.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
        c.send(sent)
        self.assertEqual([c.read_reply().code for _ in range(3)], [250, 250, 354])
        body = (b"Subject: smuggle\r\n\r\nhello\n.\r\nMAIL FROM:<evil@x>\r\n"
                b"bare\rcr\r\n.\r\n")
        c.send(body)
        self.assertEqual(c.read_reply().code, 250)
        self.assertEqual(c.command("QUIT").code, 221)
        self.assertTrue(c.is_closed())
        self.backend.wait_for_disconnect()
        raw = self.backend.raw(1)
        self.assertEqual(raw, b"EHLO raw.example\r\n" + sent + body + b"QUIT\r\n")
        # aiosmtpd (Debian's patched 1.4.3) ends DATA only at CRLF.CRLF:
        m = self.backend.wait_for_messages(1)
        self.assertEqual(len(m), 1)
        self.assertEqual(m[0]["data"], b"Subject: smuggle\r\n\r\nhello\n.\r\nMAIL FROM:<evil@x>\r\n"
                                       b"bare\rcr\r\n")
        self.assertEqual(self.backend.commands()[-1], "QUIT")
        self.assertNotIn("MAIL FROM:<evil@x>", self.backend.commands())

    def test_long_lines_accepted(self):
        c = RawClient("127.0.0.1", self.backend.port)
        self.addCleanup(c.close)
        c.greeting()
        c.ehlo()
        self.assertEqual(c.command("MAIL FROM:<a@other.example>").code, 250)
        self.assertEqual(c.command("RCPT TO:<user@example.com>").code, 250)
        self.assertEqual(c.command("DATA").code, 354)
        body = b"Subject: long\r\n\r\n" + b"y" * 200000 + b"\r\n"
        c.send(body + b".\r\n")
        self.assertEqual(c.read_reply().code, 250)
        self.assertEqual(self.backend.wait_for_messages(1)[0]["data"], body)

    def test_event_log_and_connection_count(self):
        self.assertEqual(self.backend.connections(), [])
        c = RawClient("127.0.0.1", self.backend.port, "127.0.0.9")
        c.greeting()
        self.assertEqual(c.command("NOOP").code, 250)
        self.assertEqual(c.command("QUIT").code, 221)
        c.close()
        self.backend.wait_for_disconnect()
        self.assertEqual(self.backend.connections(), [1])
        self.assertEqual(self.backend.commands(), ["NOOP", "QUIT"])
        connect = self.backend.events("connect")[0]
        self.assertEqual(connect["peer"][0], "127.0.0.9")
        replies = [e["line"] for e in self.backend.events("reply")]
        self.assertTrue(replies[0].startswith("220 "))


class RecordingBackendOptionsTest(IntegrationTestCase):

    def test_data_reply(self):
        b = self.start_backend(data_reply="554 5.7.1 rejected by content filter")
        s = support.smtp_client("127.0.0.1", b.port)
        self.addCleanup(support._close_smtp, s)
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            s.sendmail("a@other.example", ["user@example.com"], b"Subject: x\r\n\r\ny\r\n")
        self.assertEqual(cm.exception.smtp_code, 554)
        self.assertIn(b"content filter", cm.exception.smtp_error)
        self.assertEqual(b.messages(), [])

    def test_reject_rcpt(self):
        b = self.start_backend(reject_rcpt=["nobody@example.com"])
        s = support.smtp_client("127.0.0.1", b.port)
        self.addCleanup(support._close_smtp, s)
        refused = s.sendmail("a@other.example", ["nobody@example.com", "user@example.com"],
                             b"Subject: x\r\n\r\ny\r\n")
        self.assertEqual(refused["nobody@example.com"][0], 550)
        self.assertEqual(b.wait_for_messages(1)[0]["rcpt_tos"], ["user@example.com"])

    def test_xclient(self):
        b = self.start_backend(xclient=True)
        s = support.smtp_client("127.0.0.1", b.port)
        self.addCleanup(support._close_smtp, s)
        self.assertTrue(s.has_extn("xclient"))
        code, text = s.docmd("XCLIENT ADDR=203.0.113.9 NAME=[UNAVAILABLE] PORT=4242")
        self.assertEqual(code, 220)
        s.ehlo("client.after.xclient")
        s.sendmail("a@other.example", ["user@example.com"], b"Subject: x\r\n\r\ny\r\n")
        m = b.wait_for_messages(1)[0]
        self.assertEqual(m["xclient"], {"ADDR": "203.0.113.9", "NAME": "[UNAVAILABLE]",
                                        "PORT": "4242"})
        self.assertEqual(m["helo"], "client.after.xclient")
        # without --xclient it is neither advertised nor accepted
        b2 = self.start_backend()
        s2 = support.smtp_client("127.0.0.1", b2.port)
        self.addCleanup(support._close_smtp, s2)
        self.assertFalse(s2.has_extn("xclient"))
        self.assertEqual(s2.docmd("XCLIENT ADDR=203.0.113.9")[0], 500)

    def _proxy_session(self, backend, header):
        c = RawClient("127.0.0.1", backend.port)
        self.addCleanup(c.close)
        c.send(header)
        self.assertEqual(c.greeting().code, 220)
        c.ehlo()
        c.send(b"MAIL FROM:<a@other.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
        self.assertEqual([c.read_reply().code for _ in range(3)], [250, 250, 354])
        c.send(b"Subject: p\r\n\r\nproxied\r\n.\r\n")
        self.assertEqual(c.read_reply().code, 250)
        c.command("QUIT")

    def test_proxy_protocol_v1_and_v2(self):
        b = self.start_backend(proxy_protocol=True)
        self._proxy_session(b, b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 25\r\n")
        v2 = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", 12)
              + socket.inet_aton("198.51.100.8") + socket.inet_aton("127.0.0.1")
              + struct.pack("!HH", 40001, 25))
        self._proxy_session(b, v2)
        msgs = b.wait_for_messages(2)
        self.assertEqual([(m["proxy"]["version"], m["proxy"]["src_addr"], m["proxy"]["src_port"])
                          for m in msgs],
                         [(1, "198.51.100.7", 40000), (2, "198.51.100.8", 40001)])
        self.assertTrue(b.raw(1).startswith(b"PROXY TCP4 198.51.100.7"))
        # A connection without the header is dropped before the greeting.
        c = RawClient("127.0.0.1", b.port)
        self.addCleanup(c.close)
        c.send(b"EHLO x\r\n")
        self.assertTrue(c.is_closed(timeout=10))
        self.assertFalse(c.buf.startswith(b"220"))


class HelpersTest(unittest.TestCase):

    def test_free_port_is_bindable(self):
        p = support.free_port()
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))

    def test_check_no_secret(self):
        check_no_secret(['{"event":"auth","user":"cms@example.com"}'], "secret",
                        "cms@example.com")
        plain = base64.b64encode(b"\0cms@example.com\0secret").decode()
        for leak in ("password=secret", base64.b64encode(b"secret").decode(),
                     "AUTH PLAIN " + plain):
            with self.assertRaises(AssertionError):
                check_no_secret([leak], "secret", "cms@example.com")

    def test_policy_shape(self):
        p = support.gateway_policy("127.0.0.1:1", listeners=[("mx", "mx"),
                                                              ("submission", "submission")],
                                   message={"received_header": False})
        self.assertEqual(set(p), {"version", "hostname", "local_domains", "listeners",
                                  "backend", "log", "message"})
        self.assertEqual(p["log"], {"format": "json", "path": "-"})
        self.assertEqual([l["class"] for l in p["listeners"]], ["mx", "submission"])


@unittest.skipUnless(support.have_postfix(), "needs root, Postfix and Dovecot")
class PostfixBackendTest(unittest.TestCase):
    """The private Postfix + Dovecot: SASL, relay control, delivery, XCLIENT."""

    @classmethod
    def setUpClass(cls):
        cls.pf = support.PostfixBackend().start()

    @classmethod
    def tearDownClass(cls):
        cls.pf.stop()

    def client(self, source="127.0.0.1"):
        s = support.smtp_client(self.pf.host, self.pf.port, source)
        self.addCleanup(support._close_smtp, s)
        return s

    def test_auth_good_and_bad_password(self):
        s = self.client()
        self.assertIn("PLAIN", s.esmtp_features.get("auth", ""))
        s.user, s.password = "cms@example.com", "secret"
        self.assertEqual(s.auth("PLAIN", s.auth_plain)[0], 235)
        s.quit()
        s = self.client()
        s.user, s.password = "alice@example.net", "alicepass"
        self.assertEqual(s.auth("LOGIN", s.auth_login, initial_response_ok=False)[0], 235)
        s.quit()
        s = self.client()
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.login("cms@example.com", "wrong")
        self.assertEqual(cm.exception.smtp_code, 535)
        self.assertIn("Password mismatch", self.pf.dovecot_log())

    def test_relay_refused_without_auth_allowed_with_auth(self):
        s = self.client()
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
            s.sendmail("a@other.example", ["someone@gmail.example"], b"Subject: r\r\n\r\nx\r\n")
        code, text = cm.exception.recipients["someone@gmail.example"]
        self.assertEqual(code, 554)
        self.assertIn(b"Relay access denied", text)
        s = self.client()
        s.login("cms@example.com", "secret")
        self.assertEqual(s.sendmail("cms@example.com", ["someone@gmail.example"],
                                    b"Subject: r\r\n\r\nx\r\n"), {})
        support.wait_until(lambda: "outbound delivery disabled" in self.pf.maillog(), 10,
                           message="the discard transport")

    def test_local_delivery_lands_in_maildir(self):
        before = len(self.pf.messages())
        body = b"Subject: local\r\nMessage-ID: <local-1@test>\r\n\r\nhello postfix\r\n"
        s = self.client("127.0.0.44")
        s.sendmail("a@other.example", ["user@example.com"], body)
        s.quit()
        msgs = support.wait_until(
            lambda: [m for m in self.pf.messages() if b"<local-1@test>" in m["data"]], 15,
            message="delivery")
        self.assertEqual(len(self.pf.messages()), before + 1)
        m = msgs[0]
        self.assertEqual(m["mailbox"], "user@example.com")
        self.assertEqual(m["return_path"], "a@other.example")
        self.assertEqual(m["delivered_to"], "user@example.com")
        self.assertEqual(m["original_to"], "user@example.com")
        self.assertTrue(m["data"].endswith(b"\nhello postfix\n"))
        self.assertIn("127.0.0.44", m["headers"]["Received"])
        # unknown users of local domains are refused
        s = self.client()
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as cm:
            s.sendmail("a@other.example", ["nobody@example.com"], b"Subject: u\r\n\r\nx\r\n")
        self.assertEqual(cm.exception.recipients["nobody@example.com"][0], 550)

    def test_xclient_from_loopback(self):
        s = self.client("127.0.0.1")
        self.assertTrue(s.has_extn("xclient"))
        code, _ = s.docmd("XCLIENT ADDR=127.0.0.66 NAME=[UNAVAILABLE]")
        self.assertEqual(code, 220)
        s.ehlo("real-client.example")
        s.sendmail("a@other.example", ["alice@example.net"],
                   b"Subject: x\r\nMessage-ID: <xclient-1@test>\r\n\r\nvia xclient\r\n")
        s.quit()
        msgs = support.wait_until(
            lambda: [m for m in self.pf.messages() if b"<xclient-1@test>" in m["data"]], 15,
            message="delivery")
        received = msgs[0]["headers"]["Received"]
        self.assertIn("[127.0.0.66]", received)
        self.assertNotIn("[127.0.0.1]", received)

    @unittest.skipUnless(support.have_swaks(), "swaks not installed")
    def test_swaks_auth_and_pipelining(self):
        r = support.run_swaks(self.pf.host, self.pf.port, "--pipeline",
                              "--auth", "LOGIN", "--auth-user", "user@example.com",
                              "--auth-password", "userpass", "--from", "user@example.com",
                              "--to", "bob@example.net", "--header", "Subject: swaks")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("235 2.7.0 Authentication successful", r.stdout)
        r = support.run_swaks(self.pf.host, self.pf.port, "--auth", "PLAIN",
                              "--auth-user", "user@example.com", "--auth-password", "nope",
                              "--quit-after", "AUTH")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("535", r.stdout + r.stderr)


@unittest.skipUnless(support.have_postfix(), "needs root, Postfix and Dovecot")
class PostfixProxyProtocolTest(unittest.TestCase):

    def test_proxy_v1_header_sets_client_address(self):
        pf = support.PostfixBackend(proxy_protocol=True)
        self.addCleanup(pf.stop)
        pf.start()
        c = RawClient(pf.host, pf.port)
        self.addCleanup(c.close)
        c.send(b"PROXY TCP4 198.51.100.77 127.0.0.1 40000 25\r\n")
        self.assertEqual(c.greeting().code, 220)
        c.ehlo()
        c.send(b"MAIL FROM:<a@other.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
        self.assertEqual([c.read_reply().code for _ in range(3)], [250, 250, 354])
        c.send(b"Subject: proxy\r\n\r\nx\r\n.\r\n")
        self.assertEqual(c.read_reply().code, 250)
        c.command("QUIT")
        m = support.wait_until(pf.messages, 15, message="delivery")[0]
        self.assertIn("[198.51.100.77]", m["headers"]["Received"])


if __name__ == "__main__":
    unittest.main()
