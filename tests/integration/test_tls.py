"""TLS (SPEC §2 and §4: "tls", listeners[].tls, submission.require_tls,
backend.tls): STARTTLS and implicit TLS towards clients, TLS towards the
backend, and the attacks and failures around them.

Certificates are made at test time (self-signed P-256, CN=localhost with SANs
DNS:localhost and IP:127.0.0.1) in a temp dir removed at the end. Every client
is on loopback; the gateway listens on 127.0.0.1:

  mx           class mx, STARTTLS (the default once a "tls" section exists)
  submission   class submission, STARTTLS, require_tls true (AUTH after TLS only)
  submissions  class submission, implicit TLS (port-465 style)
"""

import base64
import json
import re
import shutil
import smtplib
import ssl
import subprocess
import time
import unittest
import warnings

import support
from support import IntegrationTestCase, check_no_secret

HOSTNAME = "mail.example.com"
LOGIN = "cms@example.com"
PASSWORD = "Tls-Pa55word-7f3e"         # distinctive, for check_no_secret
SENDER = "noreply@example.com"
CLIENT = "127.0.0.10"
WORLD = "127.0.0.20"

DEFAULT_LISTENERS = (("mx", "mx"), ("submission", "submission"),
                     ("submissions", "submission", "implicit"))

CERTS = {}          # filled by setUpModule: gateway and backend certificates
_CERT_DIR = None


def setUpModule():
    global _CERT_DIR
    _CERT_DIR = support.make_tempdir("smtpgate-tls-certs-")
    try:
        CERTS["cert"], CERTS["key"] = support.make_test_cert(_CERT_DIR)
        CERTS["backend_cert"], CERTS["backend_key"] = support.make_test_cert(
            _CERT_DIR, prefix="backend-")
    except BaseException:
        shutil.rmtree(_CERT_DIR, ignore_errors=True)
        raise


def tearDownModule():
    if _CERT_DIR:
        shutil.rmtree(_CERT_DIR, ignore_errors=True)


def client_context(cafile=None, minimum=None, maximum=None, verify=True):
    """A client SSLContext trusting the gateway's test certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile or CERTS["cert"])
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
        if maximum is not None and maximum < ssl.TLSVersion.TLSv1_2:
            # Let OpenSSL 3 actually offer TLS 1.0/1.1 so the *server* refuses it.
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def message(subject, sender=SENDER, to="someone@gmail.example"):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.com>\r\n\r\n"
            "Body of %s.\r\n" % (sender, to, subject, subject.replace(" ", "-"), subject)
            ).encode()


def received_header(data):
    """The first header field of data (the gateway's Received:), unfolded
    lines kept (bytes, CRLF-terminated)."""
    m = re.match(rb"^Received:.*?\r\n(?![ \t])", data, re.S)
    if not m:
        raise AssertionError("message does not start with a Received: header: %r"
                             % data[:300])
    return m.group(0)


def pem_blocks(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)


class TlsTestCase(IntegrationTestCase):
    """One recording backend and one gateway per test."""

    def start(self, listeners=DEFAULT_LISTENERS, tls="default", backend_tls=None,
              backend_kw=None, require_tls=True, **sections):
        """backend_tls: extra keys for the policy's backend section (tls, ca,
        verify, server_name); backend_kw: RecordingBackend options."""
        kw = {"users": {LOGIN: PASSWORD}}
        kw.update(backend_kw or {})
        self.backend = self.start_backend(**kw)
        if tls == "default":
            tls = {"cert": CERTS["cert"], "key": CERTS["key"], "min_version": "TLSv1.2"}
        if tls is not None:
            sections["tls"] = tls
        sections.setdefault("submission", {
            "access": {"default": "deny", "allow": ["127.0.0.0/8"]},
            "require_tls": require_tls,
            "auth_match": "address",
            "senders": {LOGIN: [SENDER]},
        })
        self.policy = support.gateway_policy(self.backend.address, listeners=listeners,
                                             hostname=HOSTNAME, local_domains=["example.com"],
                                             **sections)
        self.policy["backend"].update(backend_tls or {})
        self.gw = self.start_gateway(self.policy)
        self.addCleanup(self.assert_no_password_logged)
        return self.gw

    def assert_no_password_logged(self):
        # A cleanup, after the clients' own: once the gateway has stopped, every line it
        # logged is in (they are written by a thread, maybe after the reply they describe).
        self.assertEqual(self.gw.stop(), 0, "\n".join(self.gw.lines[-20:]))
        check_no_secret(self.gw, PASSWORD, LOGIN)

    # -- clients ---------------------------------------------------------------
    def raw(self, listener="submission", source=CLIENT, greet=True, ehlo=True, context=None):
        """A RawClient; on an implicit-TLS listener the handshake comes first."""
        c = self.raw_client(self.gw, listener, source)
        if self.listener_tls(listener) == "implicit":
            c.start_tls(context or client_context())
        if greet:
            self.assertReply(c.greeting(), 220)
        if ehlo:
            self.assertReply(c.ehlo(), 250)
        return c

    def listener_tls(self, name):
        for l in self.policy["listeners"]:
            if l["name"] == name:
                return l.get("tls", "starttls" if "tls" in self.policy else "none")
        raise KeyError(name)

    def starttls(self, c, context=None, ehlo=True):
        self.assertReply(c.command("STARTTLS"), 220, "2.0.0")
        c.start_tls(context or client_context())
        if ehlo:
            r = c.ehlo()
            self.assertReply(r, 250)
            return r
        return None

    def smtp_tls(self, listener="submission", source=CLIENT, login=True):
        """smtplib over STARTTLS (verifying the certificate), logged in."""
        s = self.smtp(self.gw, listener, source)
        s.starttls(context=client_context())
        s.ehlo()
        if login:
            s.login(LOGIN, PASSWORD)
        return s

    def smtp_ssl(self, listener="submissions", source=CLIENT):
        s = smtplib.SMTP_SSL(self.gw.host(listener), self.gw.port(listener),
                             local_hostname="client.example.org", timeout=10,
                             source_address=(source, 0), context=client_context())
        self.addCleanup(support._close_smtp, s)
        s.ehlo()
        return s

    @staticmethod
    def backend_policy(mode="starttls", **extra):
        """backend.tls settings: verified against the backend's test certificate."""
        d = {"tls": mode, "ca": CERTS["backend_cert"], "verify": True}
        d.update(extra)
        return {k: v for k, v in d.items() if v is not None}

    @staticmethod
    def tls_backend(implicit=False):
        """RecordingBackend options: STARTTLS (or implicit TLS) with its certificate."""
        return {"tls_cert": CERTS["backend_cert"], "tls_key": CERTS["backend_key"],
                "implicit_tls": implicit}

    @staticmethod
    def ehlo_keywords(reply):
        return [l.split(" ", 1)[0].upper() for l in reply.lines[1:]]

    def assert_tls_logged(self, version=None):
        log = self.gw.wait_for_log(event="tls")
        self.assertTrue(log.get("tls_version"), log)
        self.assertTrue(log.get("tls_cipher"), log)
        if version:
            self.assertEqual(log["tls_version"], version, log)
        return log

    def tls_errors(self):
        return [o for o in self.gw.snapshot()
                if o.get("event") == "error" and o.get("component") == "tls"]

    def wait_tls_error(self):
        log = self.gw.wait_for_log(event="error", component="tls")
        reason = log.get("reason", "")
        # the OpenSSL reason follows the prefix, e.g. "... failed: wrong version number"
        m = re.match(r"^TLS handshake failed: (.+)$", reason)
        self.assertTrue(m, log)
        self.assertNotRegex(m.group(1), r"^TLS failure \(SSL_get_error",
                            "no OpenSSL reason in %r" % log)
        return log

    def assert_normal_session_works(self, subject="after the failures"):
        s = self.smtp_tls()
        self.assertEqual(s.sendmail(SENDER, ["someone@gmail.example"], message(subject)), {})
        s.quit()
        msgs = self.backend.wait_for_messages(1)
        self.assertEqual(len(msgs), 1)
        self.assertIn(subject.encode(), msgs[0]["data"])


# ------------------------------------------------------------------------------
# Clients speaking TLS to the gateway
# ------------------------------------------------------------------------------

class ClientTlsTest(TlsTestCase):

    def setUp(self):
        self.start()

    def test_starttls_login_and_send(self):
        s = self.smtp(self.gw, "submission", CLIENT)
        self.assertTrue(s.has_extn("starttls"), s.esmtp_features)
        self.assertFalse(s.has_extn("auth"), s.esmtp_features)
        s.starttls(context=client_context())
        s.ehlo()
        self.assertTrue(s.has_extn("auth"), s.esmtp_features)
        self.assertFalse(s.has_extn("starttls"), s.esmtp_features)
        s.login(LOGIN, PASSWORD)
        body = message("over starttls")
        self.assertEqual(s.sendmail(SENDER, ["someone@gmail.example"], body), {})
        s.quit()
        m = self.backend.wait_for_messages(1)[0]
        self.assertTrue(m["authenticated"])
        self.assertEqual(m["login"], LOGIN)
        self.assertTrue(m["data"].endswith(body))
        h = received_header(m["data"]).decode()
        self.assertRegex(h, r"\bwith ESMTPSA\b")
        self.assertRegex(h, r"\(using TLSv1\.3 with cipher [A-Z0-9_-]+\)")
        self.assertIn(CLIENT, h)
        log = self.assert_tls_logged("TLSv1.3")
        self.assertIn(log["tls_cipher"], h)
        close = self.gw.wait_for_log(event="session_close", login=LOGIN)
        self.assertEqual(close.get("tls_version"), "TLSv1.3", close)

    def test_mx_offers_starttls_and_received_says_esmtps(self):
        s = self.smtp(self.gw, "mx", WORLD)
        self.assertTrue(s.has_extn("starttls"))
        self.assertFalse(s.has_extn("auth"))
        s.starttls(context=client_context())
        s.ehlo()
        self.assertFalse(s.has_extn("auth"))        # never AUTH on mx, TLS or not
        self.assertFalse(s.has_extn("starttls"))
        body = message("inbound over tls", sender="a@other.example", to="user@example.com")
        self.assertEqual(s.sendmail("a@other.example", ["user@example.com"], body), {})
        s.quit()
        m = self.backend.wait_for_messages(1)[0]
        self.assertFalse(m["authenticated"])
        h = received_header(m["data"]).decode()
        self.assertRegex(h, r"\bwith ESMTPS\b")
        self.assertNotRegex(h, r"\bESMTPSA\b")
        self.assertRegex(h, r"\(using TLSv1\.3 with cipher [A-Z0-9_-]+\)")

    def test_implicit_tls_greeting_only_after_handshake(self):
        c = self.raw_client(self.gw, "submissions", CLIENT)
        # Nothing is said in the clear: the 220 waits for the handshake.
        self.assertEqual(c.pending(1.0), b"", "implicit-TLS port spoke before the handshake")
        c.start_tls(client_context())
        r = c.greeting()
        self.assertReply(r, 220)
        self.assertIn(HOSTNAME, r.text)
        r = c.ehlo()
        kw = self.ehlo_keywords(r)
        self.assertIn("AUTH", kw)
        self.assertNotIn("STARTTLS", kw)
        self.assertReply(c.command("QUIT"), 221)
        self.assert_tls_logged("TLSv1.3")

    def test_smtp_ssl_on_implicit_listener(self):
        s = self.smtp_ssl()
        self.assertTrue(s.has_extn("auth"), s.esmtp_features)
        self.assertFalse(s.has_extn("starttls"), s.esmtp_features)
        s.login(LOGIN, PASSWORD)
        body = message("over implicit tls")
        self.assertEqual(s.sendmail(SENDER, ["someone@gmail.example"], body), {})
        s.quit()
        m = self.backend.wait_for_messages(1)[0]
        self.assertTrue(m["authenticated"])
        h = received_header(m["data"]).decode()
        self.assertRegex(h, r"\bwith ESMTPSA\b")
        self.assertRegex(h, r"\(using TLSv1\.3 with cipher [A-Z0-9_-]+\)")
        self.assertIn("listener submissions", h)

    def _s_client(self, *args):
        if not shutil.which("openssl"):
            self.skipTest("openssl not installed")
        cmd = ["timeout", "20", "openssl", "s_client", "-CAfile", CERTS["cert"],
               "-verify_return_error", "-servername", "localhost"] + list(args)
        # -quit (OpenSSL >= 3.2) exits after the handshake; older versions do the
        # same at the end of standard input (/dev/null).
        help_text = subprocess.run(["openssl", "s_client", "-help"], stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=10)
        if re.search(r"^\s*-quit\b", help_text.stdout + help_text.stderr, re.M):
            cmd.append("-quit")
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30)

    def test_openssl_s_client_shows_certificate(self):
        with open(CERTS["cert"]) as f:
            want = pem_blocks(f.read())
        for listener, extra in (("submission", ["-starttls", "smtp"]), ("mx", ["-starttls", "smtp"]),
                                ("submissions", [])):
            with self.subTest(listener=listener):
                r = self._s_client(*(extra + ["-connect", "127.0.0.1:%d" % self.gw.port(listener)]))
                out = r.stdout + r.stderr
                self.assertEqual(r.returncode, 0, out)
                self.assertEqual(pem_blocks(r.stdout)[:1], want, out)
                self.assertRegex(out, r"subject=\s*CN\s*=\s*localhost")
                self.assertIn("Verify return code: 0 (ok)", out)

    def _swaks(self, listener, *args):
        if not support.have_swaks():
            self.skipTest("swaks not installed")
        r = support.run_swaks(self.gw.host(listener), self.gw.port(listener), *args,
                              "--tls-verify", "--tls-ca-path", CERTS["cert"],
                              "--auth", "PLAIN", "--auth-user", LOGIN,
                              "--auth-password", PASSWORD,
                              "--from", SENDER, "--to", "someone@gmail.example",
                              "--header", "Subject: swaks %s" % listener, source=CLIENT)
        out = r.stdout + r.stderr
        if "Net::SSLeay" in out:
            self.skipTest("swaks lacks TLS support: " + out[-300:])
        return r, out

    def test_swaks_tls_starttls(self):
        r, out = self._swaks("submission", "--tls")
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("STARTTLS", out)
        m = self.backend.wait_for_messages(1)[0]
        self.assertTrue(m["authenticated"])
        self.assertIn(b"Subject: swaks submission", m["data"])
        self.assertRegex(received_header(m["data"]).decode(), r"\bwith ESMTPSA\b")

    def test_swaks_tlsc_implicit(self):
        r, out = self._swaks("submissions", "--tlsc")
        self.assertEqual(r.returncode, 0, out)
        m = self.backend.wait_for_messages(1)[0]
        self.assertTrue(m["authenticated"])
        self.assertIn(b"Subject: swaks submissions", m["data"])
        self.assertRegex(received_header(m["data"]).decode(), r"\bwith ESMTPSA\b")


# ------------------------------------------------------------------------------
# The STARTTLS command and what may (not) happen around it
# ------------------------------------------------------------------------------

class StartTlsProtocolTest(TlsTestCase):

    def setUp(self):
        self.start()

    def test_ehlo_advertises_starttls_before_and_auth_after(self):
        c = self.raw("submission", ehlo=False)
        kw = self.ehlo_keywords(c.ehlo())
        self.assertIn("STARTTLS", kw)
        self.assertNotIn("AUTH", kw)
        kw = self.ehlo_keywords(self.starttls(c))
        self.assertIn("AUTH", kw)
        self.assertNotIn("STARTTLS", kw)
        self.assertReply(c.command("QUIT"), 221)

    def test_auth_before_tls_refused_with_530(self):
        c = self.raw("submission")
        blob = base64.b64encode(("\0%s\0%s" % (LOGIN, PASSWORD)).encode()).decode()
        self.assertReply(c.command("AUTH PLAIN " + blob), 530, "5.7.0",
                         "Must issue a STARTTLS command first")
        self.assertReply(c.command("AUTH LOGIN"), 530, "5.7.0",
                         "Must issue a STARTTLS command first")
        self.assertReply(c.command("AUTH PLAIN"), 530, "5.7.0")
        # nothing was authenticated: MAIL still needs AUTH
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 530, "5.7.0")
        self.assertReply(c.command("QUIT"), 221)
        self.assertTrue(c.is_closed())
        # the backend never heard of it (the backend connection is opened only at AUTH)
        self.assertFalse(self.backend.saw("AUTH"), self.backend.commands())
        self.assertEqual(self.backend.events("auth_result"), [])
        self.assertEqual(self.backend.messages(), [])
        d = self.gw.wait_for_log(event="decision", rule="submission.require_tls")
        self.assertEqual(d.get("stage"), "auth", d)
        self.assertIn("530", d.get("reply", ""), d)

    def test_auth_after_tls_reaches_backend(self):
        c = self.raw("submission")
        self.starttls(c)
        blob = base64.b64encode(("\0%s\0%s" % (LOGIN, PASSWORD)).encode()).decode()
        self.assertReply(c.command("AUTH PLAIN " + blob), 235)
        self.assertReply(c.command("QUIT"), 221)
        self.assertEqual([(e["login"], e["success"]) for e in self.backend.events("auth_result")],
                         [(LOGIN, True)])

    def test_starttls_twice_refused_503(self):
        c = self.raw("submission")
        self.starttls(c)
        self.assertReply(c.command("STARTTLS"), 503, "5.5.1")
        # the TLS session is intact
        self.assertReply(c.command("NOOP"), 250)
        self.assertReply(c.command("QUIT"), 221)

    def test_starttls_twice_on_implicit_listener_refused(self):
        c = self.raw("submissions")
        # already under TLS: refused (SPEC leaves the code open), never a second 220
        r = c.command("STARTTLS")
        self.assertIn(r.code // 100, (4, 5), r)
        self.assertReply(c.command("NOOP"), 250)
        self.assertReply(c.command("QUIT"), 221)

    def test_starttls_with_parameter_refused_501(self):
        # RFC 3207 §4: "501 Syntax error (no parameters allowed)"
        c = self.raw("submission")
        self.assertReply(c.command("STARTTLS now"), 501)
        self.assertEqual(self.ehlo_keywords(c.ehlo()).count("STARTTLS"), 1)
        self.starttls(c)
        self.assertReply(c.command("QUIT"), 221)

    def test_pipelined_transaction_inside_tls(self):
        c = self.raw("submission")
        self.starttls(c)
        blob = base64.b64encode(("\0%s\0%s" % (LOGIN, PASSWORD)).encode()).decode()
        self.assertReply(c.command("AUTH PLAIN " + blob), 235)
        body = message("pipelined in tls")
        c.send(b"MAIL FROM:<" + SENDER.encode() + b">\r\nRCPT TO:<a@gmail.example>\r\n"
               b"RCPT TO:<b@gmail.example>\r\nDATA\r\n")
        self.assertEqual([c.read_reply().code for _ in range(4)], [250, 250, 250, 354])
        c.send(support.dot_stuff(body) + b".\r\nQUIT\r\n")
        self.assertReply(c.read_reply(), 250)
        self.assertReply(c.read_reply(), 221)
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["rcpt_tos"], ["a@gmail.example", "b@gmail.example"])
        self.assertTrue(m["data"].endswith(body))

    def test_starttls_inside_transaction_refused_503(self):
        c = self.raw("mx", source=WORLD)
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("STARTTLS"), 503, "5.5.1")
        # the transaction and the session go on in the clear
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
        self.assertReply(c.command("RSET"), 250)
        self.assertReply(c.command("QUIT"), 221)

    def test_session_reset_after_starttls(self):
        c = self.raw("mx", source=WORLD)
        self.starttls(c, ehlo=False)
        # RFC 3207 §4.2: everything learned before TLS is forgotten, EHLO included
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 503)
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("QUIT"), 221)

    def test_session_reset_after_starttls_auth_needs_ehlo(self):
        c = self.raw("submission")
        self.starttls(c, ehlo=False)
        blob = base64.b64encode(("\0%s\0%s" % (LOGIN, PASSWORD)).encode()).decode()
        self.assertReply(c.command("AUTH PLAIN " + blob), 503)
        self.assertFalse(self.backend.saw("AUTH"))
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.command("AUTH PLAIN " + blob), 235)
        self.assertReply(c.command("QUIT"), 221)

    # -- command injection (CVE-2011-0411 class) ----------------------------------
    def _after_handshake_exactly_one_noop_reply(self, c):
        # Nothing arrives unprompted in TLS ...
        self.assertEqual(c.pending(0.7), b"", "a reply to an injected command arrived")
        # ... and one NOOP gets exactly one reply.
        c.send(b"NOOP\r\n")
        self.assertReply(c.read_reply(), 250)
        self.assertEqual(c.pending(0.7), b"", "more than one reply to one NOOP")

    def test_injected_rset_after_starttls_is_discarded(self):
        c = self.raw("submission")
        c.send(b"STARTTLS\r\nRSET\r\n")
        self.assertReply(c.read_reply(), 220)
        # no reply to RSET in the clear either (the client hello has not been sent yet)
        self.assertEqual(c.pending(0.5), b"", "a reply followed the 220 in the clear")
        c.start_tls(client_context())
        self._after_handshake_exactly_one_noop_reply(c)
        self.assertReply(c.command("QUIT"), 221)

    def test_injected_mail_after_starttls_is_discarded(self):
        c = self.raw("mx", source=WORLD)
        c.send(b"STARTTLS\r\nMAIL FROM:<a@b>\r\n")
        self.assertReply(c.read_reply(), 220)
        self.assertEqual(c.pending(0.5), b"", "a reply followed the 220 in the clear")
        c.start_tls(client_context())
        self._after_handshake_exactly_one_noop_reply(c)
        self.assertReply(c.ehlo(), 250)
        self.assertEqual(c.pending(0.5), b"")
        # no transaction was opened by the injected MAIL: a new one is accepted
        self.assertReply(c.command("MAIL FROM:<real@other.example>"), 250)
        self.assertReply(c.command("QUIT"), 221)
        self.assertTrue(c.is_closed())
        if self.backend.connections():
            self.backend.wait_for_disconnect()
        mails = [l for l in self.backend.commands() if l.upper().startswith("MAIL")]
        self.assertEqual(mails, ["MAIL FROM:<real@other.example>"])

    def test_injected_command_after_deferred_starttls_is_discarded(self):
        # STARTTLS behind commands whose replies the backend owes: it waits for them,
        # and the command pipelined after it must still be dropped.
        c = self.raw("mx", source=WORLD)
        c.send(b"MAIL FROM:<a@other.example>\r\nRSET\r\nSTARTTLS\r\nRSET\r\n")
        self.assertReply(c.read_reply(), 250)       # MAIL
        self.assertReply(c.read_reply(), 250)       # RSET: the transaction is over
        self.assertReply(c.read_reply(), 220)       # STARTTLS
        self.assertEqual(c.pending(0.5), b"", "a reply followed the 220 in the clear")
        c.start_tls(client_context())
        self._after_handshake_exactly_one_noop_reply(c)
        self.assertReply(c.command("QUIT"), 221)


class StartTlsFromHeldInputTest(TlsTestCase):
    """STARTTLS read from input held while AUTH waited on the backend. The handshake's start
    flushes the 220 from inside the session's own call; the drained event that flush raises
    must not run the held input again (it once read the plaintext after STARTTLS a second
    time, the STARTTLS included)."""

    def setUp(self):
        self.start(require_tls=False)

    def test_plaintext_after_a_held_starttls_is_never_executed(self):
        c = self.raw("submission")
        blob = base64.b64encode(("\0%s\0%s" % (LOGIN, PASSWORD)).encode()).decode()
        c.send(("AUTH PLAIN %s\r\nSTARTTLS\r\nMAIL FROM:<%s>\r\nRSET\r\n"
                % (blob, SENDER)).encode())
        self.assertReply(c.read_reply(), 235)       # AUTH, judged by the backend meanwhile
        self.assertReply(c.read_reply(), 220)       # STARTTLS, from the held input
        self.assertEqual(c.pending(0.5), b"", "a reply followed the 220 in the clear")
        c.start_tls(client_context())
        self._after_handshake_exactly_one_noop_reply(c)
        self.assertReply(c.command("QUIT"), 221)
        self.assertTrue(c.is_closed())
        mails = [l for l in self.backend.commands() if l.upper().startswith("MAIL")]
        self.assertEqual(mails, [])                  # the injected MAIL never went anywhere

    def _after_handshake_exactly_one_noop_reply(self, c):
        self.assertEqual(c.pending(0.7), b"", "a reply to an injected command arrived")
        c.send(b"NOOP\r\n")
        self.assertReply(c.read_reply(), 250)
        self.assertEqual(c.pending(0.7), b"", "more than one reply to one NOOP")

# ------------------------------------------------------------------------------
# Handshakes that fail: the gateway logs them and keeps serving
# ------------------------------------------------------------------------------

class HandshakeFailureTest(TlsTestCase):

    def test_plaintext_to_implicit_port(self):
        self.start()
        c = self.raw_client(self.gw, "submissions", WORLD)
        c.send(b"EHLO x\r\n")
        self.assertTrue(c.is_closed(5), "gateway kept the connection open")
        self.assertNotIn(b"220", c.buf)            # at most a TLS alert, never a greeting
        self.assertNotIn(b"250", c.buf)
        log = self.wait_tls_error()
        self.assertEqual(log.get("listener"), "submissions", log)
        self.assertIn(WORLD, log.get("client", ""), log)
        self.assertRegex(log["reason"], r"(?i)version|protocol|record|packet", log)
        self.assert_normal_session_works()

    def test_garbage_after_starttls(self):
        self.start()
        c = self.raw("submission", source=WORLD)
        self.assertReply(c.command("STARTTLS"), 220)
        c.send(b"EHLO not-tls\r\n")
        self.assertTrue(c.is_closed(5), "gateway kept the connection open")
        self.assertNotIn(b"250", c.buf)
        self.wait_tls_error()
        self.assert_normal_session_works()

    def test_tls10_client_refused_when_min_is_12(self):
        self.start()
        old = client_context(verify=False, minimum=ssl.TLSVersion.TLSv1,
                             maximum=ssl.TLSVersion.TLSv1)
        # implicit port: the *server* refuses (an alert), the client did offer TLS 1.0
        c = self.raw_client(self.gw, "submissions", WORLD)
        with self.assertRaisesRegex(ssl.SSLError, r"(?i)alert protocol version"):
            c.start_tls(old)
        log = self.wait_tls_error()
        self.assertEqual(log.get("listener"), "submissions", log)
        self.assertRegex(log["reason"], r"(?i)protocol|version", log)
        # STARTTLS port
        c = self.raw("submission", source=WORLD)
        self.assertReply(c.command("STARTTLS"), 220)
        with self.assertRaisesRegex(ssl.SSLError, r"(?i)alert protocol version"):
            c.start_tls(old)
        support.wait_until(lambda: len(self.tls_errors()) >= 2, 5,
                           message="a second TLS error log line")
        # both sessions over: every line they logged is in
        support.wait_until(lambda: len(self.gw.find(event="session_close")) >= 2, 5,
                           message="two session_close log lines")
        self.assertEqual(self.gw.find(event="tls"), [])
        # the gateway still serves everyone else
        self.assert_normal_session_works()

    def test_tls12_client_accepted_when_min_is_12(self):
        self.start()
        c = self.raw("submission", ehlo=True)
        self.starttls(c, client_context(maximum=ssl.TLSVersion.TLSv1_2))
        self.assertReply(c.command("QUIT"), 221)
        self.assert_tls_logged("TLSv1.2")


class MinVersionTls13Test(TlsTestCase):

    def setUp(self):
        self.start(tls={"cert": CERTS["cert"], "key": CERTS["key"], "min_version": "TLSv1.3"})

    def test_tls12_client_refused(self):
        tls12 = client_context(maximum=ssl.TLSVersion.TLSv1_2)
        c = self.raw("submission", source=WORLD)
        self.assertReply(c.command("STARTTLS"), 220)
        with self.assertRaisesRegex(ssl.SSLError, r"(?i)alert protocol version"):
            c.start_tls(tls12)
        log = self.wait_tls_error()
        self.assertRegex(log["reason"], r"(?i)protocol|version", log)
        c = self.raw_client(self.gw, "submissions", WORLD)
        with self.assertRaisesRegex(ssl.SSLError, r"(?i)alert protocol version"):
            c.start_tls(tls12)
        support.wait_until(lambda: len(self.tls_errors()) >= 2, 5,
                           message="a second TLS error log line")
        # both sessions over: every line they logged is in
        support.wait_until(lambda: len(self.gw.find(event="session_close")) >= 2, 5,
                           message="two session_close log lines")
        self.assertEqual(self.gw.find(event="tls"), [])

    def test_tls13_client_works(self):
        tls13 = client_context(minimum=ssl.TLSVersion.TLSv1_3)
        c = self.raw("submission")
        self.starttls(c, tls13)
        self.assertEqual(c.sock.version(), "TLSv1.3")
        self.assertReply(c.command("QUIT"), 221)
        self.assert_tls_logged("TLSv1.3")
        self.assert_normal_session_works("tls 1.3 only")


# ------------------------------------------------------------------------------
# TLS from the gateway to the backend
# ------------------------------------------------------------------------------

class BackendTlsTest(TlsTestCase):

    def send_inbound(self, subject):
        """An unauthenticated delivery on mx, in the clear towards the gateway."""
        s = self.smtp(self.gw, "mx", WORLD)
        body = message(subject, sender="a@other.example", to="user@example.com")
        refused = s.sendmail("a@other.example", ["user@example.com"], body)
        s.quit()
        return refused, body

    def assert_backend_session_under_tls(self, conn, starttls=True):
        events = self.backend.events(conn=conn)
        kinds = [e["event"] for e in events]
        self.assertIn("tls", kinds, events)
        at = kinds.index("tls")
        tls = events[at]
        self.assertEqual(tls.get("starttls"), starttls, tls)
        self.assertTrue(tls.get("version"), tls)
        before = [e["line"].split(" ", 1)[0].upper() for e in events[:at]
                  if e["event"] == "command"]
        self.assertEqual(before, ["EHLO", "STARTTLS"] if starttls else [], events)
        after = [e["line"].split(" ", 1)[0].upper() for e in events[at:]
                 if e["event"] == "command"]
        self.assertEqual(after[:1], ["EHLO"], events)     # RFC 3207: EHLO again
        return tls

    def assert_4xx_at_mail_nothing_delivered(self, reason_re):
        c = self.raw("mx", source=WORLD)
        r = c.command("MAIL FROM:<a@other.example>")
        self.assertReply(r, 421, "4.4.1")
        self.assertTrue(c.is_closed(5), "gateway kept the session after 421")
        log = self.gw.wait_for_log(event="error", component="backend")
        self.assertRegex(log.get("reason", ""), reason_re, log)
        if self.backend.connections():
            self.backend.wait_for_disconnect()
        self.assertFalse(self.backend.saw("MAIL"), self.backend.commands())
        self.assertFalse(self.backend.saw("RCPT"))
        self.assertEqual(self.backend.messages(), [])
        # and smtplib sees a temporary failure, never a success
        s = self.smtp(self.gw, "mx", WORLD)
        with self.assertRaises((smtplib.SMTPSenderRefused, smtplib.SMTPServerDisconnected)) as cm:
            s.sendmail("a@other.example", ["user@example.com"], message("must not arrive"))
        if isinstance(cm.exception, smtplib.SMTPSenderRefused):
            self.assertEqual(cm.exception.smtp_code // 100, 4, cm.exception)
        self.assertEqual(self.backend.messages(), [])

    def test_backend_starttls_verified_delivery(self):
        self.start(tls=None, backend_kw=self.tls_backend(),
                   backend_tls=self.backend_policy(server_name="localhost"),
                   listeners=(("mx", "mx"),))
        refused, body = self.send_inbound("to a tls backend")
        self.assertEqual(refused, {})
        m = self.backend.wait_for_messages(1)[0]
        self.assertTrue(m["data"].endswith(body))
        self.assertIsNotNone(m["tls"], m)
        self.assertEqual(m["tls"]["version"], "TLSv1.3")
        self.assert_backend_session_under_tls(m["conn"])
        # the client side was in the clear: the Received: header says so
        h = received_header(m["data"]).decode()
        self.assertRegex(h, r"\bwith ESMTP\b")
        self.assertNotIn("(using", h)

    def test_backend_starttls_chain_only_without_server_name(self):
        self.start(tls=None, backend_kw=self.tls_backend(),
                   backend_tls=self.backend_policy(), listeners=(("mx", "mx"),))
        refused, _ = self.send_inbound("chain only")
        self.assertEqual(refused, {})
        m = self.backend.wait_for_messages(1)[0]
        self.assertIsNotNone(m["tls"], m)

    def test_backend_starttls_with_client_tls_and_auth(self):
        self.start(backend_kw=self.tls_backend(),
                   backend_tls=self.backend_policy(server_name="localhost"))
        s = self.smtp_tls()
        body = message("tls on both sides")
        self.assertEqual(s.sendmail(SENDER, ["someone@gmail.example"], body), {})
        s.quit()
        m = self.backend.wait_for_messages(1)[0]
        self.assertTrue(m["authenticated"])
        self.assertEqual(m["login"], LOGIN)
        self.assertIsNotNone(m["tls"], m)
        self.assert_backend_session_under_tls(m["conn"])
        # AUTH reached the backend only inside TLS
        events = self.backend.events(conn=m["conn"])
        kinds = [e["event"] for e in events]
        auth_at = [i for i, e in enumerate(events)
                   if e["event"] == "command" and e["line"].upper().startswith("AUTH")]
        self.assertTrue(auth_at, events)
        self.assertGreater(auth_at[0], kinds.index("tls"))
        self.assertRegex(received_header(m["data"]).decode(), r"\bwith ESMTPSA\b")

    def test_backend_without_starttls_gives_421_at_mail(self):
        self.start(tls=None, backend_tls=self.backend_policy(), listeners=(("mx", "mx"),))
        self.assert_4xx_at_mail_nothing_delivered(r"(?i)does not offer STARTTLS")
        # never a silent downgrade: the gateway stopped after EHLO
        for conn in self.backend.connections():
            self.assertNotIn("MAIL", self.backend.verbs(conn))

    def test_backend_without_starttls_gives_454_at_auth(self):
        self.start(backend_tls=self.backend_policy())
        c = self.raw("submission")
        self.starttls(c)
        blob = base64.b64encode(("\0%s\0%s" % (LOGIN, PASSWORD)).encode()).decode()
        self.assertReply(c.command("AUTH PLAIN " + blob), 454, "4.7.0")
        self.assertFalse(self.backend.saw("AUTH"), self.backend.commands())
        self.assertEqual(self.backend.events("auth_result"), [])
        # not a failed login: the session goes on, and MAIL still needs AUTH
        self.assertReply(c.command("MAIL FROM:<%s>" % SENDER), 530, "5.7.0")
        name = support.client_address(c)
        self.assertReply(c.command("QUIT"), 221)
        self.gw.wait_for_log(event="session_close", client=name)    # and every line before
        self.assertEqual(self.gw.find(event="ban"), [])

    def test_backend_untrusted_certificate_gives_4xx(self):
        # verify true and no ca: the system CAs do not know the self-signed cert
        self.start(tls=None, backend_kw=self.tls_backend(),
                   backend_tls=self.backend_policy(ca=None), listeners=(("mx", "mx"),))
        self.assert_4xx_at_mail_nothing_delivered(r"(?i)certificate verify failed")

    def test_backend_server_name_mismatch_gives_4xx(self):
        self.start(tls=None, backend_kw=self.tls_backend(),
                   backend_tls=self.backend_policy(server_name="mail.example.com"),
                   listeners=(("mx", "mx"),))
        self.assert_4xx_at_mail_nothing_delivered(r"(?i)certificate verify failed|hostname mismatch")

    def test_backend_verify_false_accepts_self_signed(self):
        self.start(tls=None, backend_kw=self.tls_backend(),
                   backend_tls={"tls": "starttls", "verify": False}, listeners=(("mx", "mx"),))
        refused, _ = self.send_inbound("unverified")
        self.assertEqual(refused, {})
        m = self.backend.wait_for_messages(1)[0]
        self.assertIsNotNone(m["tls"], m)

    def test_backend_implicit_tls_delivery(self):
        self.start(tls=None, backend_kw=self.tls_backend(implicit=True),
                   backend_tls=self.backend_policy("implicit", server_name="localhost"),
                   listeners=(("mx", "mx"),))
        refused, body = self.send_inbound("implicit backend")
        self.assertEqual(refused, {})
        m = self.backend.wait_for_messages(1)[0]
        self.assertTrue(m["data"].endswith(body))
        self.assertIsNotNone(m["tls"], m)
        self.assert_backend_session_under_tls(m["conn"], starttls=False)
        self.assertFalse(self.backend.saw("STARTTLS"))

    def test_backend_implicit_tls_against_plaintext_backend_gives_4xx(self):
        self.start(tls=None, backend_tls=self.backend_policy("implicit"),
                   listeners=(("mx", "mx"),))
        self.assert_4xx_at_mail_nothing_delivered(r"(?i)tls")

    def test_large_message_byte_exact_tls_both_sides(self):
        # Many TLS records each way: 3 MB with long and short lines, leading dots.
        self.start(backend_kw=self.tls_backend(),
                   backend_tls=self.backend_policy(server_name="localhost"))
        lines = [b"From: %s" % SENDER.encode(), b"To: someone@gmail.example",
                 b"Subject: big over tls", b""]
        i = 0
        size = 0
        while size < 3 * 1024 * 1024:
            line = (b".%d " % i if i % 7 == 0 else b"%d " % i) + b"x" * (i * 131 % 9000)
            lines.append(line)
            size += len(line) + 2
            i += 1
        body = b"\r\n".join(lines) + b"\r\n"
        s = self.smtp_tls()
        self.assertEqual(s.sendmail(SENDER, ["someone@gmail.example"], body), {})
        s.quit()
        m = self.backend.wait_for_messages(1, timeout=30)[0]
        self.assertEqual(len(m["data"]) - len(received_header(m["data"])), len(body))
        self.assertTrue(m["data"].endswith(body))
        self.assertIsNotNone(m["tls"], m)


class TlsReloadTest(TlsTestCase):
    """SIGHUP with TLS settings changed (SPEC §5: new sessions get the new
    policy, sessions in flight keep the one they started with)."""

    def reload(self, policy):
        # The start's own policy_reload line may still be on its way: count from it.
        self.gw.wait_for_log(event="policy_reload")
        before = len(self.gw.find(event="policy_reload"))
        self.gw.reload(policy)
        support.wait_until(lambda: len(self.gw.find(event="policy_reload")) > before, 10,
                           message="policy_reload log line")
        last = self.gw.find(event="policy_reload")[-1]
        self.assertEqual(last.get("result"), "loaded", last)

    def peer_cert_der(self, listener="submissions"):
        c = self.raw(listener, source=WORLD, ehlo=False,
                     context=client_context(verify=False))
        der = c.sock.getpeercert(binary_form=True)
        c.command("QUIT")
        return der

    def test_reload_serves_a_new_certificate(self):
        self.start()
        with open(CERTS["cert"]) as f:
            old = ssl.PEM_cert_to_DER_cert(pem_blocks(f.read())[0])
        with open(CERTS["backend_cert"]) as f:
            new = ssl.PEM_cert_to_DER_cert(pem_blocks(f.read())[0])
        self.assertEqual(self.peer_cert_der(), old)
        policy = json_copy(self.policy)
        policy["tls"]["cert"], policy["tls"]["key"] = CERTS["backend_cert"], CERTS["backend_key"]
        self.reload(policy)
        self.assertEqual(self.peer_cert_der(), new)

    def test_session_keeps_backend_tls_across_reload_to_none(self):
        # A session that began under backend.tls "starttls" opens its backend
        # connection after a reload to backend.tls "none": it must still deliver
        # (by its own policy, over TLS) or fail with a 4xx -- never crash the
        # gateway, never deliver in the clear what its policy said to protect.
        self.start(tls=None, backend_kw=self.tls_backend(),
                   backend_tls=self.backend_policy(server_name="localhost"),
                   listeners=(("mx", "mx"),))
        c = self.raw("mx", source=WORLD)           # no MAIL yet: no backend connection
        policy = json_copy(self.policy)
        policy["backend"] = {k: v for k, v in policy["backend"].items()
                             if k in ("address", "client_ip")}
        policy["backend"]["tls"] = "none"
        self.reload(policy)
        try:
            r = c.command("MAIL FROM:<a@other.example>")
        except (support.ConnectionClosed, ConnectionResetError) as e:
            time.sleep(0.2)
            self.fail("connection lost at MAIL after the reload (%s); gateway exit status: "
                      "%s; last log lines:\n%s" % (e, self.gw.proc.poll(),
                                                   "\n".join(self.gw.lines[-10:])))
        self.assertIsNone(self.gw.proc.poll(), "gateway died: exit %s" % self.gw.proc.poll())
        self.assertIn(r.code, (250, 421), r)
        if r.code == 250:
            self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
            self.assertReply(c.command("DATA"), 354)
            c.send(message("across a reload", "a@other.example", "user@example.com")
                   + b".\r\n")
            self.assertReply(c.read_reply(), 250)
            m = self.backend.wait_for_messages(1)[0]
            self.assertIsNotNone(m["tls"], "delivered in the clear: %r" % m)
        else:
            self.assertEqual(self.backend.messages(), [])
        # and a new session follows the new policy (no TLS to the backend)
        refused = self.smtp(self.gw, "mx", WORLD).sendmail(
            "b@other.example", ["user@example.com"], message("after reload"))
        self.assertEqual(refused, {})

    def test_session_keeps_no_backend_tls_across_reload_to_starttls(self):
        self.start(tls=None, backend_kw=self.tls_backend(), listeners=(("mx", "mx"),))
        c = self.raw("mx", source=WORLD)
        policy = json_copy(self.policy)
        policy["backend"].update(tls="starttls", ca=CERTS["backend_cert"], verify=True)
        self.reload(policy)
        try:
            r = c.command("MAIL FROM:<a@other.example>")
        except (support.ConnectionClosed, ConnectionResetError) as e:
            time.sleep(0.2)
            self.fail("connection lost at MAIL after the reload (%s); gateway exit status: %s"
                      % (e, self.gw.proc.poll()))
        self.assertIsNone(self.gw.proc.poll(), "gateway died: exit %s" % self.gw.proc.poll())
        self.assertIn(r.code, (250, 421), r)
        self.assertReply(c.command("QUIT"), 221)


def json_copy(obj):
    return json.loads(json.dumps(obj))


if __name__ == "__main__":
    unittest.main()
