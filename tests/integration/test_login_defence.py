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

The hijacked-account breaker (`submission.breaker`) and the login state kept in the state
file (`brute_force.state_file`), also against Postfix + Dovecot:

* distinct client addresses: the 6th address over `max_ips_per_hour: 5` gets 454 at AUTH
  (Postfix had accepted the password), the sessions already logged in get 451 at MAIL, a
  body in flight 451 at its end (Postfix never delivers it); the suspension is listed (GET
  /logins, `logins list`, /metrics), survives a restart and is lifted by `logins release`;
* distinct recipient domains: the RCPT that crosses `max_rcpt_domains_per_hour` gets 451
  and never reaches Postfix (its session summary counts the RCPTs), nor does the DATA;
* recipients Postfix refused (550): the one that crosses `max_rejected_rcpts_per_hour`
  suspends, the next RCPT (a real mailbox) gets 451;
* dry-run: everything is delivered, one `would_suspend` line, no suspension;
* per_login's lock and the owner's known-good address survive `kill -9` and a restart;
* no password, right or wrong, in any log line or in the state file.

Clients are bound to 127.0.4.0/24 (and ::1), and 127.0.5.0/24 for the breaker and the
login state, used by no other file here.
"""

import base64
import copy
import http.client
import json
import os
import re
import shutil
import signal
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
SUSPENDED = "Account suspended, contact the administrator"


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
            support.wait_until(lambda: self.postfix_sessions(ip), 10,
                               message="Postfix's summary of %s's session" % ip)
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
        # Postfix writes a session's summary when the gateway's backend connection closes.
        support.wait_until(lambda: len(self.postfix_sessions(phone)) >= 2, 10,
                           message="Postfix's summaries of both sessions")
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


# ==========================================================================
# The breaker (submission.breaker) and the login state in the state file
# ==========================================================================

class LoginStateTestCase(LoginDefenceTestCase):
    """A state file per test (brute_force.state_file), clients in 127.0.5.0/24, and the
    admin endpoint's view of the logins."""

    def setUp(self):
        self.statedir = support.make_tempdir("smtpgate-logins-")
        self.addCleanup(shutil.rmtree, self.statedir, True)
        self.state_file = os.path.join(self.statedir, "state.json")

    def state_policy(self, brute_force=None, breaker=None, mode=None):
        bf = {"state_file": self.state_file}
        bf.update(brute_force or {})
        policy = self.policy(bf, allow=("127.0.5.0/24",))
        if breaker is not None:
            policy["submission"]["breaker"] = breaker
        if mode is not None:
            policy["submission"]["mode"] = mode
        return policy

    def restart(self, gw, kill=False):
        """Stops gw (SIGTERM and a clean exit, or kill -9) and starts a gateway on the same
        policy: the same ports and state file."""
        if kill:
            gw.proc.kill()
            gw.proc.wait(timeout=10)
            self.assertEqual(gw.proc.returncode, -signal.SIGKILL)
        else:
            self.assertEqual(gw.stop(), 0)
        return self.start_gateway(copy.deepcopy(gw.policy))

    # ---------------------------------------------------------------- clients
    def logged_in(self, gw, source):
        c = self.greeted(gw, source)
        self.assertReply(self.auth(c, PASSWORD), 235)
        return c

    def assertSuspended(self, reply, at_auth=False):
        if at_auth:
            self.assertReply(reply, 454, "4.7.0", SUSPENDED)
        else:
            self.assertReply(reply, 451, "4.7.1", SUSPENDED)

    def not_delivered(self, msgid, seen=False):
        """Postfix never delivered the message, nor queued it for delivery (call after a
        later message was delivered). Its cleanup logs a Message-ID as the header streams
        in, so a body cut before its dot (seen=True) shows one, under a queue id that qmgr
        never took up ("QID: from=<...> (queue active)") and no agent delivered."""
        self.assertEqual([m["mailbox"] for m in self.pf.messages() if msgid in m["data"]], [])
        log = self.pf.maillog()
        qids = re.findall(r"\b(\w+): message-id=%s" % re.escape(msgid.decode()), log)
        self.assertEqual(len(qids), 1 if seen else 0, (qids, log[-3000:]))
        for qid in qids:
            self.assertNotRegex(log, r"\b%s: (from|to)=<" % qid)

    # ---------------------------------------------------------------- admin
    def logins(self, gw):
        status, body = self.admin(gw, "GET", "/logins")
        self.assertEqual(status, 200, body)
        return json.loads(body)["logins"]

    def metrics(self, gw):
        status, body = self.admin(gw, "GET", "/metrics")
        self.assertEqual(status, 200, body)
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    # ---------------------------------------------------------------- state file
    def state_text(self):
        try:
            with open(self.state_file) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def state_records(self):
        """The state file's records (a torn last line does not count)."""
        return [json.loads(l) for l in self.state_text().split("\n")[:-1] if l]

    def wait_for_record(self, key, **fields):
        """Wait until the journal holds a record {key: LOGIN, **fields} (written and
        fdatasync'ed by the journal's thread); return it."""
        def found():
            return [r for r in self.state_records()
                    if r.get(key) == LOGIN and all(r.get(k) == v for k, v in fields.items())]
        return support.wait_until(found, 10, message="a %s record in the state file" % key)[0]

    def assertNoSecrets(self, gateways, *passwords):
        """No password, nor its base64 or AUTH PLAIN form, in any log line of the gateways
        (stopped: every line is in) or in the state file."""
        state = self.state_text()
        self.assertTrue(state, "no state file")
        for pw in passwords:
            for gw in gateways:
                check_no_secret(gw, pw, LOGIN)
            check_no_secret(state, pw, LOGIN)


@unittest.skipUnless(support.have_postfix(), "needs root, Postfix and Dovecot")
class BreakerTest(LoginStateTestCase):

    def assertTripDecision(self, d, stage, reply, enforced=True):
        self.assertEqual((d["stage"], d["verdict"], d["enforced"], d.get("login")),
                         (stage, "tempfail", enforced, LOGIN), d)
        if reply is not None:
            self.assertEqual(d["reply"], reply.raw.decode().rstrip("\r\n"), d)

    def test_breaker_by_addresses_suspends_survives_restart_and_release(self):
        gw = self.start_gateway(self.state_policy(breaker={"max_ips_per_hour": 5}))
        addrs = ["127.0.5.%d" % (11 + i) for i in range(6)]
        first, sixth = addrs[:5], addrs[5]

        # Five addresses log in (five distinct ones: at the threshold, not over it).
        sessions = [self.logged_in(gw, ip) for ip in first]
        names = [support.client_address(c) for c in sessions]
        before_id, before = message("breaker ips before the trip")
        self.send(sessions[0], LOGIN, "alice@example.net", before)
        self.delivered(before_id)

        # A body in flight from the second.
        flight_id, flight = message("breaker ips body in flight")
        flight += b"".join(b"line %d of the body in flight\r\n" % i for i in range(50))
        c = sessions[1]
        self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 250)
        self.assertReply(c.command("RCPT TO:<alice@example.net>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(flight[:400])

        # The 6th address: Postfix accepts the password, the gateway refuses the login.
        six = self.greeted(gw, sixth)
        six_name = support.client_address(six)
        r6 = self.auth(six, PASSWORD)
        self.assertSuspended(r6, at_auth=True)
        s = gw.wait_for_log(event="suspend", action="suspend")
        self.assertEqual((s["login"], s["trigger"], s["value"], s["threshold"], s["enforced"]),
                         (LOGIN, "max_ips_per_hour", 6, 5, True), s)
        self.assertReply(six.command("MAIL FROM:<%s>" % LOGIN), 530)   # not logged in

        # The body in flight ends: 451, and Postfix never completes it.
        c.send(support.dot_stuff(flight[400:]) + b".\r\n")
        r_flight = c.read_reply()
        self.assertSuspended(r_flight)
        # The sessions logged in before the trip: 451 at MAIL (the RCPT after it: 503).
        r_mail = {}
        for i, c in enumerate(sessions):
            r = c.command("MAIL FROM:<%s>" % LOGIN)
            self.assertSuspended(r)
            r_mail[names[i]] = r
            self.assertReply(c.command("RCPT TO:<alice@example.net>"), 503)
        for c in sessions + [six]:
            self.quit(gw, c)

        # The gateway's decisions: the trip at AUTH, the body, each MAIL.
        ds = gw.decisions(rule="submission.breaker")
        self.assertEqual(sorted((d["client"], d["stage"]) for d in ds),
                         sorted([(six_name, "auth"), (names[1], "data")]
                                + [(n, "mail") for n in names]), ds)
        for d in ds:
            reply = {"auth": r6, "data": r_flight}.get(d["stage"]) or r_mail[d["client"]]
            self.assertTripDecision(d, d["stage"], reply)
        auth6 = [a for a in gw.find(event="auth") if a["client"] == six_name]
        self.assertEqual([(a["login"], a["result"]) for a in auth6], [(LOGIN, "refused")], auth6)

        # What Postfix saw: the 6th session authenticated (Dovecot said yes) and was then
        # dropped; the body in flight was cut before its dot; after the trip no MAIL.
        support.wait_until(lambda: all(self.postfix_sessions(ip) for ip in addrs), 10,
                           message="Postfix's summaries of the six sessions")
        s6 = self.postfix_sessions(sixth)
        self.assertEqual(len(s6), 1, s6)
        self.assertEqual(s6[0].get("auth"), "1", s6)
        self.assertNotIn("mail", s6[0], s6)
        self.assertNotIn("quit", s6[0], s6)            # dropped, not ended
        self.assertIn("lost connection after AUTH from unknown[%s]" % sixth, self.pf.maillog())
        self.assertEqual([p.get("mail") for p in self.postfix_sessions(first[0])], ["1"])
        self.assertEqual([p.get("data") for p in self.postfix_sessions(first[1])], ["0/1"],
                         self.postfix_sessions(first[1]))
        self.assertRegex(self.pf.maillog(), r"lost connection after DATA \(\d+ bytes\) from "
                         r"unknown\[%s\]" % re.escape(first[1]))
        for ip in first[2:]:
            self.assertEqual([(p.get("auth"), p.get("mail")) for p in self.postfix_sessions(ip)],
                             [("1", None)], ip)

        # The admin's view: GET /logins, `logins list`, the metrics.
        listed = self.logins(gw)
        self.assertEqual(len(listed), 1, listed)
        self.assertEqual({k: v for k, v in listed[0].items() if k != "since"},
                         {"login": LOGIN, "state": "suspended", "until": None,
                          "trigger": "submission.breaker.max_ips_per_hour", "value": 6,
                          "threshold": 5}, listed)
        self.assertRegex(listed[0]["since"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        table = self.cli(gw, "logins", "list")
        self.assertEqual(table.returncode, 0, table.stderr)
        row = [l for l in table.stdout.splitlines() if l.startswith(LOGIN)]
        self.assertEqual(len(row), 1, table.stdout)
        for word in ("suspended", listed[0]["since"], "until released",
                     "6 > 5 (submission.breaker.max_ips_per_hour)"):
            self.assertIn(word, row[0])
        m = self.metrics(gw)
        self.assertEqual((m.get("smtpgate_logins_suspended"), m.get("smtpgate_logins_locked")),
                         (1.0, 0.0), m)
        rec = self.wait_for_record("suspend")
        self.assertEqual((rec["trigger"], rec["value"], rec["threshold"]),
                         ("max_ips_per_hour", 6, 5), rec)

        # A restart (same state file): still suspended, at AUTH from an address it used.
        gw1, gw = gw, self.restart(gw)
        self.assertEqual(self.logins(gw), listed)
        self.assertEqual(self.metrics(gw).get("smtpgate_logins_suspended"), 1.0)
        c = self.greeted(gw, first[0])
        self.assertSuspended(self.auth(c, PASSWORD), at_auth=True)
        self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 530)
        self.quit(gw, c)
        d = gw.wait_for_log(event="decision", rule="submission.breaker")
        self.assertEqual((d["stage"], d["verdict"], d["enforced"]), ("auth", "tempfail", True), d)
        self.assertIn("suspended", d["reason"])
        support.wait_until(lambda: len(self.postfix_sessions(first[0])) == 2, 10,
                           message="Postfix's summary of the session after the restart")
        self.assertNotIn("mail", self.postfix_sessions(first[0])[1])

        # Released by the admin: the login sends again and Postfix delivers.
        released = self.cli(gw, "logins", "release", LOGIN)
        self.assertEqual(released.returncode, 0, released.stderr)
        self.assertEqual(released.stdout.strip(), "released %s" % LOGIN)
        rel = gw.wait_for_log(event="suspend", action="release")
        self.assertEqual(rel["login"], LOGIN, rel)
        self.assertEqual(self.logins(gw), [])
        self.assertEqual(self.metrics(gw).get("smtpgate_logins_suspended"), 0.0)
        self.wait_for_record("login_release")
        after_id, after = message("breaker ips after the release")
        c = self.logged_in(gw, first[0])
        self.send(c, LOGIN, "alice@example.net", after)
        self.quit(gw, c)
        self.delivered(after_id)
        self.not_delivered(flight_id, seen=True)
        again = self.cli(gw, "logins", "release", LOGIN)     # nothing left to release
        self.assertNotEqual(again.returncode, 0, again.stdout)

        # The release is journaled too: after kill -9 the login is still free.
        gw2, gw = gw, self.restart(gw, kill=True)
        self.assertEqual(self.logins(gw), [])
        c = self.logged_in(gw, first[2])
        self.quit(gw, c)
        self.assertEqual(gw.stop(), 0)
        for g in (gw2, gw):
            self.assertEqual(g.find(event="suspend", action="suspend"), [])
        self.assertEqual(len(gw1.find(event="suspend")), 1, gw1.find(event="suspend"))
        self.assertNoSecrets([gw1, gw2, gw], PASSWORD)

    def test_breaker_by_recipient_domains(self):
        gw = self.start_gateway(self.state_policy(breaker={"max_rcpt_domains_per_hour": 3}))
        ip, other = "127.0.5.31", "127.0.5.32"
        c = self.logged_in(gw, ip)

        # Two domains: example.net (delivered) and one.example.org (relayed after AUTH,
        # discarded by Postfix, which logs the recipient).
        first_id, first = message("domains first", to="alice@example.net")
        self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 250)
        self.assertReply(c.command("RCPT TO:<alice@example.net>"), 250)
        self.assertReply(c.command("RCPT TO:<friend@one.example.org>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(support.dot_stuff(first) + b".\r\n")
        self.assertReply(c.read_reply(), 250)
        self.delivered(first_id)
        support.wait_until(lambda: "to=<friend@one.example.org>" in self.pf.maillog(), 10,
                           message="Postfix relaying (discarding) friend@one.example.org")

        # The second message: example.net again, the 3rd domain, then the 4th: 451.
        second_id, second = message("domains second", to="bob@example.net")
        self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 250)
        self.assertReply(c.command("RCPT TO:<bob@example.net>"), 250)
        self.assertReply(c.command("RCPT TO:<friend@two.example.org>"), 250)
        r = c.command("RCPT TO:<friend@three.example.org>")
        self.assertSuspended(r)
        s = gw.wait_for_log(event="suspend", action="suspend")
        self.assertEqual((s["login"], s["trigger"], s["value"], s["threshold"], s["enforced"]),
                         (LOGIN, "max_rcpt_domains_per_hour", 4, 3, True), s)
        self.assertSuspended(c.command("DATA"))
        self.assertReply(c.command("RSET"), 250)
        self.assertSuspended(c.command("MAIL FROM:<%s>" % LOGIN))
        name = support.client_address(c)
        self.quit(gw, c)
        # Another address: Postfix accepts the password, the gateway refuses the login.
        c = self.greeted(gw, other)
        self.assertSuspended(self.auth(c, PASSWORD), at_auth=True)
        self.quit(gw, c)

        ds = [d for d in gw.decisions(rule="submission.breaker") if d["client"] == name]
        self.assertEqual([(d["stage"], d.get("rcpt")) for d in ds],
                         [("rcpt", "friend@three.example.org"), ("data", None), ("mail", None)],
                         ds)
        self.assertTripDecision(ds[0], "rcpt", r)

        # Postfix: 2 MAIL and 4 RCPT in the session (not the 5th), one DATA; the 4th
        # domain appears nowhere in its log, the second message was never queued.
        support.wait_until(lambda: self.postfix_sessions(ip), 10,
                           message="Postfix's summary of the session")
        summary = self.postfix_sessions(ip)
        self.assertEqual(len(summary), 1, summary)
        self.assertEqual((summary[0].get("mail"), summary[0].get("rcpt"),
                          summary[0].get("data")), ("2", "4", "1"), summary)
        self.assertNotIn("three.example.org", self.pf.maillog())
        support.wait_until(lambda: self.postfix_sessions(other), 10,
                           message="Postfix's summary of the other address's session")
        self.assertEqual([(p.get("auth"), p.get("mail")) for p in self.postfix_sessions(other)],
                         [("1", None)])
        self.assertEqual(self.logins(gw)[0]["trigger"],
                         "submission.breaker.max_rcpt_domains_per_hour")
        self.assertEqual(gw.stop(), 0)
        self.not_delivered(second_id)
        self.assertNoSecrets([gw], PASSWORD)

    def test_breaker_by_refused_recipients(self):
        gw = self.start_gateway(self.state_policy(breaker={"max_rejected_rcpts_per_hour": 3}))
        ip = "127.0.5.41"
        msgid, body = message("refused recipients")
        c = self.logged_in(gw, ip)
        self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 250)
        for i in range(3):
            self.assertReply(c.command("RCPT TO:<nobody-%d@example.com>" % i), 550, "5.1.1")
        self.assertReply(c.command("RCPT TO:<alice@example.net>"), 250)   # not counted
        self.assertEqual(gw.find(event="suspend"), [])
        # The 4th refusal (Postfix's 550, passed on) suspends the login ...
        r_trip = c.command("RCPT TO:<nobody-3@example.com>")
        self.assertReply(r_trip, 550, "5.1.1")
        s = gw.wait_for_log(event="suspend", action="suspend")
        self.assertEqual((s["login"], s["trigger"], s["value"], s["threshold"], s["enforced"]),
                         (LOGIN, "max_rejected_rcpts_per_hour", 4, 3, True), s)
        # ... and the next RCPT, to a real mailbox, gets 451; so does DATA.
        r_rcpt = c.command("RCPT TO:<bob@example.net>")
        self.assertSuspended(r_rcpt)
        r_data = c.command("DATA")
        self.assertSuspended(r_data)
        name = support.client_address(c)
        self.quit(gw, c)

        ds = [d for d in gw.decisions(rule="submission.breaker") if d["client"] == name]
        self.assertEqual([(d["stage"], d.get("rcpt")) for d in ds[-2:]],
                         [("rcpt", "bob@example.net"), ("data", None)], ds)
        self.assertTripDecision(ds[-2], "rcpt", r_rcpt)
        self.assertTripDecision(ds[-1], "data", r_data)

        # Postfix: 5 RCPT (1 accepted), the 4 refusals logged, no DATA, nothing queued.
        support.wait_until(lambda: self.postfix_sessions(ip), 10,
                           message="Postfix's summary of the session")
        summary = self.postfix_sessions(ip)
        self.assertEqual([(p.get("mail"), p.get("rcpt"), p.get("data")) for p in summary],
                         [("1", "1/5", None)], summary)
        rejects = re.findall(r"reject: RCPT from unknown\[%s\]: 550 5\.1\.1 <([^>]*)>"
                             % re.escape(ip), self.pf.maillog())
        self.assertEqual(rejects, ["nobody-%d@example.com" % i for i in range(4)])
        self.assertNotIn("bob@example.net", self.pf.maillog())
        self.assertEqual([l["state"] for l in self.logins(gw)], ["suspended"])
        self.assertEqual(gw.stop(), 0)
        self.not_delivered(msgid)
        self.assertNoSecrets([gw], PASSWORD)

        # The decision of the trip names the reply the client got at that RCPT (SPEC §3:
        # "the SMTP reply sent"), Postfix's 550 (the 451 is for what comes next), and the
        # transaction's sender, like every other decision at RCPT.
        self.assertEqual([(d["stage"], d.get("rcpt")) for d in ds[:-2]],
                         [("rcpt", "nobody-3@example.com")], ds)
        self.assertTripDecision(ds[0], "rcpt", r_trip)
        self.assertEqual(ds[0].get("from"), LOGIN, ds[0])

    def test_breaker_dry_run_only_logs(self):
        gw = self.start_gateway(self.state_policy(breaker={"max_ips_per_hour": 5},
                                                  mode="dry-run"))
        addrs = ["127.0.5.%d" % (51 + i) for i in range(7)]
        sessions = [self.logged_in(gw, ip) for ip in addrs]   # the 6th and 7th too
        w = gw.wait_for_log(event="suspend", action="would_suspend")
        self.assertEqual((w["login"], w["trigger"], w["value"], w["threshold"], w["enforced"]),
                         (LOGIN, "max_ips_per_hour", 6, 5, False), w)
        ids = []
        for i, c in enumerate(sessions):
            msgid, body = message("dry run from %d" % i)
            ids.append(msgid)
            self.send(c, LOGIN, "alice@example.net", body)
        for c in sessions:
            self.quit(gw, c)
        for msgid in ids:
            self.delivered(msgid)
        self.assertEqual(self.logins(gw), [])
        m = self.metrics(gw)
        self.assertEqual((m.get("smtpgate_logins_suspended"), m.get("smtpgate_logins_locked")),
                         (0.0, 0.0), m)
        self.assertEqual(gw.stop(), 0)
        suspends = gw.find(event="suspend")
        self.assertEqual([s["action"] for s in suspends], ["would_suspend"], suspends)
        # A decision (not enforced) for each AUTH over the threshold: the 6th and 7th.
        ds = gw.decisions(rule="submission.breaker")
        self.assertEqual(sorted((d["client"].rsplit(":", 1)[0], d["stage"], d["enforced"])
                                for d in ds),
                         [(ip, "auth", False) for ip in addrs[5:]], ds)
        self.assertNotIn('"suspend"', self.state_text())
        self.assertNoSecrets([gw], PASSWORD)


@unittest.skipUnless(support.have_postfix(), "needs root, Postfix and Dovecot")
class LoginStatePersistenceTest(LoginStateTestCase):

    def test_lock_and_known_good_address_survive_kill9_and_restart(self):
        gw = self.start_gateway(self.state_policy(
            {"max_failures": 5, "per_login": {"max_failures": 4, "lock": "1h"}}))
        owner, stranger = "127.0.5.70", "127.0.5.79"
        guessers = ["127.0.5.%d" % (71 + i) for i in range(4)]

        c = self.logged_in(gw, owner)
        self.quit(gw, c)
        for i, ip in enumerate(guessers):
            c = self.greeted(gw, ip)
            self.assertReply(self.auth(c, "%s-%d" % (WRONG, i)), 535, "5.7.8")
            self.quit(gw, c)
        lock = gw.wait_for_log(event="login_lock", login=LOGIN)
        self.assertEqual(lock["failures"], 4, lock)
        # Both records written and synced by the journal's thread; then kill -9.
        self.assertEqual(self.wait_for_record("known_good")["ip"], owner)
        self.assertEqual(self.wait_for_record("login_lock")["failures"], 4)
        # What a login record holds: no password, no hash of one.
        self.assertEqual(sorted(sorted(r) for r in self.state_records() if "v" not in r),
                         [["at", "ip", "known_good"], ["failures", "login_lock", "until"]],
                         self.state_text())
        gateways = [gw]

        for kill in (True, False):
            gw = self.restart(gw, kill=kill)
            gateways.append(gw)
            listed = self.logins(gw)
            self.assertEqual([(l["login"], l["state"], l["failures"]) for l in listed],
                             [(LOGIN, "locked", 4)], listed)
            self.assertEqual(self.metrics(gw).get("smtpgate_logins_locked"), 1.0)
            # The stranger, with the right password: refused by the gateway itself.
            c = self.greeted(gw, stranger)
            name = support.client_address(c)
            self.assertReply(self.auth(c, PASSWORD), 535, "5.7.8")
            self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 530)
            self.quit(gw, c)
            d = [d for d in gw.decisions(rule="brute_force.login") if d["client"] == name]
            self.assertEqual(len(d), 1, d)
            self.assertIn("brute_force.per_login", d[0]["reason"])
            # The owner's address is still known good: it logs in and Postfix delivers.
            msgid, body = message("owner after restart kill=%s" % kill)
            c = self.logged_in(gw, owner)
            self.send(c, LOGIN, "alice@example.net", body)
            self.quit(gw, c)
            self.delivered(msgid)

        # The stranger never reached Postfix or Dovecot; the owner did, each time.
        support.wait_until(lambda: len(self.postfix_sessions(owner)) == 3, 10,
                           message="Postfix's summaries of the owner's 3 sessions")
        self.assertEqual([p.get("auth") for p in self.postfix_sessions(owner)], ["1"] * 3)
        self.assertNotIn("[%s]" % stranger, self.pf.maillog())
        self.assertNotIn(",%s)" % stranger, self.pf.dovecot_log())
        self.assertEqual(sorted(ip for ip in self.mismatches() if ip.startswith("127.0.5.")),
                         sorted(guessers), self.pf.dovecot_log())
        self.assertEqual(gw.stop(), 0)
        self.assertNoSecrets(gateways, PASSWORD, WRONG,
                             *["%s-%d" % (WRONG, i) for i in range(len(guessers))])


if __name__ == "__main__":
    unittest.main()
