"""smtpgate in front of a real Postfix (private instance, SASL by Dovecot),
with backend.client_ip "xclient": AUTH replayed to Postfix and verified by
Dovecot; Postfix learns and records the real client address."""

import smtplib
import unittest

import support
from support import IntegrationTestCase, check_no_secret

HOSTNAME = "gw.example.test"
CMS = "127.0.0.10"


def find_postfix_received(msg):
    """The Received: header Postfix added (the one 'by <postfix host> (Postfix)')."""
    for value in msg["headers"].get_all("Received") or []:
        if "(Postfix)" in value:
            return value
    return None


@unittest.skipUnless(support.have_postfix(), "needs root, Postfix and Dovecot")
class PostfixBackendGatewayTest(IntegrationTestCase):

    @classmethod
    def setUpClass(cls):
        cls.pf = support.PostfixBackend().start()

    @classmethod
    def tearDownClass(cls):
        cls.pf.stop()

    def setUp(self):
        policy = support.gateway_policy(
            self.pf.address,
            listeners=[("mx", "mx"), ("submission", "submission")],
            hostname=HOSTNAME,
            local_domains=["example.com", "example.net"],
            client_ip="xclient",
            submission={"access": {"default": "deny", "allow": [CMS]},
                        "require_tls": False, "auth_match": "address"},
        )
        self.gw = self.start_gateway(policy)

    def wait_for(self, marker):
        found = support.wait_until(
            lambda: [m for m in self.pf.messages() if marker in m["data"]], 15,
            message="Postfix delivery of %r" % marker)
        return found[0]

    def test_mx_delivery_shows_real_client_ip(self):
        s = self.smtp(self.gw, "mx", source="127.0.0.33")
        body = (b"From: a@other.example\r\nTo: user@example.com\r\nSubject: xclient\r\n"
                b"Message-ID: <pf-mx-1@other.example>\r\n\r\nvia the gateway\r\n")
        self.assertEqual(s.sendmail("a@other.example", ["user@example.com"], body), {})
        s.quit()
        m = self.wait_for(b"<pf-mx-1@other.example>")
        self.assertEqual(m["mailbox"], "user@example.com")
        self.assertEqual(m["return_path"], "a@other.example")
        received = find_postfix_received(m)
        self.assertIsNotNone(received, m["data"][:800])
        self.assertIn("[127.0.0.33]", received)
        self.assertNotIn("[127.0.0.1]", received)
        self.assertTrue(m["data"].endswith(b"\nvia the gateway\n"))

    def test_auth_verified_by_dovecot(self):
        s = self.smtp(self.gw, "submission", source=CMS)
        s.login("cms@example.com", "secret")
        body = (b"From: cms@example.com\r\nTo: user@example.com\r\nSubject: auth\r\n"
                b"Message-ID: <pf-auth-1@example.com>\r\n\r\nauthenticated\r\n")
        self.assertEqual(s.sendmail("cms@example.com", ["user@example.com"], body), {})
        # relaying to a foreign domain is allowed for the authenticated CMS
        self.assertEqual(s.sendmail("cms@example.com", ["someone@gmail.example"],
                                    body.replace(b"pf-auth-1", b"pf-auth-2")), {})
        s.quit()
        m = self.wait_for(b"<pf-auth-1@example.com>")
        received = find_postfix_received(m)
        self.assertIn("Authenticated sender: cms@example.com", received)
        self.assertIn("[%s]" % CMS, received)
        support.wait_until(lambda: "sasl_username=cms@example.com" in self.pf.maillog(), 10,
                           message="Postfix logging the SASL login")
        support.wait_until(lambda: "outbound delivery disabled" in self.pf.maillog(), 10,
                           message="the relayed copy reaching the discard transport")
        self.assertEqual(self.gw.stop(), 0)   # every log line is in now
        check_no_secret(self.gw, "secret", "cms@example.com")

    def test_bad_password_refused_by_dovecot(self):
        s = self.smtp(self.gw, "submission", source=CMS)
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.login("cms@example.com", "not-the-password")
        self.assertEqual(cm.exception.smtp_code, 535)
        support.wait_until(lambda: "Password mismatch" in self.pf.dovecot_log(), 10,
                           message="Dovecot's password mismatch")
        # Postfix saw the failure from the real client address
        support.wait_until(lambda: "[%s]: SASL" % CMS in self.pf.maillog(), 10,
                           message="Postfix logging the failure with the client IP")
        self.assertEqual(self.gw.stop(), 0)   # every log line is in now
        check_no_secret(self.gw, "not-the-password", "cms@example.com")

    def test_swaks_through_gateway_to_postfix(self):
        if not support.have_swaks():
            self.skipTest("swaks not installed")
        r = support.run_swaks(self.gw.host("mx"), self.gw.port("mx"), "--pipeline",
                              "--from", "swaks@other.example", "--to", "alice@example.net",
                              "--header", "Message-ID: <pf-swaks-1@other.example>",
                              source="127.0.0.34")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        m = self.wait_for(b"<pf-swaks-1@other.example>")
        self.assertEqual(m["mailbox"], "alice@example.net")
        self.assertIn("[127.0.0.34]", find_postfix_received(m))

    def test_unknown_local_user_refused_by_postfix(self):
        s = self.smtp(self.gw, "mx", source="127.0.0.35")
        s.mail("a@other.example")
        code, text = s.rcpt("nobody@example.com")
        self.assertEqual(code, 550, text)      # Postfix's own reply, relayed


    def test_proxy_protocol_client_reaches_postfix(self):
        # A balancer (127.0.0.1) in front: the client named by its PROXY v2 header is the one
        # Postfix learns through XCLIENT and writes in its Received: header.
        import ipaddress
        import struct
        policy = support.gateway_policy(
            self.pf.address, listeners=[("mx", "mx")], hostname=HOSTNAME,
            local_domains=["example.com", "example.net"], client_ip="xclient",
            trusted_proxies=["127.0.0.1"])
        policy["listeners"][0]["proxy_protocol"] = True
        gw = self.start_gateway(policy)
        block = (ipaddress.ip_address("198.51.100.23").packed +
                 ipaddress.ip_address("127.0.0.1").packed + struct.pack("!HH", 41000, 25))
        header = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) +
                  struct.pack("!H", len(block)) + block)
        c = support.RawClient(gw.host("mx"), gw.port("mx"), "127.0.0.1")
        self.addCleanup(c.close)
        c.send(header)
        self.assertEqual(c.greeting().code, 220)
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.command("MAIL FROM:<a@other.example>").code, 250)
        self.assertEqual(c.command("RCPT TO:<user@example.com>").code, 250)
        self.assertEqual(c.command("DATA").code, 354)
        self.assertEqual(c.command(b"Message-ID: <pf-proxy-1@other.example>\r\n\r\n"
                                   b"via a balancer\r\n.").code, 250)
        c.command("QUIT")
        m = self.wait_for(b"<pf-proxy-1@other.example>")
        received = find_postfix_received(m)
        self.assertIn("[198.51.100.23]", received)
        self.assertNotIn("[127.0.0.1]", received)


if __name__ == "__main__":
    unittest.main()
