"""Worker loops (SPEC §8 `workers`): with `workers: 2` connections are spread over two event
loops, yet everything a policy counts is counted once for the process: per-IP caps, bans,
metrics; SIGHUP and SIGTERM reach every worker; log lines stay whole. Clients on
127.0.7.0/24. Connections alternate between the workers (round robin), so consecutive
connections land on different loops."""

import json
import signal
import smtplib
import time
import unittest
import urllib.request

import support
from support import IntegrationTestCase

HOSTNAME = "gw.example.test"


class WorkersTest(IntegrationTestCase):

    def start(self, **sections):
        self.backend = self.start_backend()
        sections.setdefault("admin", {"listen": "127.0.0.1:%d" % support.free_port()})
        policy = support.gateway_policy(self.backend.address, listeners=(("mx", "mx"),),
                                        hostname=HOSTNAME, **sections)
        policy["workers"] = 2
        self.gw = self.start_gateway(policy)
        self.gw.wait_for_log(event="policy_reload", workers=2)
        return self.gw

    def metrics(self):
        url = "http://%s/metrics" % self.gw.policy["admin"]["listen"]
        return urllib.request.urlopen(url, timeout=5).read().decode()

    def metric(self, line_start):
        for line in self.metrics().splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def test_per_ip_cap_holds_across_workers(self):
        self.start(connections={"max_per_ip": 3})
        clients, codes = [], []
        for _ in range(8):
            c = self.raw_client(self.gw, "mx", "127.0.7.10")
            codes.append(c.greeting().code)
            clients.append(c)
        self.assertEqual(codes.count(220), 3, codes)
        self.assertEqual(codes.count(421), 5, codes)
        # Another address is not affected.
        other = self.raw_client(self.gw, "mx", "127.0.7.11")
        self.assertEqual(other.greeting().code, 220)
        self.assertEqual(self.metric("smtpgate_workers"), 2)

    def test_a_ban_on_one_worker_refuses_on_the_other(self):
        self.start(mx={"auth": "ban"})
        c = self.raw_client(self.gw, "mx", "127.0.7.20")
        self.assertEqual(c.greeting().code, 220)
        c.ehlo()
        c.command("AUTH PLAIN AGJvYgBwdw==")  # mx.auth "ban": the attempt itself bans
        self.gw.wait_for_log(event="ban", ip="127.0.7.20")
        # The next two connections go to one worker each: both refused.
        for _ in range(2):
            again = self.raw_client(self.gw, "mx", "127.0.7.20")
            self.assertEqual(again.greeting().code, 554)
        self.assertEqual(len(self.backend.connections()), 0)

    def test_failures_on_both_workers_add_up(self):
        self.start(brute_force={"max_failures": 4},
                   submission={"access": {"default": "allow"}, "require_tls": False},
                   mx={"auth": "refuse"})
        # AUTH refused on an mx listener counts as a failure; one per connection, alternating
        # workers: the fourth bans.
        codes = []
        for _ in range(4):
            c = self.raw_client(self.gw, "mx", "127.0.7.30")
            c.greeting()
            c.ehlo()
            codes.append(c.command("AUTH PLAIN AGJvYgBwdw==").code)
            c.close()
        self.gw.wait_for_log(event="ban", ip="127.0.7.30")
        again = self.raw_client(self.gw, "mx", "127.0.7.30")
        self.assertEqual(again.greeting().code, 554)

    def test_metrics_are_process_totals(self):
        self.start()
        for i in range(6):
            s = self.smtp(self.gw, "mx", source="127.0.7.40")
            s.sendmail("a@other.example", ["user@example.com"],
                       b"Subject: w%d\r\n\r\nhello\r\n" % i)
            s.quit()
        self.backend.wait_for_messages(6)
        support.wait_until(lambda: self.metric('smtpgate_messages_total{result="delivered"}') == 6,
                           5, message="6 delivered messages in the totals")
        self.assertEqual(self.metric('smtpgate_connections_total{listener="mx"}'), 6)
        # Round robin: both loops served sessions.
        self.assertEqual(sorted({o["worker"] for o in self.gw.find(event="session_open")}), [0, 1])

    def test_reload_reaches_every_worker(self):
        gw = self.start()
        for _ in range(2):
            c = self.raw_client(gw, "mx", "127.0.7.50")
            self.assertEqual(c.greeting().code, 220)
            c.close()
        policy = dict(gw.policy)
        policy["mx"] = {"access": {"default": "allow", "deny": ["127.0.7.50/32"]}}
        gw.reload(policy)
        support.wait_until(lambda: len(gw.find(event="policy_reload", result="loaded")) >= 2, 10,
                           message="the reload's policy_reload line")
        for _ in range(2):   # one connection on each worker
            c = self.raw_client(gw, "mx", "127.0.7.50")
            self.assertEqual(c.greeting().code, 554)

    def test_sigterm_drains_every_worker(self):
        gw = self.start()
        # One session in a transaction on each worker, then SIGTERM: each finishes its
        # message and hears 421, and the process exits 0.
        sessions = []
        for i in range(2):
            c = self.raw_client(gw, "mx", "127.0.7.60")
            self.assertEqual(c.greeting().code, 220)
            c.ehlo()
            self.assertEqual(c.command("MAIL FROM:<a@other.example>").code, 250)
            self.assertEqual(c.command("RCPT TO:<user@example.com>").code, 250)
            self.assertEqual(c.command("DATA").code, 354)
            sessions.append(c)
        gw.signal(signal.SIGTERM)
        gw.wait_for_log(event="shutdown", state="draining")
        for i, c in enumerate(sessions):
            self.assertEqual(c.command(b"Subject: drain %d\r\n\r\nbye\r\n." % i).code, 250)
            self.assertEqual(c.read_reply().code, 421)
        self.assertEqual(len(self.backend.wait_for_messages(2)), 2)
        self.assertEqual(gw.proc.wait(15), 0)

    def test_log_lines_stay_whole(self):
        gw = self.start()
        for i in range(20):
            s = self.smtp(gw, "mx", source="127.0.7.70")
            s.sendmail("a@other.example", ["user@example.com"], b"Subject: l\r\n\r\nx\r\n")
            s.quit()
        self.backend.wait_for_messages(20)
        support.log_barrier(gw, source="127.0.7.71")
        for line in gw.text().splitlines():
            if line.startswith("{"):
                json.loads(line)  # every JSON line parses: none was cut into by another


if __name__ == "__main__":
    unittest.main()
