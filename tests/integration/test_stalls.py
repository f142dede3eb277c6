"""The loop never stalls on disk or log I/O: a log pipe nobody reads, a state file on
a full disk, a torn last record in the ban journal. Each test checks that other
sessions keep being served, and what the gateway reports (log, /metrics, /healthz)."""

import base64
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
import unittest

import support
from support import IntegrationTestCase, RawClient, dot_stuff

HOSTNAME = "gw.example.test"


def plain_blob(user, password):
    return base64.b64encode(("\0%s\0%s" % (user, password)).encode())


def admin(policy, method, path):
    host, port = support.parse_listen(policy["admin"]["listen"])
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def metric(policy, name):
    _, text = admin(policy, "GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no %s in /metrics" % name)


def message(subject):
    return ("From: a@other.example\r\nTo: user@example.com\r\nSubject: %s\r\n\r\n"
            "Body of %s.\r\n" % (subject, subject)).encode()


class LogStallTest(IntegrationTestCase):
    """The gateway logs to standard error, a pipe this test does not read."""

    def start_unread_gateway(self, backend):
        policy = support.gateway_policy(
            backend.address, hostname=HOSTNAME, message={"received_header": False},
            admin={"listen": "127.0.0.1:%d" % support.free_port()})
        tmp = support.make_tempdir("smtpgate-stall-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "policy.json")
        with open(path, "w") as f:
            json.dump(policy, f)
        proc = subprocess.Popen([support.gateway_binary(), "run", "-c", path],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        self.addCleanup(self.stop, proc)
        for _, host, port in [("mx",) + support.parse_listen(policy["listeners"][0]["listen"]),
                              ("admin",) + support.parse_listen(policy["admin"]["listen"])]:
            support.wait_until(lambda: support._is_listening(host, port, proc.pid), 10,
                               message="the gateway listening on %d" % port)
        return policy, proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stderr.close()

    def client(self, policy, source):
        host, port = support.parse_listen(policy["listeners"][0]["listen"])
        c = RawClient(host, port, source)
        self.addCleanup(c.close)
        self.assertReply(c.greeting(), 220)
        self.assertReply(c.ehlo(), 250)
        return c

    def timed(self, c, line):
        t0 = time.monotonic()
        r = c.command(line)
        return r, time.monotonic() - t0

    def test_a_log_reader_that_stops_stalls_nobody(self):
        backend = self.start_backend()
        policy, proc = self.start_unread_gateway(backend)
        # Refused recipients log a decision each: about 300 bytes a line, so a few thousand
        # fill the 64 KiB pipe and then the writer's 1 MiB queue.
        flood = self.client(policy, "127.0.0.5")
        self.assertReply(flood.command("MAIL FROM:<a@other.example>"), 250)
        for _ in range(4):
            flood.send(b"RCPT TO:<victim@gmail.example>\r\n" * 1500)
            for _ in range(1500):
                self.assertEqual(flood.read_reply().code, 554)
        support.wait_until(lambda: metric(policy, "smtpgate_log_dropped_total") > 0, 10,
                           message="log lines dropped")
        # The pipe is full and nobody reads it: sessions and new connections go on.
        c = self.client(policy, "127.0.0.6")
        r, took = self.timed(c, "NOOP")
        self.assertReply(r, 250)
        self.assertLess(took, 0.1)
        for cmd in ("MAIL FROM:<a@other.example>", "RCPT TO:<user@example.com>"):
            r, took = self.timed(c, cmd)
            self.assertReply(r, 250)
            self.assertLess(took, 0.1, cmd)
        self.assertReply(c.command("DATA"), 354)
        t0 = time.monotonic()
        c.send(dot_stuff(message("while the log is stuck")) + b".\r\n")
        self.assertReply(c.read_reply(), 250)
        self.assertLess(time.monotonic() - t0, 0.1)
        self.assertEqual(len(backend.wait_for_messages(1)), 1)
        dropped = metric(policy, "smtpgate_log_dropped_total")
        self.assertGreater(dropped, 0)
        # Once the reader drains the pipe, the lines flow again and one says what was lost.
        seen = []
        reader = threading.Thread(target=lambda: seen.extend(proc.stderr), daemon=True)
        reader.start()
        self.assertReply(c.command("QUIT"), 221)

        def notice():
            for raw in list(seen):
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if obj.get("component") == "log" and "dropped" in obj:
                    return obj
            return None
        obj = support.wait_until(notice, 10, message="the dropped-lines notice")
        self.assertIn("log lines dropped", obj["reason"])
        self.assertGreaterEqual(obj["dropped"], 1)
        self.assertLessEqual(obj["dropped"], metric(policy, "smtpgate_log_dropped_total"))


class BanStateTestCase(IntegrationTestCase):

    def policy(self, state_file, **extra):
        return support.gateway_policy(
            "127.0.0.1:9", hostname=HOSTNAME,          # no backend needed: AUTH on mx bans
            mx={"auth": "ban"},
            brute_force={"state_file": state_file, "ban": "1h"},
            admin={"listen": "127.0.0.1:%d" % support.free_port()}, **extra)

    def banned_by_auth(self, gw, source):
        c = self.raw_client(gw, "mx", source)
        self.assertReply(c.greeting(), 220)
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.command(b"AUTH PLAIN " + plain_blob("u", "p")), 502)
        self.assertTrue(c.is_closed())
        gw.wait_for_log(event="ban", ip=source)

    def assertRefused(self, gw, source):
        c = self.raw_client(gw, "mx", source)
        self.assertReply(c.greeting(), 554, "5.7.1")


class FullDiskTest(BanStateTestCase):

    def setUp(self):
        self.mnt = support.make_tempdir("smtpgate-fulldisk-")
        self.addCleanup(shutil.rmtree, self.mnt, True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", self.mnt],
                           capture_output=True)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs here: %s" % r.stderr.decode().strip())
        self.addCleanup(subprocess.run, ["umount", "-l", self.mnt], capture_output=True)
        # Fill it: every write of the state file now fails with ENOSPC.
        fd = os.open(os.path.join(self.mnt, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"x" * 4096) > 0:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)

    def test_state_file_on_a_full_disk(self):
        policy = self.policy(os.path.join(self.mnt, "bans.json"))
        gw = self.start_gateway(policy)
        self.banned_by_auth(gw, "127.0.0.40")
        # Enforced in memory, reported in the log, the metrics and /healthz.
        self.assertRefused(gw, "127.0.0.40")
        err = gw.wait_for_log(event="error", component="bans")
        self.assertIn("No space left", err["reason"])
        self.assertGreaterEqual(metric(policy, "smtpgate_state_write_errors_total"), 1)
        status, body = admin(policy, "GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertTrue(body.startswith("degraded: state file not written"), body)
        # Others are served meanwhile.
        c = self.raw_client(gw, "mx", "127.0.0.41")
        self.assertReply(c.greeting(), 220)
        # Space again: the next ban writes the whole state, both bans are on disk.
        os.unlink(os.path.join(self.mnt, "filler"))
        self.banned_by_auth(gw, "127.0.0.42")
        gw.wait_for_log(event="error", component="bans",
                        reason="ban state written again after earlier failures")
        self.assertEqual(admin(policy, "GET", "/healthz"), (200, "ok\n"))
        with open(os.path.join(self.mnt, "bans.json")) as f:
            text = f.read()
        self.assertIn('"ban":"127.0.0.40"', text)
        self.assertIn('"ban":"127.0.0.42"', text)


class JournalTest(BanStateTestCase):

    def setUp(self):
        self.dir = support.make_tempdir("smtpgate-journal-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.state_file = os.path.join(self.dir, "bans.json")

    def test_torn_last_record_is_ignored(self):
        now_ms = int(time.time() * 1000)
        with open(self.state_file, "w") as f:
            f.write('{"v":2}\n')
            f.write(json.dumps({"ban": "127.0.0.43", "since": now_ms,
                                "until": now_ms + 3600000, "offense": 1,
                                "reason": "kept"}) + "\n")
            f.write('{"ban":"127.0.0.44","since":%d,"unt' % now_ms)   # a crash mid-append
        policy = self.policy(self.state_file)
        gw = self.start_gateway(policy)
        self.assertRefused(gw, "127.0.0.43")
        c = self.raw_client(gw, "mx", "127.0.0.44")
        self.assertReply(c.greeting(), 220)
        self.assertEqual(gw.find(event="error", component="bans"), [])
        # Nothing moved aside (the journal's hidden temp file may exist during its rewrite).
        self.assertEqual([f for f in os.listdir(self.dir) if not f.startswith(".")],
                         ["bans.json"])
        status, body = admin(policy, "GET", "/bans")
        self.assertEqual([b["ip"] for b in json.loads(body)["bans"]], ["127.0.0.43"])

    def test_short_ban_lasts_its_duration(self):
        policy = self.policy(self.state_file)
        policy["brute_force"]["ban"] = "1s"
        gw = self.start_gateway(policy)
        self.banned_by_auth(gw, "127.0.0.45")
        t_ban = time.monotonic()
        self.assertRefused(gw, "127.0.0.45")
        # Free again after the second, not before (milliseconds, not the next whole second).
        def free():
            c = RawClient(gw.host("mx"), gw.port("mx"), "127.0.0.45")
            try:
                return c.greeting().code == 220
            finally:
                c.close()
        support.wait_until(free, 5, 0.02, "the ban to end")
        self.assertGreaterEqual(time.monotonic() - t_ban, 0.9)


if __name__ == "__main__":
    unittest.main()
