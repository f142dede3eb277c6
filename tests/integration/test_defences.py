"""The gateway's defences (SPEC §3 brute force, §4 brute_force / connections /
submission.limits / admin, §5 bans / run, §6 metrics and admin endpoint):

* brute-force bans: counting, the closing 535, 554 at connect, persistence
  across `kill -9`, the `smtpgate bans` CLI, escalation, never_ban, mx.auth
  "ban", a corrupt state file, dry-run (`would_ban`);
* connection caps (max_per_ip, max_total) and the per-IP connection rate;
* sending limits of a login (messages/recipients per hour, max_recipients)
  and mx.max_recipients;
* the admin endpoint (/metrics, /bans, DELETE /bans/IP, /reload, /healthz);
* SIGHUP (broken and good policies) and SIGTERM with a message in flight;
* passwords never in logs.

Every gateway here has its own state file and admin port; clients are bound to
127.0.0.30 and up (each test uses its own addresses) so that nothing here
collides with the other integration tests.
"""

import base64
import copy
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import unittest

import support
from support import IntegrationTestCase, check_no_secret

HOSTNAME = "gw.example.test"
LOGIN = "user@example.com"
PASSWORD = "Def3nce-Pa55-9c1b"          # distinctive, for check_no_secret
WRONG = "Wr0ng-Guess-4a7d"              # the guesser's password
OTHER_LOGIN = "cms@example.com"
OTHER_PASSWORD = "Cms-S3cret-e5f0"


def plain_blob(user, password):
    return base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())


def process_state(pid):
    """The state letter of /proc/PID/stat ("T" once SIGSTOP took effect)."""
    with open("/proc/%d/stat" % pid) as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def message(subject, sender=LOGIN, to="someone@other.example"):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@example.com>\r\n\r\n"
            "Body of %s.\r\n" % (sender, to, subject, re.sub(r"\W", "-", subject), subject)
            ).encode()


def parse_metrics(text):
    """Prometheus text -> {(name, ((label, value), ...)): float}."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$", line)
        if not m:
            raise AssertionError("malformed metrics line %r" % line)
        labels = tuple(sorted(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                         m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(ms, name, **labels):
    return ms.get((name, tuple(sorted(labels.items()))), 0.0)


def metric_sum(ms, name):
    return sum(v for (n, _), v in ms.items() if n == name)


class DefenceTestCase(IntegrationTestCase):
    """A recording backend with two users, a state dir for ban files, and a
    policy builder with mx + submission listeners and an admin endpoint."""

    def setUp(self):
        self.backend = self.start_backend(users={LOGIN: PASSWORD, OTHER_LOGIN: OTHER_PASSWORD})
        self.statedir = support.make_tempdir("smtpgate-bans-")
        self.addCleanup(shutil.rmtree, self.statedir, True)
        self.state_file = os.path.join(self.statedir, "bans.json")

    def policy(self, brute_force=None, connections=None, limits=None, mx=None,
               listeners=(("mx", "mx"), ("submission", "submission")), submission=None,
               backend_address=None, **extra):
        bf = {"max_failures": 5, "window": "10m", "ban": "1h", "ban_multiplier": 4,
              "max_ban": "30d", "state_file": self.state_file}
        bf.update(brute_force or {})
        submission = dict(submission or {"access": {"default": "deny",
                                                    "allow": ["127.0.0.0/8"]}})
        submission["require_tls"] = False
        if limits is not None:
            submission["limits"] = limits
        sections = dict(
            submission=submission,
            brute_force=bf,
            admin={"listen": "127.0.0.1:%d" % support.free_port()},
            timeouts={"drain": "10s"},
        )
        if connections is not None:
            sections["connections"] = connections
        if mx is not None:
            sections["mx"] = mx
        sections.update(extra)
        return support.gateway_policy(
            backend_address or self.backend.address, listeners=list(listeners),
            hostname=HOSTNAME, local_domains=["example.com", "example.net"], **sections)

    # ---------------------------------------------------------------- clients
    def connect(self, gw, source, listener="submission", timeout=10.0):
        return self.raw_client(gw, listener, source=source, timeout=timeout)

    def greeted(self, gw, source, listener="submission"):
        """A client past the 220 greeting and EHLO."""
        c = self.connect(gw, source, listener)
        self.assertReply(c.greeting(), 220)
        self.assertReply(c.ehlo(), 250)
        return c

    def assertRefusedAtConnect(self, gw, source, listener="submission"):
        """554 5.7.1 <hostname> access denied at connect, then close."""
        c = self.connect(gw, source, listener)
        r = c.greeting()
        self.assertReply(r, 554, "5.7.1", "access denied")
        self.assertIn(HOSTNAME, r.text)
        self.assertTrue(c.is_closed(), "connection stays open after 554 at connect")
        return r

    def bad_auth(self, c, user=LOGIN, password=None):
        # A guesser tries a new password each time (brute_force.distinct_passwords counts a
        # repeated one once); every one starts with WRONG, so a leak of any is caught.
        if password is None:
            self._guesses = getattr(self, "_guesses", 0) + 1
            password = "%s-%d" % (WRONG, self._guesses)
        return c.command(b"AUTH PLAIN " + plain_blob(user, password))

    def login(self, gw, source, user=LOGIN, password=PASSWORD):
        c = self.greeted(gw, source)
        self.assertReply(c.command(b"AUTH PLAIN " + plain_blob(user, password)), 235)
        return c

    def send_message(self, c, sender, rcpts, body):
        """MAIL, RCPTs, DATA, body; returns the list of replies."""
        replies = [c.command("MAIL FROM:<%s>" % sender)]
        if replies[0].code != 250:
            return replies
        for r in rcpts:
            replies.append(c.command("RCPT TO:<%s>" % r))
        d = c.command("DATA")
        replies.append(d)
        if d.code != 354:
            return replies
        c.send(support.dot_stuff(body) + b".\r\n")
        replies.append(c.read_reply())
        return replies

    # ---------------------------------------------------------------- admin
    def admin(self, gw, method, path):
        """(status, content type, body text) from the admin endpoint."""
        host, port = support.parse_listen(gw.policy["admin"]["listen"])
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request(method, path)
            r = conn.getresponse()
            return r.status, r.getheader("Content-Type") or "", r.read().decode()
        finally:
            conn.close()

    def bans(self, gw):
        status, ctype, body = self.admin(gw, "GET", "/bans")
        self.assertEqual(status, 200, body)
        self.assertIn("json", ctype)
        doc = json.loads(body)
        return {b["ip"]: b for b in doc["bans"]}

    def metrics(self, gw):
        host, port = support.parse_listen(gw.policy["admin"]["listen"])
        out = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "-", "-w",
                              "\n%{http_code}", "http://%s:%d/metrics" % (host, port)],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        body, _, code = out.stdout.rpartition("\n")
        self.assertEqual(code, "200", out.stdout)
        return body

    def bans_cli(self, *args):
        return subprocess.run([support.gateway_binary(), "bans"] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=20)

    # ---------------------------------------------------------------- logs
    def wait_for_count(self, gw, n, timeout=10.0, **fields):
        return support.wait_until(lambda: len(gw.find(**fields)) >= n, timeout,
                                  message="%d log line(s) with %r" % (n, fields))

    def assertLoggedReply(self, gw, ip, rule, reply):
        """The decision log line of `rule` for client ip names the reply the
        client actually got (SPEC §3: a decision carries the SMTP reply sent)."""
        def logged():
            return [d for d in gw.decisions(rule=rule)
                    if d.get("client", "").startswith(ip + ":")]
        # Log lines reach the sink from the writer thread, maybe just after the reply.
        lines = support.wait_until(logged, 5, message="a %s decision for %s" % (rule, ip))
        sent = reply.raw.decode("utf-8", "replace").splitlines()[0]
        self.assertEqual(lines[-1].get("reply"), sent,
                         "decision %s logs a reply the client never got: %r"
                         % (rule, lines[-1]))

    def read_state(self):
        """The state file's journal replayed: {"bans": [ban records in force]}."""
        with open(self.state_file) as f:
            lines = f.read().split("\n")[:-1]     # a torn last record does not count
        self.assertEqual(json.loads(lines[0]), {"v": 2})
        bans = {}
        for line in lines[1:]:
            rec = json.loads(line)
            if "ban" in rec:
                bans[rec["ban"]] = dict(rec, ip=rec["ban"])
            elif "unban" in rec:
                bans.pop(rec["unban"], None)
        return {"bans": list(bans.values())}

    def state_ips(self):
        try:
            doc = self.read_state()
        except FileNotFoundError:
            return set()
        return {b["ip"] for b in doc.get("bans", [])}

    def ban_ip(self, gw, source, failures, listener="submission"):
        """`failures` wrong passwords from source (one session); the last must
        get 535 and a close. Returns the last reply."""
        c = self.greeted(gw, source, listener)
        for i in range(failures - 1):
            self.assertReply(self.bad_auth(c), 535, "5.7.8")
        r = self.bad_auth(c)
        self.assertReply(r, 535, "5.7.8")
        self.assertTrue(c.is_closed(), "connection open after the banning failure")
        return r


# ==========================================================================
# Brute force
# ==========================================================================

class BruteForceTest(DefenceTestCase):

    def test_fifth_wrong_password_bans(self):
        ip, bystander = "127.0.0.30", "127.0.0.31"
        gw = self.start_gateway(self.policy())
        # three guesses in one session, each refused, the session goes on
        c = self.greeted(gw, ip)
        for _ in range(3):
            self.assertReply(self.bad_auth(c), 535, "5.7.8")
        self.assertReply(c.command("NOOP"), 250)
        self.assertReply(c.command("QUIT"), 221)
        c.close()
        # a new session: the fourth is refused, the fifth bans and closes
        c = self.greeted(gw, ip)
        self.assertReply(self.bad_auth(c), 535, "5.7.8")
        self.assertEqual(self.state_ips(), set())
        r = self.bad_auth(c)
        self.assertReply(r, 535, "5.7.8")
        # written to the state file before the reply (README: synchronously)
        self.assertIn(ip, self.state_ips(), "ban not in the state file when the 535 arrived")
        self.assertTrue(c.is_closed(), "connection open after the banning failure")
        self.assertLoggedReply(gw, ip, "brute_force", r)

        backend_conns = len(self.backend.connections())
        auth_lines = [l for l in self.backend.commands() if l.upper().startswith("AUTH")]
        self.assertEqual(len(auth_lines), 5, self.backend.commands())

        # the next connection: 554 at connect, costs the backend nothing
        self.assertRefusedAtConnect(gw, ip)
        self.assertRefusedAtConnect(gw, ip, "mx")
        time.sleep(0.2)
        self.assertEqual(len(self.backend.connections()), backend_conns)
        self.assertEqual(len([l for l in self.backend.commands()
                              if l.upper().startswith("AUTH")]), 5)

        # a different host is not affected
        c = self.greeted(gw, bystander)
        self.assertReply(c.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD)), 235)

        # logs: the ban, the decision that made it, the refusal at connect
        ban = gw.wait_for_log(event="ban", ip=ip)
        self.assertEqual(ban.get("action"), "ban", ban)
        self.assertIs(ban.get("enforced"), True, ban)
        self.assertEqual(ban.get("duration_s"), 3600, ban)
        self.assertRegex(ban.get("until", ""), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ban)
        self.assertEqual(ban.get("offense"), 1, ban)
        self.assertTrue(ban.get("reason"), ban)
        d = gw.wait_for_log(event="decision", rule="brute_force")
        self.assertEqual((d.get("stage"), d.get("verdict"), d.get("enforced")),
                         ("auth", "ban", True), d)
        d = gw.wait_for_log(event="decision", rule="ban")
        self.assertEqual((d.get("stage"), d.get("verdict")), ("connect", "reject"), d)
        self.assertTrue(d.get("client", "").startswith(ip + ":"), d)
        failed = [a for a in gw.find(event="auth", result="failed")
                  if a.get("client", "").startswith(ip + ":")]
        self.assertEqual(len(failed), 5, failed)

        # the admin view
        b = self.bans(gw)[ip]
        self.assertEqual(set(b), {"ip", "since", "until", "remaining_s", "offense", "reason"}, b)
        self.assertEqual(b["until"] - b["since"], 3600, b)
        self.assertTrue(3590 <= b["remaining_s"] <= 3600, b)
        self.assertEqual(b["offense"], 1, b)
        self.assertNotIn(bystander, self.bans(gw))
        self.assertEqual(gw.stop(), 0)                  # every log line is in now
        check_no_secret(gw, WRONG, LOGIN)
        check_no_secret(gw, PASSWORD, LOGIN)

    def test_access_refusals_count_toward_a_ban_when_asked(self):
        # A bot hammering a port it may not use: with count_access_refusals, its refusals
        # count like failed logins; the 3rd bans it, and from then on the ban refuses it.
        ip = "127.0.0.61"
        gw = self.start_gateway(self.policy(
            brute_force={"max_failures": 3, "count_access_refusals": True},
            mx={"access": {"default": "allow", "deny": [ip]}}))
        for _ in range(3):
            self.assertRefusedAtConnect(gw, ip, "mx")
        self.assertIn(ip, self.bans(gw))
        ban = gw.wait_for_log(event="ban", ip=ip)
        self.assertEqual(ban["action"], "ban", ban)
        self.assertRefusedAtConnect(gw, ip, "mx")
        gw.wait_for_log(event="decision", rule="ban")
        closes = [o["state"] for o in gw.find(event="session_close") if o["client"].startswith(ip + ":")]
        self.assertIn("banned", closes)
        # Off by default: another address refused as often is not banned.
        other = "127.0.0.62"
        gw2 = self.start_gateway(self.policy(
            brute_force={"max_failures": 3},
            mx={"access": {"default": "allow", "deny": [other]}}))
        for _ in range(4):
            self.assertRefusedAtConnect(gw2, other, "mx")
        self.assertNotIn(other, self.bans(gw2))

    def test_bans_add_and_the_table(self):
        ip = "127.0.0.63"
        gw = self.start_gateway(self.policy(brute_force={"never_ban": ["127.0.0.64"]}))
        out = self.bans_cli("add", ip, "--for", "2h", "--reason", "seen in the firewall log",
                            "-c", gw.policy_path)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertRegex(out.stdout, r"^banned 127\.0\.0\.63 until \d{4}-\d\d-\d\dT.*Z \(2h\)$")
        self.assertRefusedAtConnect(gw, ip)
        ban = gw.wait_for_log(event="ban", ip=ip)
        self.assertEqual((ban["duration_s"], ban["reason"]),
                         (7200, "admin: seen in the firewall log"), ban)
        self.assertIn(ip, self.state_ips())          # the journal has it: it survives a restart
        table = self.bans_cli("list", "-c", gw.policy_path)
        self.assertEqual(table.returncode, 0, table.stderr)
        lines = table.stdout.splitlines()
        self.assertTrue(lines[0].startswith("IP "), lines)
        row = [l for l in lines if l.startswith(ip)]
        self.assertEqual(len(row), 1, lines)
        self.assertIn("seen in the firewall log", row[0])
        self.assertRegex(row[0], r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z")
        raw = self.bans_cli("list", "--json", "-c", gw.policy_path)
        self.assertIn(ip, json.loads(raw.stdout)["bans"][0]["ip"])
        # A never_ban address cannot be banned by hand either (the ban would not hold).
        refused = self.bans_cli("add", "127.0.0.64", "-c", gw.policy_path)
        self.assertEqual(refused.returncode, 1, refused.stdout)
        self.assertIn("never_ban", refused.stderr)
        bad = self.bans_cli("add", ip, "--for", "soon", "-c", gw.policy_path)
        self.assertEqual(bad.returncode, 1)

    def test_a_stale_password_counts_once_distinct_ones_ban(self):
        # A phone retrying its old saved password: 20 attempts, one failure, no ban.
        ip = "127.0.0.65"
        gw = self.start_gateway(self.policy(brute_force={"max_failures": 3}))
        c = self.greeted(gw, ip)
        for _ in range(20):
            self.assertReply(self.bad_auth(c, password="0ld-Saved-pw"), 535)
        self.assertReply(c.command("NOOP"), 250)
        self.assertNotIn(ip, self.bans(gw))
        # A guesser: three different wrong passwords, the ban.
        guesser = "127.0.0.66"
        g = self.greeted(gw, guesser)
        for pw in ("guess-one", "guess-two"):
            self.assertReply(self.bad_auth(g, password=pw), 535)
        self.assertReply(self.bad_auth(g, password="guess-three"), 535)
        self.assertTrue(g.is_closed())
        self.assertIn(guesser, self.bans(gw))
        self.assertEqual(gw.stop(), 0)                  # every log line is in now
        # No password, and nothing that could be a hash of one, in the logs or the state file.
        with open(self.state_file, "rb") as f:
            state = f.read().decode("utf-8", "replace")
        for text in (gw.text(), state):
            for pw in ("0ld-Saved-pw", "guess-one", "guess-two", "guess-three", PASSWORD):
                self.assertNotIn(pw, text)
            self.assertIsNone(re.search(r"[0-9a-fA-F]{16,}", text.replace("-", "")),
                              re.search(r".{40}[0-9a-fA-F]{16,}.{10}", text.replace("-", "")))

    def test_ipv6_bans_cover_the_prefix(self):
        if not support.ipv6_loopback_available():
            self.skipTest("no IPv6 loopback on this machine")
        policy = self.policy(brute_force={"max_failures": 3},
                             listeners=(("mx", "mx"), ("submission", "submission")))
        port = support.free_port()
        policy["listeners"][1]["listen"] = "[::1]:%d" % port
        policy["submission"]["access"] = {"default": "allow"}
        gw = self.start_gateway(policy)
        c = support.RawClient("::1", port, "::1", 10.0)
        self.addCleanup(c.close)
        self.assertReply(c.greeting(), 220)
        self.assertReply(c.ehlo(), 250)
        for _ in range(3):
            self.assertReply(self.bad_auth(c), 535)
        self.assertTrue(c.is_closed())
        self.assertIn("::/64", self.bans(gw))          # the client's /64, shown as such
        ban = gw.wait_for_log(event="ban", action="ban")
        self.assertEqual(ban["ip"], "::/64", ban)
        again = support.RawClient("::1", port, "::1", 10.0)
        self.addCleanup(again.close)
        self.assertReply(again.greeting(), 554)
        out = self.bans_cli("unban", "::1", "-c", gw.policy_path)   # an address in it
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(self.bans(gw), {})

    def test_spread_guessing_locks_the_login_for_strangers_only(self):
        # 30 addresses each fail once on one login (each stays far below max_failures); the
        # 10th locks it. The owner's address, where it logged in before, still gets in; a new
        # address gets 535 from the gateway and the backend never sees its AUTH.
        gw = self.start_gateway(self.policy(
            brute_force={"max_failures": 5, "per_login": {"max_failures": 10, "lock": "1h"}},
            submission={"access": {"default": "allow"}}))
        owner = "127.0.1.200"
        self.login(gw, owner).command("QUIT")
        for i in range(30):
            c = self.greeted(gw, "127.0.1.%d" % (10 + i))
            self.assertReply(self.bad_auth(c), 535, "5.7.8")
            c.command("QUIT")
        lock = gw.wait_for_log(event="login_lock", login=LOGIN)
        self.assertEqual(lock["failures"], 10, lock)
        self.assertRegex(lock["until"], r"^\d{4}-\d\d-\d\dT.*Z$")
        self.assertEqual(self.bans(gw), {})              # nobody reached max_failures
        auths_before = len(self.backend.events("auth_result"))
        stranger = self.greeted(gw, "127.0.1.77")
        self.assertReply(stranger.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD)), 535,
                         "5.7.8")                        # even the right password
        self.assertEqual(len(self.backend.events("auth_result")), auths_before)
        self.assertTrue(gw.decisions(rule="brute_force.login"))
        self.login(gw, owner)                            # the owner is never locked out
        self.assertEqual(len(self.backend.events("auth_result")), auths_before + 1)
        # Another login is not affected.
        other = self.greeted(gw, "127.0.1.78")
        self.assertReply(other.command(b"AUTH PLAIN " + plain_blob(OTHER_LOGIN, OTHER_PASSWORD)),
                         235)
        # The admin sees the lock and lifts it (the owner travelling, a new address).
        cli = [support.gateway_binary(), "logins"]
        listed = subprocess.run(cli + ["list", "-c", gw.policy_path], capture_output=True,
                                text=True, timeout=20)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(LOGIN, listed.stdout)
        self.assertIn("brute_force.per_login", listed.stdout)
        raw = json.loads(subprocess.run(cli + ["list", "--json", "-c", gw.policy_path],
                                        capture_output=True, text=True, timeout=20).stdout)
        self.assertEqual([l["login"] for l in raw["logins"]], [LOGIN])
        released = subprocess.run(cli + ["release", LOGIN, "-c", gw.policy_path],
                                  capture_output=True, text=True, timeout=20)
        self.assertEqual(released.returncode, 0, released.stderr)
        self.login(gw, "127.0.1.79")                     # a new address logs in again
        again = subprocess.run(cli + ["release", LOGIN, "-c", gw.policy_path],
                               capture_output=True, text=True, timeout=20)
        self.assertEqual(again.returncode, 1)            # not locked any more

    def test_never_ban_host_is_not_banned(self):
        ip = "127.0.0.32"
        gw = self.start_gateway(self.policy(
            brute_force={"max_failures": 3, "never_ban": [ip]}, mx={"auth": "ban"}))
        # mx.auth "ban" does not ban it either
        m = self.greeted(gw, ip, "mx")
        self.assertReply(m.command(b"AUTH PLAIN " + plain_blob(LOGIN, WRONG)), 502, "5.5.1")
        self.assertReply(m.command("NOOP"), 250)
        c = self.greeted(gw, ip)
        for i in range(7):
            self.assertReply(self.bad_auth(c), 535, "5.7.8")
        self.assertReply(c.command("NOOP"), 250, contains="ok")
        # still allowed to log in, now and on a new connection
        self.assertReply(c.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD)), 235)
        c2 = self.greeted(gw, ip)
        self.assertReply(self.bad_auth(c2), 535)
        self.assertEqual(self.bans(gw), {})
        self.assertNotIn(ip, self.state_ips())
        self.assertEqual(gw.stop(), 0)                  # every log line is in now
        self.assertEqual(gw.find(event="ban"), [])
        self.assertEqual(gw.decisions(rule="brute_force", verdict="ban"), [])
        # never_ban's rescue is logged at every failure from the threshold on: the mx AUTH
        # and 7 bad logins make 8 (the 3rd to 8th are logged), then c2's
        saved = gw.decisions(rule="brute_force.never_ban")
        self.assertEqual(len(saved), 7, saved)
        self.assertEqual(saved[0]["verdict"], "allow")
        self.assertIn("in never_ban, not banned", saved[0]["reason"])
        # the failures are logged instead
        failed = [a for a in gw.find(event="auth", result="failed")
                  if a.get("client", "").startswith(ip + ":")]
        self.assertEqual(len(failed), 8, failed)
        self.assertTrue(all(a.get("login") == LOGIN for a in failed), failed)
        check_no_secret(gw, WRONG, LOGIN)

    def test_ban_survives_kill9_and_cli_unban(self):
        ip = "127.0.0.33"
        policy = self.policy(brute_force={"max_failures": 2})
        gw = self.start_gateway(policy)
        self.ban_ip(gw, ip, 2)
        gw.proc.kill()                                  # kill -9, right after the ban
        gw.proc.wait(timeout=10)
        self.assertEqual(gw.proc.returncode, -signal.SIGKILL)

        gw2 = self.start_gateway(copy.deepcopy(policy))
        self.assertRefusedAtConnect(gw2, ip)
        self.assertIn(ip, self.bans(gw2))

        listed = self.bans_cli("list", "-c", gw2.policy_path)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(ip, listed.stdout)
        admin = gw2.policy["admin"]["listen"]
        listed = self.bans_cli("list", "--admin", admin)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(ip, listed.stdout)

        out = self.bans_cli("unban", ip, "-c", gw2.policy_path)
        self.assertEqual(out.returncode, 0, "stdout %r stderr %r" % (out.stdout, out.stderr))
        c = self.connect(gw2, ip)
        self.assertReply(c.greeting(), 220)
        c.close()
        listed = self.bans_cli("list", "-c", gw2.policy_path)
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertNotIn(ip, listed.stdout)
        self.assertNotIn(ip, self.bans(gw2))
        self.assertNotIn(ip, self.state_ips())
        # unbanning what is not banned fails
        out = self.bans_cli("unban", ip, "-c", gw2.policy_path)
        self.assertNotEqual(out.returncode, 0, out.stdout)

    def test_mx_auth_ban(self):
        ip = "127.0.0.34"
        gw = self.start_gateway(self.policy(mx={"auth": "ban"}))
        c = self.greeted(gw, ip, "mx")
        r = c.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD))
        self.assertReply(r, 502, "5.5.1")
        self.assertIn(ip, self.state_ips(), "ban not persisted before the 502")
        self.assertTrue(c.is_closed(), "connection open after AUTH on mx with mx.auth ban")
        self.assertRefusedAtConnect(gw, ip, "mx")
        self.assertRefusedAtConnect(gw, ip, "submission")
        self.assertEqual(self.backend.connections(), [])
        self.assertFalse(self.backend.saw("AUTH"))
        ban = gw.wait_for_log(event="ban", ip=ip)
        self.assertEqual(ban.get("action"), "ban", ban)
        d = gw.wait_for_log(event="decision", rule="mx.auth")
        self.assertEqual(d.get("verdict"), "ban", d)
        self.assertIn(ip, self.bans(gw))
        self.assertEqual(gw.stop(), 0)                  # every log line is in now
        check_no_secret(gw, PASSWORD, LOGIN)

    def test_escalation(self):
        ip = "127.0.0.35"
        gw = self.start_gateway(self.policy(
            brute_force={"max_failures": 2, "ban": "1h", "ban_multiplier": 4, "max_ban": "5h"}))
        expected = [3600, 4 * 3600, 5 * 3600]           # the third is capped by max_ban
        for n, seconds in enumerate(expected, 1):
            c = self.connect(gw, ip)
            self.assertReply(c.greeting(), 220)
            c.close()
            self.ban_ip(gw, ip, 2)
            b = self.bans(gw)[ip]
            self.assertEqual(b["until"] - b["since"], seconds, (n, b))
            self.assertEqual(b["offense"], n, b)
            # Two sessions a round: once the last one's session_close is in, so is its ban.
            self.wait_for_count(gw, 2 * n, event="session_close")
            logged = [l for l in gw.find(event="ban", ip=ip) if l.get("action") == "ban"]
            self.assertEqual(len(logged), n, logged)
            self.assertEqual(logged[-1].get("duration_s"), seconds, logged[-1])
            status, _, body = self.admin(gw, "DELETE", "/bans/" + ip)
            self.assertEqual(status, 200, body)
            self.assertNotIn(ip, self.bans(gw))

    def test_failures_outside_the_window_do_not_count(self):
        ip = "127.0.0.57"
        gw = self.start_gateway(self.policy(brute_force={"max_failures": 2, "window": 2}))
        c = self.greeted(gw, ip)
        self.assertReply(self.bad_auth(c), 535)
        time.sleep(2.1)                                  # the first failure leaves the window
        self.assertReply(self.bad_auth(c), 535)
        self.assertReply(c.command("NOOP"), 250)
        # A session after the failures: the lines logged before it are all in once it closed.
        support.log_barrier(gw, "submission", ip)
        self.assertEqual(gw.find(event="ban"), [])
        self.assertReply(self.bad_auth(c), 535, "5.7.8")  # two within the window: banned
        self.assertTrue(c.is_closed())
        self.assertRefusedAtConnect(gw, ip)

    def test_ban_expires(self):
        ip = "127.0.0.58"
        gw = self.start_gateway(self.policy(brute_force={"max_failures": 1, "ban": 2}))
        self.ban_ip(gw, ip, 1)
        self.assertEqual(gw.wait_for_log(event="ban", ip=ip).get("duration_s"), 2)
        self.assertRefusedAtConnect(gw, ip)

        def admitted():
            c = support.RawClient(gw.host("submission"), gw.port("submission"), ip)
            try:
                return c.greeting().code == 220
            finally:
                c.close()
        support.wait_until(admitted, 6, 0.2, "the 2 s ban to expire")
        self.assertEqual(self.bans(gw), {})

    def test_access_refusals_and_malformed_auth_count_as_failures(self):
        denied, allowed = "127.0.0.59", "127.0.0.60"
        gw = self.start_gateway(self.policy(
            listeners=[("legacy", "auto")], brute_force={"max_failures": 3},
            submission={"access": {"default": "deny", "allow": [allowed]}}))
        # auto listener, an IP that may not submit: 535 at AUTH, never forwarded
        c = self.greeted(gw, denied, "legacy")
        self.assertReply(c.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD)), 535, "5.7.8")
        self.assertReply(c.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD)), 535, "5.7.8")
        self.assertReply(c.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD)), 535, "5.7.8")
        self.assertTrue(c.is_closed(), "not closed at the third refused AUTH (max_failures 3)")
        self.assertRefusedAtConnect(gw, denied, "legacy")
        self.assertEqual(self.backend.connections(), [])
        # malformed exchanges count too
        c = self.greeted(gw, allowed, "legacy")
        self.assertReply(c.command("AUTH PLAIN %%%not-base64%%%"), 501)
        self.assertReply(c.command(b"AUTH PLAIN " + base64.b64encode(b"no-nul-bytes")), 501)
        self.assertReply(c.command("NOOP"), 250)
        r = c.command("AUTH PLAIN %%%again%%%")
        self.assertIn(r.code, (501, 535), r)
        self.assertTrue(c.is_closed(), "not closed at the third malformed AUTH")
        self.assertLoggedReply(gw, allowed, "brute_force", r)
        self.assertRefusedAtConnect(gw, allowed, "legacy")
        self.assertEqual(set(self.bans(gw)), {denied, allowed})
        self.assertFalse(self.backend.saw("AUTH"))

    def test_auth_refused_on_mx_counts_as_failure(self):
        ip = "127.0.0.61"
        gw = self.start_gateway(self.policy(brute_force={"max_failures": 2}))   # mx.auth refuse
        c = self.greeted(gw, ip, "mx")
        self.assertReply(c.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD)), 502, "5.5.1")
        self.assertReply(c.command("NOOP"), 250)
        r = c.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD))
        self.assertIn(r.code, (502, 535), r)
        self.assertTrue(c.is_closed(), "not closed at the second refused AUTH on mx")
        self.assertLoggedReply(gw, ip, "brute_force", r)
        self.assertRefusedAtConnect(gw, ip, "mx")
        self.assertIn(ip, self.bans(gw))

    def test_backend_down_is_not_a_failure(self):
        ip = "127.0.0.62"
        dead = "127.0.0.1:%d" % support.free_port()     # nothing listens there
        gw = self.start_gateway(self.policy(brute_force={"max_failures": 2},
                                            backend_address=dead))
        c = self.greeted(gw, ip)
        for _ in range(4):
            self.assertReply(c.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD)),
                             454, "4.7.0")
        self.assertReply(c.command("NOOP"), 250)
        name = support.client_address(c)
        self.assertReply(c.command("QUIT"), 221)
        gw.wait_for_log(event="session_close", client=name)    # and every line before it
        self.assertEqual(gw.find(event="ban"), [])
        self.assertEqual(self.bans(gw), {})
        c2 = self.connect(gw, ip)
        self.assertReply(c2.greeting(), 220)

    def test_escalation_survives_restart(self):
        ip = "127.0.0.63"
        policy = self.policy(brute_force={"max_failures": 1, "ban": "1h", "ban_multiplier": 3})
        gw = self.start_gateway(policy)
        self.ban_ip(gw, ip, 1)
        self.assertEqual(gw.stop(), 0)
        gw2 = self.start_gateway(copy.deepcopy(policy))
        self.assertRefusedAtConnect(gw2, ip)
        status, _, body = self.admin(gw2, "DELETE", "/bans/" + ip)
        self.assertEqual(status, 200, body)
        self.ban_ip(gw2, ip, 1)
        b = self.bans(gw2)[ip]
        self.assertEqual((b["offense"], b["until"] - b["since"]), (2, 3 * 3600), b)

    def test_corrupt_state_file_moved_aside(self):
        ip = "127.0.0.36"
        for name, content in (("not json", "{\"version\": 1, \"bans\": [ {oops"),
                              ("wrong shape", json.dumps(
                                  {"version": 1, "bans": [{"ip": "not-an-ip", "since": 1}]}))):
            with self.subTest(name):
                for old in glob.glob(self.state_file + "*"):
                    os.unlink(old)
                with open(self.state_file, "w") as f:
                    f.write(content)
                gw = self.start_gateway(self.policy(brute_force={"max_failures": 1}))
                err = gw.wait_for_log(event="error")
                self.assertIn("ban", json.dumps(err).lower(), err)
                aside = [p for p in glob.glob(self.state_file + "*") if p != self.state_file]
                self.assertEqual(len(aside), 1, os.listdir(self.statedir))
                with open(aside[0]) as f:
                    self.assertEqual(f.read(), content)
                self.assertIn(os.path.basename(aside[0]), json.dumps(err), err)
                # the gateway serves, with no bans, and writes a good state file again
                self.assertEqual(self.bans(gw), {})
                self.ban_ip(gw, ip, 1)
                self.assertIn(ip, self.state_ips())
                gw.stop()


# ==========================================================================
# Connection limits
# ==========================================================================

class ConnectionLimitTest(DefenceTestCase):

    def assertTooMany(self, gw, source, listener="mx"):
        c = self.connect(gw, source, listener)
        r = c.greeting()
        self.assertReply(r, 421, "4.7.0", "too many connections, try later")
        self.assertTrue(c.is_closed(), "connection open after 421 too many connections")

    def test_max_per_ip(self):
        ip, other = "127.0.0.37", "127.0.0.38"
        gw = self.start_gateway(self.policy(connections={"max_per_ip": 2}))
        a = self.greeted(gw, ip, "mx")
        b = self.greeted(gw, ip, "submission")
        self.assertTooMany(gw, ip)
        self.assertTooMany(gw, ip, "submission")
        self.greeted(gw, other, "mx")                   # another host is not affected
        # the first two sessions are unharmed
        self.assertReply(a.command("NOOP"), 250)
        self.assertReply(b.command("NOOP"), 250)
        d = gw.wait_for_log(event="decision", rule="limits.connections")
        self.assertEqual(d.get("stage"), "connect", d)
        m = parse_metrics(self.metrics(gw))
        self.assertEqual(metric(m, "smtpgate_connections_refused_total", reason="limit"), 2)
        # a slot frees when one closes
        self.assertReply(a.command("QUIT"), 221)
        a.close()
        gw.wait_for_log(event="session_close", state="closed")

        def admitted():
            c = support.RawClient(gw.host("mx"), gw.port("mx"), ip)
            try:
                return c.greeting().code == 220
            finally:
                c.close()
        support.wait_until(admitted, 5, 0.1, "a third session after one closed")

    def test_connection_burst_does_not_hold_other_sessions(self):
        # 300 connections wait in the backlog while the gateway is stopped, then a session
        # opened before them sends a command. The gateway accepts at most 64 connections per
        # loop turn, so that command is answered (and logged) before the burst is through;
        # and every connection of the burst is still greeted.
        burst_ip, probe_ip = "127.0.0.61", "127.0.0.62"
        gw = self.start_gateway(self.policy(connections={"max_per_ip": 1000,
                                                         "max_total": 2000}))
        probe = self.greeted(gw, probe_ip, "mx")
        clients = []
        # Idle in epoll_wait first: then the listener is ready before the probe's command.
        time.sleep(0.3)
        gw.signal(signal.SIGSTOP)
        try:
            support.wait_until(lambda: process_state(gw.proc.pid) == "T", 5, 0.01,
                               "the gateway stopped")
            for _ in range(300):
                clients.append(self.connect(gw, burst_ip, "mx"))
            probe.send(b"AUTH PLAIN " + plain_blob(LOGIN, WRONG) + b"\r\n")
        finally:
            gw.signal(signal.SIGCONT)
        self.assertReply(probe.read_reply(), 502)
        for c in clients:
            self.assertReply(c.greeting(), 220)
        self.wait_for_count(gw, 301, event="session_open")
        gw.wait_for_log(event="decision", rule="mx.auth")
        logs = gw.snapshot()
        opened = [i for i, l in enumerate(logs) if l.get("event") == "session_open"
                  and l.get("client", "").startswith(burst_ip + ":")]
        refused = [i for i, l in enumerate(logs) if l.get("event") == "decision"
                   and l.get("rule") == "mx.auth"]
        self.assertEqual(len(opened), 300)
        self.assertEqual(len(refused), 1, refused)
        before = sum(1 for i in opened if i < refused[0])
        # 64 per turn; a turn already running when the gateway stopped may add one more.
        self.assertLessEqual(before, 128, "the probe waited for %d accepts" % before)
        for c in clients:
            c.close()

    def test_max_total(self):
        gw = self.start_gateway(self.policy(connections={"max_total": 2}))
        self.greeted(gw, "127.0.0.39", "mx")
        self.greeted(gw, "127.0.0.40", "submission")
        self.assertTooMany(gw, "127.0.0.41")
        self.assertTooMany(gw, "127.0.0.41", "submission")
        self.assertEqual(self.backend.connections(), [])

    def test_rate_per_ip(self):
        ip, other = "127.0.0.42", "127.0.0.43"
        gw = self.start_gateway(self.policy(connections={"rate_per_ip": "3/m"}))
        for _ in range(3):
            c = self.connect(gw, ip, "mx")
            self.assertReply(c.greeting(), 220)
            self.assertReply(c.command("QUIT"), 221)
            c.close()
        self.assertTooMany(gw, ip)
        self.assertTooMany(gw, ip, "submission")
        c = self.connect(gw, other, "mx")
        self.assertReply(c.greeting(), 220)
        # logged after the refusals: once it is in, they are
        gw.wait_for_log(event="session_open", client=support.client_address(c))
        refused = [d for d in gw.decisions(rule="limits.connection_rate")
                   if d.get("client", "").startswith(ip + ":")]
        self.assertEqual(len(refused), 2, refused)
        self.assertEqual(self.backend.connections(), [])
        m = parse_metrics(self.metrics(gw))
        self.assertEqual(metric(m, "smtpgate_connections_refused_total", reason="rate"), 2)


# ==========================================================================
# Sending limits
# ==========================================================================

class SendingLimitTest(DefenceTestCase):

    def test_messages_per_hour(self):
        ip = "127.0.0.44"
        gw = self.start_gateway(self.policy(limits={"messages_per_hour": 2}))
        c = self.login(gw, ip)
        for i in range(2):
            replies = self.send_message(c, LOGIN, ["a%d@other.example" % i],
                                        message("limited %d" % i))
            self.assertReply(replies[-1], 250)
        r = c.command("MAIL FROM:<%s>" % LOGIN)
        self.assertReply(r, 450, "4.7.1", "rate limit exceeded, try later")
        self.assertReply(c.command("QUIT"), 221)
        # per login, not per session
        c2 = self.login(gw, ip)
        self.assertReply(c2.command("MAIL FROM:<%s>" % LOGIN), 450, "4.7.1")
        # another login is not limited by it
        c3 = self.login(gw, ip, OTHER_LOGIN, OTHER_PASSWORD)
        self.assertReply(c3.command("MAIL FROM:<%s>" % OTHER_LOGIN), 250)
        self.assertEqual(len(self.backend.wait_for_messages(2)), 2)
        time.sleep(0.1)
        self.assertEqual(len(self.backend.messages()), 2)
        d = gw.wait_for_log(event="decision", rule="limits.rate")
        self.assertEqual((d.get("stage"), d.get("verdict")), ("mail", "tempfail"), d)

    def test_recipients_per_hour(self):
        ip = "127.0.0.45"
        gw = self.start_gateway(self.policy(limits={"recipients_per_hour": 3}))
        c = self.login(gw, ip)
        replies = self.send_message(c, LOGIN, ["r1@other.example", "r2@other.example"],
                                    message("two recipients"))
        self.assertEqual([r.code for r in replies], [250, 250, 250, 354, 250], replies)
        self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 250)
        self.assertReply(c.command("RCPT TO:<r3@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<r4@other.example>"), 450, "4.7.1",
                         "rate limit exceeded")
        self.assertReply(c.command("DATA"), 354)
        c.send(message("third recipient") + b".\r\n")
        self.assertReply(c.read_reply(), 250)
        msgs = self.backend.wait_for_messages(2)
        self.assertEqual(msgs[-1]["rcpt_tos"], ["r3@other.example"])
        # the hour's budget is spent
        self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 250)
        self.assertReply(c.command("RCPT TO:<r5@other.example>"), 450, "4.7.1")
        d = gw.wait_for_log(event="decision", stage="rcpt", verdict="tempfail")
        self.assertIn(d.get("rule"), ("limits.rate", "limits.recipients"), d)

    def test_max_recipients_submission(self):
        ip = "127.0.0.46"
        gw = self.start_gateway(self.policy(limits={"max_recipients": 2}))
        c = self.login(gw, ip)
        self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 250)
        self.assertReply(c.command("RCPT TO:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<b@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<c@other.example>"), 452, "4.5.3",
                         "Too many recipients")
        self.assertReply(c.command("DATA"), 354)
        c.send(message("max recipients") + b".\r\n")
        self.assertReply(c.read_reply(), 250)
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["rcpt_tos"], ["a@other.example", "b@other.example"])
        self.assertFalse(any("c@other.example" in l for l in self.backend.commands()))
        d = gw.wait_for_log(event="decision", rule="limits.recipients")
        self.assertEqual(d.get("stage"), "rcpt", d)
        # a new message starts counting again
        self.assertReply(c.command("MAIL FROM:<%s>" % LOGIN), 250)
        self.assertReply(c.command("RCPT TO:<d@other.example>"), 250)

    def test_max_recipients_mx(self):
        ip = "127.0.0.56"
        gw = self.start_gateway(self.policy(mx={"max_recipients": 2}))
        c = self.greeted(gw, ip, "mx")
        self.assertReply(c.command("MAIL FROM:<someone@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<a@example.com>"), 250)
        self.assertReply(c.command("RCPT TO:<b@example.com>"), 250)
        self.assertReply(c.command("RCPT TO:<c@example.com>"), 452, "4.5.3",
                         "Too many recipients")
        self.assertReply(c.command("DATA"), 354)
        c.send(message("mx max recipients", "someone@other.example", "a@example.com")
               + b".\r\n")
        self.assertReply(c.read_reply(), 250)
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["rcpt_tos"], ["a@example.com", "b@example.com"])


# ==========================================================================
# Admin endpoint
# ==========================================================================

class AdminTest(DefenceTestCase):

    def test_metrics_move(self):
        world, guesser = "127.0.0.47", "127.0.0.48"
        gw = self.start_gateway(self.policy(brute_force={"max_failures": 2}))
        text0 = self.metrics(gw)
        m0 = parse_metrics(text0)
        for family in ("smtpgate_connections_total", "smtpgate_connections_refused_total",
                       "smtpgate_decisions_total", "smtpgate_bans_active",
                       "smtpgate_bans_issued_total", "smtpgate_auth_total",
                       "smtpgate_messages_total", "smtpgate_message_bytes_total",
                       "smtpgate_backend_errors_total", "smtpgate_backend_reply_seconds",
                       "smtpgate_policy_reloads_total"):
            self.assertRegex(text0, r"(?m)^# TYPE %s (counter|gauge|histogram)$" % family)
        self.assertEqual(metric_sum(m0, "smtpgate_connections_total"), 0,
                         "the harness opened no session, yet: %s" % text0)

        # mx: one delivery, one relay attempt
        c = self.greeted(gw, world, "mx")
        replies = self.send_message(c, "a@other.example", ["user@example.com"],
                                    message("inbound", "a@other.example", "user@example.com"))
        self.assertReply(replies[-1], 250)
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<x@gmail.example>"), 554, "5.7.1")
        self.assertReply(c.command("QUIT"), 221)
        c.close()
        # submission: one good login with a message, two bad ones (a ban), a refused connect
        c = self.login(gw, world)
        self.assertReply(self.send_message(c, LOGIN, ["r@other.example"],
                                           message("outbound"))[-1], 250)
        self.assertReply(c.command("QUIT"), 221)
        c.close()
        self.ban_ip(gw, guesser, 2)
        self.assertRefusedAtConnect(gw, guesser)

        m1 = parse_metrics(self.metrics(gw))

        def delta(name, **labels):
            return metric(m1, name, **labels) - metric(m0, name, **labels)
        self.assertEqual(delta("smtpgate_connections_total", listener="mx"), 1)
        self.assertEqual(delta("smtpgate_connections_total", listener="submission"), 3)
        self.assertEqual(delta("smtpgate_connections_refused_total", reason="ban"), 1)
        self.assertEqual(delta("smtpgate_decisions_total", stage="rcpt", rule="mx.relay",
                               verdict="reject", enforced="true"), 1)
        self.assertEqual(delta("smtpgate_decisions_total", stage="auth", rule="brute_force",
                               verdict="ban", enforced="true"), 1)
        self.assertEqual(delta("smtpgate_decisions_total", stage="connect", rule="ban",
                               verdict="reject", enforced="true"), 1)
        self.assertEqual(delta("smtpgate_bans_issued_total"), 1)
        self.assertEqual(metric(m1, "smtpgate_bans_active"), 1)
        self.assertEqual(delta("smtpgate_auth_total", result="ok"), 1)
        self.assertEqual(delta("smtpgate_auth_total", result="failed"), 2)
        self.assertEqual(delta("smtpgate_messages_total", result="delivered"), 2)
        self.assertGreater(delta("smtpgate_message_bytes_total"), 0)
        self.assertGreater(delta("smtpgate_backend_reply_seconds_count"), 0)
        self.assertEqual(metric(m1, "smtpgate_backend_reply_seconds_bucket", le="+Inf"),
                         metric(m1, "smtpgate_backend_reply_seconds_count"))

        status, _, body = self.admin(gw, "DELETE", "/bans/" + guesser)
        self.assertEqual(status, 200, body)
        m2 = parse_metrics(self.metrics(gw))
        self.assertEqual(metric(m2, "smtpgate_bans_active"), 0)
        self.assertEqual(metric(m2, "smtpgate_bans_issued_total"),
                         metric(m1, "smtpgate_bans_issued_total"))

    def test_healthz_404_and_bad_requests(self):
        gw = self.start_gateway(self.policy())
        status, _, body = self.admin(gw, "GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(body.strip().lower(), "ok")
        status, _, _ = self.admin(gw, "GET", "/no-such-thing")
        self.assertEqual(status, 404)
        status, _, _ = self.admin(gw, "GET", "/bans/extra/path")
        self.assertIn(status, (404, 405))
        status, _, _ = self.admin(gw, "DELETE", "/bans/not-an-ip")
        self.assertEqual(status, 400)
        status, _, _ = self.admin(gw, "DELETE", "/bans/127.0.0.49")
        self.assertEqual(status, 404)
        self.assertEqual(self.bans(gw), {})

    def test_admin_listen_loopback_only(self):
        for listen, allow_remote, ok in (("0.0.0.0:9", None, False), ("0.0.0.0:9", True, True),
                                         ("127.0.0.1:9", None, True)):
            with self.subTest(listen=listen, allow_remote=allow_remote):
                policy = self.policy()
                policy["admin"] = {"listen": listen}
                if allow_remote is not None:
                    policy["admin"]["allow_remote"] = allow_remote
                path = os.path.join(self.statedir, "check.json")
                with open(path, "w") as f:
                    json.dump(policy, f)
                out = subprocess.run([support.gateway_binary(), "check", "-c", path],
                                     stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                     timeout=20)
                self.assertEqual(out.returncode, 0 if ok else 1, out.stdout + out.stderr)
                if not ok:
                    self.assertIn("/admin", out.stderr)

    def test_reload_with_invalid_utf8_in_a_list_file(self):
        # The rejection names the bad entry; rendering it as JSON must not end the process.
        policy = self.policy()
        gw = self.start_gateway(policy)
        bad_list = os.path.join(self.statedir, "blocked.txt")
        with open(bad_list, "wb") as f:
            f.write(b"192.0.2.1\n198.51.100.\xe9\xff/24\n")
        broken = copy.deepcopy(policy)
        broken["lists"] = {"blocked": {"file": bad_list}}
        broken["mx"] = {"access": {"deny": ["@blocked"]}}
        with open(gw.policy_path, "w") as f:
            json.dump(broken, f)
        status, _, body = self.admin(gw, "POST", "/reload")
        self.assertEqual(status, 400, body)
        self.assertIn("198.51.100.\ufffd\ufffd/24", json.loads(body)["errors"])
        gw.signal(signal.SIGHUP)
        support.wait_until(lambda: len(gw.find(event="policy_reload", result="rejected")) == 2, 5,
                           message="two rejected reloads logged")
        self.assertIsNone(gw.proc.poll())
        c = self.greeted(gw, "127.0.0.47", "mx")
        self.assertReply(c.command("NOOP"), 250)

    def test_admin_reload_broken_then_good(self):
        ip = "127.0.0.49"
        policy = self.policy()
        gw = self.start_gateway(policy)
        broken = copy.deepcopy(policy)
        broken["mx"] = {"max_recipientz": 3}
        with open(gw.policy_path, "w") as f:
            json.dump(broken, f)
        status, ctype, body = self.admin(gw, "POST", "/reload")
        self.assertEqual(status, 400, body)
        doc = json.loads(body)
        self.assertEqual(doc.get("result"), "rejected", doc)
        self.assertIn("max_recipientz", json.dumps(doc.get("errors")))
        rej = gw.wait_for_log(event="policy_reload", result="rejected")
        self.assertIn("max_recipientz", json.dumps(rej))
        # the old policy keeps serving
        c = self.greeted(gw, ip, "mx")
        self.assertReply(self.send_message(c, "a@other.example", ["u@example.com"],
                                           message("after rejected reload"))[-1], 250)
        # a good file is loaded; new sessions see it
        good = copy.deepcopy(policy)
        good["hostname"] = "new.example.test"
        with open(gw.policy_path, "w") as f:
            json.dump(good, f)
        status, _, body = self.admin(gw, "POST", "/reload")
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"result": "loaded"})
        c = self.connect(gw, ip, "mx")
        r = c.greeting()
        self.assertReply(r, 220)
        self.assertIn("new.example.test", r.text)
        status, _, _ = self.admin(gw, "GET", "/reload")
        self.assertEqual(status, 405)


# ==========================================================================
# Signals
# ==========================================================================

    def test_readyz_reports_the_backend_and_healthz_stays_liveness(self):
        gw = self.start_gateway(self.policy())
        ready = support.wait_until(lambda: self.admin(gw, "GET", "/readyz")[0] == 200,
                                   timeout=10, message="/readyz 200 once the backend greeted")
        self.assertTrue(ready)
        self.assertEqual(self.admin(gw, "GET", "/readyz")[2], "ready\n")
        # A backend nobody listens on: not ready, and why; the gateway itself is alive.
        down = self.start_gateway(self.policy(backend_address="127.0.0.1:%d" % support.free_port()))
        status, _, body = support.wait_until(
            lambda: (lambda r: r if r[0] == 503 and "backend:" in r[2] else None)(
                self.admin(down, "GET", "/readyz")), timeout=10, message="/readyz 503")
        self.assertIn("not ready: backend: connect: connection refused", body)
        self.assertEqual(self.admin(down, "GET", "/healthz")[:3:2], (200, "ok\n"))

    def test_reload_names_changes_that_need_a_restart(self):
        # A changed listener address cannot apply while running: the reload loads the rest and
        # says so, in its reply and its log line, instead of "loaded".
        policy = self.policy()
        gw = self.start_gateway(policy)
        moved = copy.deepcopy(policy)
        host, _ = support.parse_listen(moved["listeners"][0]["listen"])
        moved["listeners"][0]["listen"] = "%s:%d" % (host, support.free_port())
        moved["mx"] = dict(moved.get("mx") or {}, max_recipients=7)
        with open(gw.policy_path, "w") as f:
            json.dump(moved, f)
        status, _, body = self.admin(gw, "POST", "/reload")
        self.assertEqual(status, 200, body)
        reply = json.loads(body)
        self.assertEqual(reply["result"], "partial", reply)
        self.assertEqual(len(reply["not_applied"]), 1, reply)
        self.assertIn("listeners[0] \"mx\"", reply["not_applied"][0])
        self.assertIn("(needs a restart)", reply["not_applied"][0])
        line = gw.wait_for_log(event="policy_reload", result="partial")
        self.assertEqual(line["not_applied"], reply["not_applied"])
        # The old address still serves.
        self.greeted(gw, "127.0.0.48", "mx")

class SignalTest(DefenceTestCase):

    def reload_and_wait(self, gw, content, result):
        # The start's own policy_reload line may still be on its way: count from it.
        gw.wait_for_log(event="policy_reload")
        before = len(gw.find(event="policy_reload"))
        with open(gw.policy_path, "w") as f:
            f.write(content)
        gw.signal(signal.SIGHUP)
        support.wait_until(lambda: len(gw.find(event="policy_reload")) > before, 10,
                           message="policy_reload log line")
        last = gw.find(event="policy_reload")[-1]
        self.assertEqual(last.get("result"), result, last)
        return last

    def test_sighup_broken_policy_keeps_serving(self):
        ip = "127.0.0.50"
        gw = self.start_gateway(self.policy())
        line = self.reload_and_wait(gw, '{"version": 1, "hostname": ', "rejected")
        self.assertTrue(line.get("errors"), line)
        self.assertEqual(gw.proc.poll(), None, "gateway exited on a broken SIGHUP")
        c = self.connect(gw, ip, "mx")
        r = c.greeting()
        self.assertReply(r, 220)
        self.assertIn(HOSTNAME, r.text)
        self.assertReply(c.ehlo(), 250)
        self.assertReply(self.send_message(c, "a@other.example", ["u@example.com"],
                                           message("after broken SIGHUP"))[-1], 250)
        self.assertEqual(len(self.backend.wait_for_messages(1)), 1)

    def test_sighup_good_policy_applies_to_new_sessions_only(self):
        old_ip, new_ip = "127.0.0.50", "127.0.0.51"
        policy = self.policy(mx={"max_recipients": 5})
        gw = self.start_gateway(policy)
        old = self.greeted(gw, old_ip, "mx")
        changed = copy.deepcopy(policy)
        changed["local_domains"] = ["example.com"]          # example.net no longer local
        changed["mx"] = {"max_recipients": 1}
        changed["hostname"] = "new.example.test"
        self.reload_and_wait(gw, json.dumps(changed), "loaded")

        new = self.connect(gw, new_ip, "mx")
        r = new.greeting()
        self.assertReply(r, 220)
        self.assertIn("new.example.test", r.text)
        self.assertReply(new.ehlo(), 250)
        self.assertReply(new.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(new.command("RCPT TO:<u@example.net>"), 554, "5.7.1")
        self.assertReply(new.command("RCPT TO:<u@example.com>"), 250)
        self.assertReply(new.command("RCPT TO:<v@example.com>"), 452, "4.5.3")

        # the session opened before keeps its rules
        self.assertReply(old.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(old.command("RCPT TO:<u@example.net>"), 250)
        self.assertReply(old.command("RCPT TO:<v@example.com>"), 250)
        self.assertReply(old.command("RCPT TO:<w@example.com>"), 250)
        self.assertReply(old.command("DATA"), 354)
        old.send(message("old rules", "a@other.example", "u@example.net") + b".\r\n")
        self.assertReply(old.read_reply(), 250)
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["rcpt_tos"], ["u@example.net", "v@example.com", "w@example.com"])

    def test_sigterm_with_message_in_flight(self):
        busy_ip, idle_ip = "127.0.0.52", "127.0.0.53"
        gw = self.start_gateway(self.policy())
        busy = self.greeted(gw, busy_ip, "mx")
        idle = self.greeted(gw, idle_ip, "mx")
        self.assertReply(busy.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(busy.command("RCPT TO:<user@example.com>"), 250)
        self.assertReply(busy.command("DATA"), 354)
        body = message("in flight during SIGTERM", "a@other.example", "user@example.com")
        body += b"".join(b"line %04d of a message that is being sent\r\n" % i
                         for i in range(200))
        half = len(body) // 2
        busy.send(body[:half])
        time.sleep(0.2)
        gw.signal(signal.SIGTERM)

        # an idle session is told at once, and the listeners close
        r = idle.read_reply()
        self.assertReply(r, 421, "4.3.2")
        self.assertTrue(idle.is_closed(), "idle session open after 421 4.3.2")

        def listener_closed():
            try:
                s = socket.create_connection((gw.host("mx"), gw.port("mx")), timeout=2,
                                             source_address=(idle_ip, 0))
            except ConnectionRefusedError:
                return True
            s.close()
            return False
        support.wait_until(listener_closed, 5, 0.1, "the mx listener to close")
        self.assertIsNone(gw.proc.poll(), "gateway exited with a message in flight")

        # the message in flight finishes: 250 from the backend, then 421
        busy.send(body[half:] + b".\r\n")
        r = busy.read_reply()
        self.assertReply(r, 250)
        r = busy.read_reply()
        self.assertReply(r, 421, "4.3.2")
        self.assertTrue(busy.is_closed(), "session open after 421 4.3.2")
        try:
            rc = gw.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.fail("gateway still running 10 s after its last session ended")
        self.assertEqual(rc, 0, "\n".join(gw.lines[-20:]))
        msgs = self.backend.wait_for_messages(1)
        self.assertEqual(len(msgs), 1)
        self.assertTrue(msgs[0]["data"].endswith(body), msgs[0]["data"][-200:])
        gw._join_readers()
        self.assertTrue(gw.find(event="shutdown"), gw.lines[-20:])
        delivered = gw.find(event="message", delivered=True)
        self.assertEqual(len(delivered), 1, delivered)

    def test_sigterm_drain_timeout_bounds_a_stuck_message(self):
        ip = "127.0.0.64"
        policy = self.policy()
        policy["timeouts"] = {"drain": "1s"}
        gw = self.start_gateway(policy)
        c = self.greeted(gw, ip, "mx")
        self.assertReply(c.command("MAIL FROM:<a@other.example>"), 250)
        self.assertReply(c.command("RCPT TO:<user@example.com>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(b"Subject: never finished\r\n\r\nhalf a body\r\n")
        time.sleep(0.2)
        started = time.monotonic()
        gw.signal(signal.SIGTERM)
        try:
            rc = gw.proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            self.fail("gateway still running 8 s after SIGTERM with drain 1s")
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(rc, 0, "\n".join(gw.lines[-20:]))
        self.assertTrue(c.is_closed(), "client connection open after the gateway exited")
        time.sleep(0.3)
        self.assertEqual(self.backend.messages(), [])


# ==========================================================================
# Dry run and secrets
# ==========================================================================

class DryRunAndSecretsTest(DefenceTestCase):

    def test_dry_run_brute_force_would_ban(self):
        ip = "127.0.0.54"
        gw = self.start_gateway(self.policy(brute_force={"max_failures": 2, "mode": "dry-run"}))
        c = self.greeted(gw, ip)
        for _ in range(3):
            self.assertReply(self.bad_auth(c), 535)
        self.assertReply(c.command("NOOP"), 250, contains="ok")      # not closed
        name = support.client_address(c)
        self.assertReply(c.command("QUIT"), 221)
        gw.wait_for_log(event="session_close", client=name)    # and every line before it
        ban = gw.wait_for_log(event="ban", ip=ip)
        self.assertEqual(ban.get("action"), "would_ban", ban)
        self.assertIs(ban.get("enforced"), False, ban)
        self.assertEqual([l for l in gw.find(event="ban") if l.get("action") != "would_ban"], [])
        d = gw.wait_for_log(event="decision", rule="brute_force")
        self.assertIs(d.get("enforced"), False, d)
        c2 = self.connect(gw, ip)
        self.assertReply(c2.greeting(), 220)
        self.assertReply(c2.ehlo(), 250)
        self.assertReply(c2.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD)), 235)
        self.assertEqual(self.bans(gw), {})
        self.assertNotIn(ip, self.state_ips())
        m = parse_metrics(self.metrics(gw))
        self.assertEqual(metric(m, "smtpgate_bans_issued_total"), 0)
        self.assertEqual(metric(m, "smtpgate_bans_active"), 0)

    def test_cli_dry_run_would_ban(self):
        ip = "127.0.0.65"
        gw = self.start_gateway(self.policy(brute_force={"max_failures": 1}),
                                extra_args=["--dry-run"])
        c = self.greeted(gw, ip)
        self.assertReply(self.bad_auth(c), 535)
        self.assertReply(self.bad_auth(c), 535)
        self.assertReply(c.command("NOOP"), 250)
        ban = gw.wait_for_log(event="ban", ip=ip)
        self.assertEqual((ban.get("action"), ban.get("enforced")), ("would_ban", False), ban)
        c2 = self.connect(gw, ip)
        self.assertReply(c2.greeting(), 220)
        self.assertEqual(self.bans(gw), {})
        self.assertNotIn(ip, self.state_ips())

    def test_passwords_never_in_logs(self):
        ip = "127.0.0.55"
        gw = self.start_gateway(self.policy(brute_force={"max_failures": 4}))
        # PLAIN with an initial response, good and bad
        c = self.greeted(gw, ip)
        self.assertReply(self.bad_auth(c), 535)
        self.assertReply(c.command(b"AUTH PLAIN " + plain_blob(LOGIN, PASSWORD)), 235)
        c.close()
        # PLAIN in a continuation
        c = self.greeted(gw, ip)
        self.assertReply(c.command("AUTH PLAIN"), 334)
        self.assertReply(c.command(plain_blob(OTHER_LOGIN, OTHER_PASSWORD)), 235)
        c.close()
        # LOGIN, bad then good
        c = self.greeted(gw, ip)
        self.assertReply(c.command("AUTH LOGIN"), 334)
        self.assertReply(c.command(base64.b64encode(LOGIN.encode())), 334)
        self.assertReply(c.command(base64.b64encode(WRONG.encode() + b"x")), 535)
        self.assertReply(c.command("AUTH LOGIN " + base64.b64encode(LOGIN.encode()).decode()),
                         334)
        self.assertReply(c.command(base64.b64encode(PASSWORD.encode())), 235)
        c.close()
        # the guesser gets banned on the fourth failure
        c = self.greeted(gw, ip)
        self.assertReply(self.bad_auth(c), 535)
        self.assertReply(self.bad_auth(c, OTHER_LOGIN, OTHER_PASSWORD + "y"), 535)
        self.assertTrue(c.is_closed())
        gw.wait_for_log(event="ban", ip=ip)
        status, _, bans_body = self.admin(gw, "GET", "/bans")
        metrics_text = self.metrics(gw)
        with open(self.state_file) as f:
            state = f.read()
        gw.stop()                                       # every line is in now
        for secret, user in ((PASSWORD, LOGIN), (WRONG, LOGIN), (WRONG + "x", LOGIN),
                             (OTHER_PASSWORD, OTHER_LOGIN), (OTHER_PASSWORD + "y", OTHER_LOGIN)):
            check_no_secret(gw.lines, secret, user)
            for text in (bans_body, metrics_text, state):
                check_no_secret(text, secret, user)
        self.assertTrue(gw.find(event="auth", result="ok"))
        self.assertTrue(gw.find(event="auth", result="failed"))


if __name__ == "__main__":
    unittest.main()
