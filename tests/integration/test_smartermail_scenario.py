"""The motivating case (SPEC §1): a legacy server (here the recording backend
standing in for SmarterMail) must take bounces and inbound mail from the whole
world, but let only a CMS at one address log in and relay, as a few sender
addresses. Clients are bound to distinct 127.0.0.x addresses:

  127.0.0.20  "the world": delivers bounces, tries to relay, tries to log in
  127.0.0.10  the CMS: logs in as cms@example.com and sends for noreply@…
"""

import base64
import smtplib
import unittest

import support
from support import IntegrationTestCase, check_no_secret

HOSTNAME = "mail.example.com"
WORLD = "127.0.0.20"
CMS = "127.0.0.10"
CMS_LOGIN = "cms@example.com"
CMS_PASSWORD = "secret"


def msg(subject, sender="noreply@example.com", to="someone@gmail.example"):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.com>\r\n\r\n"
            "Body of %s.\r\n" % (sender, to, subject, subject.replace(" ", "-"), subject)
            ).encode()


class SmarterMailScenarioTest(IntegrationTestCase):

    def setUp(self):
        self.backend = self.start_backend(users={CMS_LOGIN: CMS_PASSWORD})
        self.policy = support.gateway_policy(
            self.backend.address,
            listeners=[("mx", "mx"), ("submission", "submission")],
            hostname=HOSTNAME,
            local_domains=["example.com"],
            submission={
                "access": {"default": "deny", "allow": [CMS]},
                "require_tls": False,            # TLS is not built yet
                "auth_match": "address",
                "senders": {CMS_LOGIN: ["noreply@example.com", "@customers.example.org"]},
            },
        )
        self.gw = self.start_gateway(self.policy)

    def cms(self, login=True, password=CMS_PASSWORD):
        s = self.smtp(self.gw, "submission", source=CMS)
        if login:
            s.login(CMS_LOGIN, password)
        return s

    # ------------------------------------------------------------ the world
    def test_bounce_from_the_world_is_delivered(self):
        s = self.smtp(self.gw, "mx", source=WORLD)
        bounce = msg("Delivery Status Notification", sender="MAILER-DAEMON@other.example",
                     to="user@example.com")
        self.assertEqual(s.sendmail("", ["user@example.com"], bounce), {})
        s.quit()
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["mail_from"], "")
        self.assertEqual(m["rcpt_tos"], ["user@example.com"])
        self.assertTrue(m["data"].endswith(bounce))
        self.assertFalse(m["authenticated"])
        # SmarterMail cannot learn the client IP by XCLIENT/PROXY: the
        # gateway's Received: header carries it.
        self.assertIn(WORLD.encode(), m["data"][:len(m["data"]) - len(bounce)])

    def test_relay_from_the_world_refused(self):
        c = self.raw_client(self.gw, "mx", source=WORLD)
        self.assertEqual(c.greeting().code, 220)
        self.assertEqual(c.ehlo().code, 250)
        self.assertReply(c.command("MAIL FROM:<spam@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<someone@gmail.example>"), 554, "5.7.1")
        r = c.command("DATA")
        self.assertIn(r.code, (503, 554), r)
        self.assertReply(c.command("QUIT"), 221)
        c.close()
        if self.backend.connections():
            self.backend.wait_for_disconnect()
        self.assertFalse(self.backend.saw("RCPT"), self.backend.commands())
        self.assertFalse(self.backend.saw("DATA"))
        self.assertEqual(self.backend.messages(), [])

    def test_world_cannot_even_connect_to_submission(self):
        c = self.raw_client(self.gw, "submission", source=WORLD)
        r = c.greeting()
        self.assertReply(r, 554, "5.7.1", "access denied")
        self.assertIn(HOSTNAME, r.text)
        self.assertTrue(c.is_closed(), "connection stays open after 554 at connect")
        # a host that may not submit never gets to guess a password ...
        self.assertEqual(self.backend.connections(), [])
        self.assertFalse(self.backend.saw("AUTH"))
        d = self.gw.wait_for_log(event="decision", rule="submission.access")
        self.assertEqual(d.get("verdict"), "reject", d)
        self.assertEqual(d.get("stage"), "connect", d)

    def test_world_auth_on_mx_refused(self):
        c = self.raw_client(self.gw, "mx", source=WORLD)
        c.greeting()
        ehlo = c.ehlo()
        self.assertFalse(any(l.upper().startswith("AUTH") for l in ehlo.lines), ehlo)
        blob = base64.b64encode(b"\0%s\0%s" % (CMS_LOGIN.encode(), CMS_PASSWORD.encode()))
        self.assertReply(c.command(b"AUTH PLAIN " + blob), 502, "5.5.1")
        self.assertFalse(self.backend.saw("AUTH"))
        self.assertEqual(self.gw.stop(), 0)   # every log line is in now
        check_no_secret(self.gw, CMS_PASSWORD, CMS_LOGIN)

    # ------------------------------------------------------------ the CMS
    def test_cms_ehlo_offers_auth(self):
        s = self.cms(login=False)
        mechs = s.esmtp_features.get("auth", "").upper().split()
        self.assertIn("PLAIN", mechs)
        self.assertIn("LOGIN", mechs)

    def test_cms_sends_as_noreply(self):
        s = self.cms()
        body = msg("newsletter")
        self.assertEqual(s.sendmail("noreply@example.com", ["someone@gmail.example"], body), {})
        s.quit()
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["mail_from"], "noreply@example.com")
        self.assertEqual(m["rcpt_tos"], ["someone@gmail.example"])
        self.assertTrue(m["data"].endswith(body))
        # AUTH was verified by (replayed to) the backend on the same session
        self.assertTrue(m["authenticated"])
        self.assertEqual(m["login"], CMS_LOGIN)
        self.assertEqual(self.gw.stop(), 0)   # every log line is in now
        check_no_secret(self.gw, CMS_PASSWORD, CMS_LOGIN)

    def test_cms_sends_as_itself_and_listed_domain(self):
        s = self.cms()
        s.sendmail(CMS_LOGIN, ["a@gmail.example"], msg("as itself", sender=CMS_LOGIN))
        s.sendmail("shop@customers.example.org", ["b@gmail.example"],
                   msg("as customer", sender="shop@customers.example.org"))
        s.sendmail("NoReply@Example.COM", ["c@gmail.example"], msg("case"))
        s.quit()
        msgs = self.backend.wait_for_messages(3)
        self.assertEqual([m["mail_from"] for m in msgs],
                         [CMS_LOGIN, "shop@customers.example.org", "NoReply@Example.COM"])

    def test_cms_cannot_send_as_someone_else(self):
        s = self.cms()
        code, text = s.mail("other@example.com")
        self.assertEqual(code, 553, text)
        self.assertTrue(text.startswith(b"5.7.1"), text)
        self.assertIn(CMS_LOGIN.encode(), text)
        code, text = s.mail("x@notcustomers.example.org")
        self.assertEqual(code, 553, text)
        self.assertFalse(any("other@example.com" in l for l in self.backend.commands()))
        d = self.gw.wait_for_log(event="decision", rule="submission.auth_match")
        self.assertEqual(d.get("verdict"), "reject", d)
        s.rset()
        self.assertEqual(s.sendmail("noreply@example.com", ["x@gmail.example"], msg("ok")), {})
        self.assertEqual(len(self.backend.wait_for_messages(1)), 1)

    def test_cms_wrong_password(self):
        s = self.cms(login=False)
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.login(CMS_LOGIN, "wrong-password-123")
        self.assertEqual(cm.exception.smtp_code, 535)
        # the backend, not the gateway, judged the password
        self.assertTrue(self.backend.saw("AUTH"))
        self.assertIn(False, [e["success"] for e in self.backend.events("auth_result")])
        self.assertEqual(self.gw.stop(), 0)   # every log line is in now
        check_no_secret(self.gw, "wrong-password-123", CMS_LOGIN)

    def test_submission_requires_auth(self):
        s = self.cms(login=False)
        code, text = s.mail("noreply@example.com")
        self.assertEqual(code, 530, text)
        self.assertTrue(text.startswith(b"5.7.0"), text)
        self.assertFalse(self.backend.saw("MAIL"))

    def test_cms_auth_login_with_swaks(self):
        if not support.have_swaks():
            self.skipTest("swaks not installed")
        r = support.run_swaks(self.gw.host("submission"), self.gw.port("submission"),
                              "--pipeline", "--auth", "LOGIN", "--auth-user", CMS_LOGIN,
                              "--auth-password", CMS_PASSWORD, "--from", "noreply@example.com",
                              "--to", "someone@gmail.example", "--header", "Subject: swaks",
                              source=CMS)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual((m["login"], m["mail_from"]), (CMS_LOGIN, "noreply@example.com"))
        self.assertEqual(self.gw.stop(), 0)   # every log line is in now
        check_no_secret(self.gw, CMS_PASSWORD, CMS_LOGIN)

    def test_password_never_logged(self):
        s = self.cms()
        s.sendmail("noreply@example.com", ["someone@gmail.example"], msg("log check"))
        s.quit()
        s = self.cms(login=False)
        s.user, s.password = CMS_LOGIN, CMS_PASSWORD
        self.assertEqual(s.auth("LOGIN", s.auth_login, initial_response_ok=False)[0], 235)
        s.quit()
        self.backend.wait_for_messages(1)
        self.gw.wait_for_log(event="session_close")
        self.assertTrue(self.gw.find(event="auth"), "no auth event logged")
        self.assertEqual(self.gw.stop(), 0)   # every log line is in now
        check_no_secret(self.gw, CMS_PASSWORD, CMS_LOGIN)


if __name__ == "__main__":
    unittest.main()
