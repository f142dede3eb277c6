"""Logs an admin can investigate from after a blocklisting: who sent what to whom
(decision facts, transaction and message events), and a log file that logrotate can move
away (SIGUSR1 reopens it)."""

import base64
import json
import os
import signal

import support
from support import IntegrationTestCase, dot_stuff

HOSTNAME = "gw.example.test"
CLIENT = "127.0.0.5"
LOGIN, PASSWORD = "cms@example.com", "s3cret-Pw"


def plain(login, password):
    return base64.b64encode(b"\0" + login.encode() + b"\0" + password.encode()).decode()


class ForensicLogTest(IntegrationTestCase):

    def setUp(self):
        self.backend = self.start_backend(users={LOGIN: PASSWORD})
        policy = support.gateway_policy(
            self.backend.address, listeners=(("mx", "mx"), ("sub", "submission")),
            hostname=HOSTNAME,
            submission={"access": {"default": "allow"}, "require_tls": False})
        self.gw = self.start_gateway(policy)

    def client(self, listener):
        c = self.raw_client(self.gw, listener, CLIENT)
        self.assertEqual(c.greeting().code, 220)
        self.assertEqual(c.command("EHLO client.example").code, 250)
        return c

    def test_who_sent_what_to_whom(self):
        c = self.client("sub")
        self.assertReply(c.command("AUTH PLAIN " + plain(LOGIN, PASSWORD)), 235)
        self.assertReply(c.command("MAIL FROM:<cms@example.com>"), 250)
        self.assertReply(c.command("RCPT TO:<one@example.org>"), 250)
        self.assertReply(c.command("RCPT TO:<two@example.net>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(b"Subject: hi\r\n\r\nbody\r\n") + b".\r\n")
        self.assertReply(c.read_reply(), 250)
        self.assertReply(c.command("QUIT"), 221)

        m = self.gw.wait_for_log(event="message")
        self.assertEqual(m["login"], LOGIN)
        self.assertEqual(m["to"], ["one@example.org", "two@example.net"])
        self.assertEqual(m["recipients"], 2)
        self.assertIs(m["delivered"], True)
        t = self.gw.wait_for_log(event="transaction")
        for key, value in (("outcome", "delivered"), ("from", "cms@example.com"),
                           ("recipients", ["one@example.org", "two@example.net"]),
                           ("accepted", ["one@example.org", "two@example.net"]),
                           ("helo", "client.example"), ("login", LOGIN), ("auth", "ok"),
                           ("tls", False), ("class", "submission"), ("listener", "sub")):
            self.assertEqual(t.get(key), value, (key, t))
        self.gw.wait_for_log(event="session_close")
        self.assertNotIn(PASSWORD, self.gw.text())

    def test_refusals_name_their_facts(self):
        c = self.client("mx")
        self.assertReply(c.command("MAIL FROM:<spammer@elsewhere.test>"), 250)
        self.assertReply(c.command("RCPT TO:<victim@gmail.example>"), 554)
        self.assertReply(c.command("QUIT"), 221)
        d = self.gw.wait_for_log(event="decision", rule="mx.relay")
        self.assertEqual((d.get("helo"), d.get("from"), d.get("rcpt")),
                         ("client.example", "spammer@elsewhere.test", "victim@gmail.example"), d)
        t = self.gw.wait_for_log(event="transaction")
        self.assertEqual(t["outcome"], "abandoned", t)
        self.assertEqual(t["recipients"], ["victim@gmail.example"], t)
        self.assertEqual(t["accepted"], [], t)

        # AUTH on port 25: the login offered is named, the password never.
        c = self.client("mx")
        c.command("AUTH PLAIN " + plain("admin@example.com", "hunter2"))
        d = self.gw.wait_for_log(event="decision", rule="mx.auth")
        self.assertEqual(d.get("login"), "admin@example.com", d)
        self.gw.wait_for_log(event="auth", login="admin@example.com")
        self.assertNotIn("hunter2", self.gw.text())


class LogReopenTest(IntegrationTestCase):

    def test_sigusr1_reopens_the_log_file(self):
        backend = self.start_backend()
        logdir = support.make_tempdir("smtpgate-log-")
        path = os.path.join(logdir, "gw.log")
        policy = support.gateway_policy(backend.address, hostname=HOSTNAME,
                                        log={"format": "json", "path": path})
        gw = self.start_gateway(policy)

        def events(p):
            with open(p) as f:
                return [json.loads(line) for line in f if line.strip()]

        c = self.raw_client(gw, "mx", CLIENT)
        self.assertEqual(c.greeting().code, 220)
        self.assertReply(c.command("QUIT"), 221)
        support.wait_until(lambda: any(e["event"] == "session_close" for e in events(path)),
                           message="the first session's lines in the file")
        os.rename(path, path + ".1")   # what logrotate does
        gw.signal(signal.SIGUSR1)
        support.wait_until(lambda: os.path.exists(path), message="a new log file")
        c = self.raw_client(gw, "mx", CLIENT)
        self.assertEqual(c.greeting().code, 220)
        self.assertReply(c.command("QUIT"), 221)
        support.wait_until(lambda: any(e["event"] == "session_close" for e in events(path)),
                           message="the second session's lines in the new file")
        new = events(path)
        self.assertEqual(new[0]["event"], "log_reopen", new[0])
        self.assertEqual(new[0]["path"], path)
        self.assertEqual(sum(e["event"] == "session_open" for e in new), 1, new)
        old = events(path + ".1")
        self.assertEqual(sum(e["event"] == "session_open" for e in old), 1, old)
        self.assertNotIn("log_reopen", [e["event"] for e in old])
