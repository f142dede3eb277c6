"""The login defences (SPEC §9) in front of the real Postfix + Dovecot backend, with
backend.client_ip "xclient", so that Postfix and Dovecot log the real client address:

* spread guessing (`brute_force.per_login`): 30 addresses fail once each on one login;
  the 10th failure locks it; from then on no AUTH as that login from a new address
  reaches Postfix or Dovecot (counted in their own logs), the owner's address still
  logs in and sends mail Postfix delivers, and nobody is banned;
* stale passwords (`distinct_passwords`): one wrong password 20 times from one address
  is one failure (Dovecot checked all 20), while 5 different ones ban;
* IPv6: a ban of ::1 covers and shows as ::/64, and an IPv6 client reaches Postfix
  (XCLIENT ADDR=IPV6:...).

What the backend received is read from Postfix's maillog ("connect from", "SASL ...
authentication failed", the "disconnect from" summary with its auth=N/M count) and from
Dovecot's log ("Password mismatch", auth_verbose). The gateway opens its backend
connection only for AUTH or MAIL, so a session refused by the gateway leaves no trace
in either.

Clients are bound to 127.0.4.0/24 (and ::1), used by no other file here.
"""

import base64
import http.client
import json
import re
import subprocess
import time
import unittest

import support
from support import IntegrationTestCase, check_no_secret

HOSTNAME = "gw.example.test"
LOGIN = "user@example.com"                # postfix_backend's DEFAULT_USERS
PASSWORD = "userpass"
OTHER_LOGIN = "cms@example.com"
OTHER_PASSWORD = "secret"
WRONG = "Wr0ng-L0gin-Guess-7e2a"          # every guess starts with it (check_no_secret)
STALE = "0ld-Saved-Ph0ne-pw-31c9"         # the phone's saved password


def plain_blob(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())


def message(subject, sender=LOGIN, to="alice@example.net"):
    msgid = "<%s@example.com>" % re.sub(r"\W", "-", subject)
    return msgid.encode(), (
        "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: %s\r\n\r\nBody of %s.\r\n"
        % (sender, to, subject, msgid, subject)).encode()


class NoPenaltyPostfix(support.PostfixBackend):
    """The private Postfix + Dovecot with Dovecot's authentication penalty off.

    Dovecot (anvil) delays every further failure from one client IP: 4 s, 8 s, then 15 s.
    Postfix gives up on Dovecot after 10 s ("Connection lost to authentication server")
    and answers 454 4.7.0, a temporary failure that the gateway rightly does not count;
    so with the penalty on, the 4th quick wrong password from one address never gets a
    535 and 5 failures from one address take minutes. Tests that need several failures
    from one address turn it off (Dovecot's documented switch: no penalty socket)."""

    def _configure(self):
        super()._configure()
        with open(self.dovecot_dir + "/dovecot.conf", "a") as f:
            f.write("service anvil {\n  unix_listener anvil-auth-penalty {\n"
                    "    mode = 0\n  }\n}\n")


class LoginDefenceTestCase(IntegrationTestCase):
    """One Postfix per class (setUpClass); a gateway per test."""

    postfix_class = support.PostfixBackend
    postfix_kwargs = {}

    @classmethod
    def setUpClass(cls):
        cls.pf = cls.postfix_class(**cls.postfix_kwargs).start()

    @classmethod
    def tearDownClass(cls):
        cls.pf.stop()

    def policy(self, brute_force, allow=("127.0.4.0/24",)):
        bf = {"max_failures": 5, "window": "10m", "ban": "1h"}
        bf.update(brute_force)
        return support.gateway_policy(
            self.pf.address,
            listeners=[("submission", "submission")],
            hostname=HOSTNAME,
            local_domains=["example.com", "example.net"],
            client_ip="xclient",
            submission={"access": {"default": "deny", "allow": list(allow)},
                        "require_tls": False, "auth_match": "address"},
            brute_force=bf,
            admin={"listen": "127.0.0.1:%d" % support.free_port()},
            timeouts={"drain": "5s"},
        )

    # ---------------------------------------------------------------- clients
    def greeted(self, gw, source, host=None, port=None):
        if host is None:
            c = self.raw_client(gw, "submission", source=source, timeout=15.0)
        else:
            c = support.RawClient(host, port, source, 15.0)
            self.addCleanup(c.close)
        self.assertReply(c.greeting(), 220)
        self.assertReply(c.ehlo(), 250)
        return c

    def auth(self, c, password, user=LOGIN):
        return c.command(b"AUTH PLAIN " + plain_blob(user, password))

    def quit(self, gw, c):
        """QUIT, and wait for the session's session_close: every gateway log line of the
        session is in then."""
        name = support.client_address(c)
        self.assertReply(c.command("QUIT"), 221)
        c.close()
        return gw.wait_for_log(event="session_close", client=name)

    def send(self, c, sender, rcpt, body):
        self.assertReply(c.command("MAIL FROM:<%s>" % sender), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % rcpt), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(support.dot_stuff(body) + b".\r\n")
        r = c.read_reply()
        self.assertReply(r, 250)
        return r

    def assertRefusedAtConnect(self, source, host, port):
        c = support.RawClient(host, port, source, 10.0)
        self.addCleanup(c.close)
        r = c.greeting()
        self.assertReply(r, 554, "5.7.1", "access denied")
        self.assertTrue(c.is_closed(), "connection open after 554 at connect")

    def delivered(self, msgid):
        return support.wait_until(
            lambda: [m for m in self.pf.messages() if msgid in m["data"]], 15,
            message="Postfix delivering %r" % msgid)[0]

    # ---------------------------------------------------------------- admin
    def admin(self, gw, method, path):
        host, port = support.parse_listen(gw.policy["admin"]["listen"])
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request(method, path)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def bans(self, gw):
        status, body = self.admin(gw, "GET", "/bans")
        self.assertEqual(status, 200, body)
        return {b["ip"]: b for b in json.loads(body)["bans"]}

    def cli(self, gw, *args):
        return subprocess.run([support.gateway_binary()] + list(args) + ["-c", gw.policy_path],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=20)

    # ---------------------------------------------------------------- what the backend saw
    def mismatches(self, ip=None, login=LOGIN):
        """Dovecot's "Password mismatch" lines (auth_verbose), as the client IPs they name:
        every wrong password Dovecot checked."""
        return [m.group(1) for m in re.finditer(
            r"passwd-file\(%s,([^)]*)\): Password mismatch" % re.escape(login),
            self.pf.dovecot_log()) if ip is None or m.group(1) == ip]

    def sasl_failures(self, ip):
        """Postfix's "SASL ... authentication failed" lines for the client ip."""
        return re.findall(r"\bunknown\[%s\]: SASL \w+ authentication failed: ([^\n]*)"
                          % re.escape(ip), self.pf.maillog())

    def postfix_sessions(self, ip):
        """The counts of Postfix's "disconnect from unknown[ip] ..." summaries (one per
        backend session that XCLIENT named ip), e.g. {"ehlo": "2", "auth": "0/1", ...}."""
        out = []
        for m in re.finditer(r"disconnect from unknown\[%s\] ([^\n]*)" % re.escape(ip),
                             self.pf.maillog()):
            out.append(dict(kv.split("=", 1) for kv in m.group(1).split()))
        return out

    def backend_connects(self):
        """How many SMTP connections Postfix accepted so far."""
        return len(re.findall(r"postfix/smtpd\[\d+\]: connect from ", self.pf.maillog()))


# ==========================================================================
# Spread guessing, with Dovecot as configured by default (penalty on: every
# guessing address fails once, so it never applies)
# ==========================================================================

@unittest.skipUnless(support.have_postfix(), "needs root, Postfix and Dovecot")
class SpreadGuessingTest(LoginDefenceTestCase):

    def test_spread_guessing_locks_the_login_before_the_backend(self):
        gw = self.start_gateway(self.policy(
            {"max_failures": 5, "per_login": {"max_failures": 10, "lock": "1h"}}))
        owner = "127.0.4.200"
        connects0 = self.backend_connects()

        # The owner logs in from its own address: Postfix (Dovecot) accepts it.
        c = self.greeted(gw, owner)
        self.assertReply(self.auth(c, PASSWORD), 235)
        self.quit(gw, c)
        support.wait_until(lambda: self.postfix_sessions(owner), 10,
                           message="Postfix's summary of the owner's session")
        self.assertEqual(self.postfix_sessions(owner)[0].get("auth"), "1",
                         self.postfix_sessions(owner))

        # 30 addresses, one wrong password each. The first 10 reach Dovecot (and lock the
        # login at the 10th); the other 20 are refused by the gateway itself.
        guessers = ["127.0.4.%d" % (10 + i) for i in range(30)]
        replies = {}
        for i, ip in enumerate(guessers):
            c = self.greeted(gw, ip)
            r = self.auth(c, "%s-%d" % (WRONG, i))
            self.assertReply(r, 535, "5.7.8")
            replies[ip] = r
            self.quit(gw, c)
        lock = gw.wait_for_log(event="login_lock", login=LOGIN)
        self.assertEqual(lock["failures"], 10, lock)
        self.assertRegex(lock["until"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", lock)
        self.assertEqual(len(gw.find(event="login_lock")), 1, gw.find(event="login_lock"))

        reached, refused = guessers[:10], guessers[10:]
        support.wait_until(lambda: len(self.mismatches()) >= 10, 10,
                           message="Dovecot's 10 password mismatches")
        for ip in reached:
            self.assertEqual(len(self.sasl_failures(ip)), 1, (ip, self.pf.maillog()[-3000:]))
            self.assertEqual([s.get("auth") for s in self.postfix_sessions(ip)], ["0/1"], ip)
        # The gateway's refusals: its own decision, and the reply the client got.
        locked = [d for d in gw.decisions(rule="brute_force.login")]
        self.assertEqual(sorted(d["client"].rsplit(":", 1)[0] for d in locked), sorted(refused),
                         locked)
        for d in locked:
            self.assertEqual((d["stage"], d["verdict"], d["enforced"], d["login"]),
                             ("auth", "reject", True, LOGIN), d)
            self.assertEqual(d["reply"], replies[d["client"].rsplit(":", 1)[0]].raw.decode()
                             .rstrip("\r\n"), d)

        # A new address, even with the right password: 535 5.7.8 from the gateway.
        stranger = "127.0.4.77"
        c = self.greeted(gw, stranger)
        r = self.auth(c, PASSWORD)
        self.assertReply(r, 535, "5.7.8")
        self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 530)   # not logged in
        self.quit(gw, c)
        d = [d for d in gw.decisions(rule="brute_force.login")
             if d["client"].startswith(stranger + ":")]
        self.assertEqual(len(d), 1, d)
        self.assertIn("brute_force.per_login", d[0]["reason"])
        auth = [a for a in gw.find(event="auth") if a["client"].startswith(stranger + ":")]
        self.assertEqual([(a["login"], a["result"]) for a in auth], [(LOGIN, "refused")], auth)

        # The owner keeps logging in, and its mail is delivered by Postfix.
        msgid, body = message("owner after the lock")
        c = self.greeted(gw, owner)
        self.assertReply(self.auth(c, PASSWORD), 235)
        self.send(c, LOGIN, "alice@example.net", body)
        self.quit(gw, c)
        m = self.delivered(msgid)
        self.assertEqual(m["mailbox"], "alice@example.net")
        received = [v for v in m["headers"].get_all("Received") or [] if "(Postfix)" in v]
        self.assertTrue(received, m["data"][:800])
        self.assertIn("Authenticated sender: %s" % LOGIN, received[0])
        self.assertIn("[%s]" % owner, received[0])
        support.wait_until(lambda: len(self.postfix_sessions(owner)) == 2, 10,
                           message="Postfix's summary of the owner's second session")
        self.assertEqual(self.postfix_sessions(owner)[1].get("auth"), "1",
                         self.postfix_sessions(owner))

        # What the backend saw, all told (the owner's second session came after every
        # refused one, so its summary is the barrier): 2 owner sessions + 10 guessers,
        # not one connection for the 20 refused guessers or the stranger.
        self.assertEqual(self.backend_connects() - connects0, 12, self.pf.maillog()[-4000:])
        self.assertEqual(sorted(self.mismatches()), sorted(reached), self.pf.dovecot_log())
        for ip in refused + [stranger]:
            self.assertEqual(self.postfix_sessions(ip), [], ip)
            self.assertEqual(self.sasl_failures(ip), [], ip)
            self.assertNotIn("[%s]" % ip, self.pf.maillog())
            self.assertNotIn(",%s)" % ip, self.pf.dovecot_log())

        # No address reached max_failures: no ban (the refusals counted one each).
        self.assertEqual(self.bans(gw), {})
        listed = self.cli(gw, "bans", "list", "--json")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertEqual(json.loads(listed.stdout)["bans"], [], listed.stdout)
        self.assertEqual(gw.find(event="ban"), [])

        # Another login is not locked.
        c = self.greeted(gw, "127.0.4.78")
        self.assertReply(self.auth(c, OTHER_PASSWORD, OTHER_LOGIN), 235)
        self.quit(gw, c)

        # The admin sees the lock and lifts it; then the stranger's AUTH reaches Postfix.
        listed = self.cli(gw, "logins", "list", "--json")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        rows = json.loads(listed.stdout)["logins"]
        self.assertEqual([(l["login"], l["state"]) for l in rows], [(LOGIN, "locked")], rows)
        released = self.cli(gw, "logins", "release", LOGIN)
        self.assertEqual(released.returncode, 0, released.stderr)
        c = self.greeted(gw, stranger)
        self.assertReply(self.auth(c, PASSWORD), 235)
        self.quit(gw, c)
        support.wait_until(lambda: self.postfix_sessions(stranger), 10,
                           message="Postfix's summary of the released stranger's session")
        self.assertEqual([s.get("auth") for s in self.postfix_sessions(stranger)], ["1"])

        self.assertEqual(gw.stop(), 0)          # every log line is in now
        check_no_secret(gw, WRONG, LOGIN)
        check_no_secret(gw, PASSWORD, LOGIN)


# ==========================================================================
# Stale passwords and IPv6 (Dovecot's penalty off: several failures per address)
# ==========================================================================

@unittest.skipUnless(support.have_postfix(), "needs root, Postfix and Dovecot")
class RepeatedFailureTest(LoginDefenceTestCase):

    postfix_class = NoPenaltyPostfix
    # XCLIENT ADDR=IPV6:... needs Postfix's IPv6 support on (inet_protocols = ipv4
    # answers "501 5.5.4 Bad ADDR syntax"); it still listens on 127.0.0.1 only.
    postfix_kwargs = ({"extra_main_cf": {"inet_protocols": "all"}}
                      if support.ipv6_loopback_available() else {})

    def test_stale_password_counts_once_distinct_ones_ban(self):
        gw = self.start_gateway(self.policy({"max_failures": 5}))
        host, port = gw.host("submission"), gw.port("submission")
        phone, guesser, bystander = "127.0.4.50", "127.0.4.51", "127.0.4.52"

        # A phone retrying its old saved password: 20 times, in two sessions. Each attempt
        # reaches Dovecot (only the backend can tell a password is wrong) ...
        for session in range(2):
            c = self.greeted(gw, phone)
            for _ in range(10):
                self.assertReply(self.auth(c, STALE), 535, "5.7.8")
            self.quit(gw, c)
        support.wait_until(lambda: len(self.mismatches(phone)) == 20, 10,
                           message="Dovecot checking all 20 attempts")
        self.assertEqual(len(self.sasl_failures(phone)), 20)
        self.assertEqual([s.get("auth") for s in self.postfix_sessions(phone)],
                         ["0/10", "0/10"], self.postfix_sessions(phone))
        # ... and is logged as a failure, but counts once: no ban, no brute_force decision.
        failed = [a for a in gw.find(event="auth") if a["client"].startswith(phone + ":")]
        self.assertEqual([a["result"] for a in failed], ["failed"] * 20, failed)
        self.assertEqual(self.bans(gw), {})
        self.assertEqual(gw.find(event="ban"), [])
        self.assertEqual(gw.decisions(rule="brute_force"), [])

        # Exactly one: 4 new wrong passwords from the phone make 5, the 4th bans.
        c = self.greeted(gw, phone)
        for i in range(3):
            self.assertReply(self.auth(c, "%s-phone-%d" % (WRONG, i)), 535, "5.7.8")
        self.assertEqual(self.bans(gw), {})
        r = self.auth(c, "%s-phone-3" % WRONG)
        self.assertReply(r, 535, "5.7.8")
        self.assertTrue(c.is_closed(), "connection open after the banning failure")
        self.assertIn(phone, self.bans(gw))
        d = gw.wait_for_log(event="decision", rule="brute_force")
        self.assertTrue(d["client"].startswith(phone + ":"), d)
        self.assertEqual((d["verdict"], d["enforced"]), ("ban", True), d)
        self.assertIn("5 of 5 AUTH failures", d["reason"])
        self.assertEqual(d["reply"], r.raw.decode().rstrip("\r\n"), d)   # Postfix's 535

        # A guesser elsewhere: 5 different wrong passwords, 535 and close at the 5th.
        c = self.greeted(gw, guesser)
        for i in range(4):
            self.assertReply(self.auth(c, "%s-%d" % (WRONG, i)), 535, "5.7.8")
        self.assertNotIn(guesser, self.bans(gw))
        self.assertReply(self.auth(c, "%s-4" % WRONG), 535, "5.7.8")
        self.assertTrue(c.is_closed(), "connection open after the banning failure")
        ban = gw.wait_for_log(event="ban", ip=guesser)
        self.assertEqual((ban["action"], ban["duration_s"], ban["offense"]), ("ban", 3600, 1),
                         ban)
        self.assertEqual(sorted(self.bans(gw)), sorted([phone, guesser]))
        support.wait_until(lambda: len(self.mismatches(guesser)) == 5, 10,
                           message="Dovecot's 5 mismatches for the guesser")

        # Banned: 554 at connect, and the backend hears nothing of them any more.
        connects = self.backend_connects()
        self.assertRefusedAtConnect(guesser, host, port)
        self.assertRefusedAtConnect(phone, host, port)
        c = self.greeted(gw, bystander)                 # another host is not affected
        self.assertReply(self.auth(c, PASSWORD), 235)
        self.quit(gw, c)
        support.wait_until(lambda: self.postfix_sessions(bystander), 10,
                           message="Postfix's summary of the bystander's session")
        self.assertEqual(self.backend_connects(), connects + 1, self.pf.maillog()[-3000:])
        self.assertEqual(len(self.mismatches(phone)), 24)
        self.assertEqual(len(self.mismatches(guesser)), 5)
        self.assertEqual(self.postfix_sessions(bystander)[0].get("auth"), "1")

        self.assertEqual(gw.stop(), 0)
        for pw in (STALE, WRONG, PASSWORD):
            check_no_secret(gw, pw, LOGIN)

    def test_ipv6_ban_covers_the_prefix(self):
        if not support.ipv6_loopback_available():
            self.skipTest("no IPv6 loopback (::1 cannot be bound) on this machine")
        policy = self.policy({"max_failures": 5}, allow=("127.0.4.0/24", "::1"))
        port = support.free_port()
        policy["listeners"][0]["listen"] = "[::1]:%d" % port     # the backend stays IPv4
        gw = self.start_gateway(policy)

        # The IPv6 client reaches Postfix: XCLIENT ADDR=IPV6:::1, AUTH, a delivered message.
        msgid, body = message("from the IPv6 loopback")
        c = self.greeted(gw, "::1", "::1", port)
        self.assertReply(self.auth(c, PASSWORD), 235)
        self.send(c, LOGIN, "alice@example.net", body)
        self.quit(gw, c)
        m = self.delivered(msgid)
        received = [v for v in m["headers"].get_all("Received") or [] if "(Postfix)" in v]
        self.assertTrue(received and "[IPv6:::1]" in received[0], received)
        self.assertEqual(gw.find(event="error"), [])

        # 5 wrong passwords from ::1: the 5th bans its /64.
        c = self.greeted(gw, "::1", "::1", port)
        for i in range(4):
            self.assertReply(self.auth(c, "%s-v6-%d" % (WRONG, i)), 535, "5.7.8")
        self.assertReply(self.auth(c, "%s-v6-4" % WRONG), 535, "5.7.8")
        self.assertTrue(c.is_closed(), "connection open after the banning failure")
        bans = self.bans(gw)
        self.assertEqual(sorted(bans), ["::/64"], bans)
        ban = gw.wait_for_log(event="ban", action="ban")
        self.assertEqual(ban["ip"], "::/64", ban)
        listed = self.cli(gw, "bans", "list")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn("::/64", listed.stdout)
        self.assertRefusedAtConnect("::1", "::1", port)

        # Dovecot checked each of the 5, for the client's own address.
        support.wait_until(lambda: len(self.mismatches("::1")) == 5, 10,
                           message="Dovecot's 5 mismatches for ::1")
        self.assertEqual(len(self.sasl_failures("::1")), 5, self.pf.maillog()[-3000:])
        self.assertEqual([s.get("auth") for s in self.postfix_sessions("::1")], ["1", "0/5"])
        self.assertEqual(gw.stop(), 0)
        check_no_secret(gw, WRONG, LOGIN)


if __name__ == "__main__":
    unittest.main()
