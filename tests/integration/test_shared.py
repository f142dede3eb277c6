"""State shared between instances through a real Redis (SPEC §8): two gateways built from
examples/behind-haproxy (gw1.json, gw2.json), a redis-server of the test's own on a free
loopback port, and, for one test, the example's HAProxy in front. Clients are named by the
PROXY v2 headers the balancer (127.0.0.1) sends; addresses 203.0.113.0/24."""

import base64
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.request

import support
from support import IntegrationTestCase, RawClient, check_no_secret

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples",
                        "behind-haproxy")
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(src, dst="127.0.0.1", sport=40000, dport=25):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    block = s.packed + d.packed + struct.pack("!HH", sport, dport)
    return SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


def load_jsonc(path):
    with open(path) as f:
        text = f.read()
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)        # whole-line comments
    text = re.sub(r",?\s*//[^\n\"]*$", lambda m: "," if m.group(0).lstrip().startswith(",") else "",
                  text, flags=re.M)                          # trailing comments
    return json.loads(text)


class RedisServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="smtpgate-redis-")
        self.port = support.free_port()
        self.proc = None

    def start(self, password=None):
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no"]
        if password:
            args += ["--requirepass", password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ready():
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    reply = s.recv(64)
                    return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
            except OSError:
                return False
        support.wait_until(ready, 10, message="redis-server answering")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@unittest.skipUnless(os.path.exists(REDIS), "needs redis-server")
class SharedStateTest(IntegrationTestCase):

    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.backend = self.start_backend(xclient=True,
                                          users={"owner@example.com": "right-password"})
        self.prefix = "t%d:" % os.getpid()
        self.state_dir = tempfile.mkdtemp(prefix="smtpgate-shared-")
        self.addCleanup(shutil.rmtree, self.state_dir, True)

    def instance(self, name, redis_port=None, password_file=None, **brute_force):
        p = load_jsonc(os.path.join(EXAMPLES, name + ".json"))
        p["listeners"][0]["listen"] = "127.0.0.1:%d" % support.free_port()
        p["backend"]["address"] = self.backend.address
        p["admin"]["listen"] = "127.0.0.1:%d" % support.free_port()
        p["shared"]["redis"] = "127.0.0.1:%d" % (redis_port or self.redis.port)
        p["shared"]["prefix"] = self.prefix
        if password_file:
            p["shared"]["password_file"] = password_file
        p["brute_force"]["state_file"] = os.path.join(self.state_dir, name + ".json")
        p["brute_force"].update(brute_force)
        p["log"] = {"format": "json", "path": "-"}
        gw = self.start_gateway(p)
        return gw

    def wait_up(self, gw):
        gw.wait_for_log(event="shared", state="up", timeout=10)

    def client(self, gw, ip):
        c = RawClient(gw.host("mx"), gw.port("mx"), "127.0.0.1")
        self.addCleanup(c.close)
        c.send(v2(ip))
        return c

    guesses = 0

    def guess(self, gw, ip, n=1):
        """n AUTH attempts from ip, each with a new wrong password (a repeated one would count
        once: distinct_passwords)."""
        for _ in range(n):
            c = self.client(gw, ip)
            if c.greeting().code != 220:
                return False
            c.ehlo()
            SharedStateTest.guesses += 1
            blob = base64.b64encode(b"\0bob\0guess-%d" % SharedStateTest.guesses).decode()
            c.command("AUTH PLAIN " + blob)
            c.close()
        return True

    def greeting(self, gw, ip):
        return self.client(gw, ip).greeting().code

    def admin(self, gw, method, path):
        url = "http://%s%s" % (gw.policy["admin"]["listen"], path)
        req = urllib.request.Request(url, method=method)
        try:
            return urllib.request.urlopen(req, timeout=5).read().decode()
        except urllib.error.HTTPError as e:
            return e.read().decode()

    def refused_within(self, gw, ip, seconds):
        start = time.monotonic()
        support.wait_until(lambda: self.greeting(gw, ip) == 554, seconds,
                           message="%s refused by the other instance" % ip)
        return time.monotonic() - start

    def test_a_ban_on_one_instance_holds_on_the_other_within_a_second(self):
        a, b = self.instance("gw1"), self.instance("gw2")
        self.wait_up(a)
        self.wait_up(b)
        self.assertEqual(self.greeting(b, "203.0.113.10"), 220)
        # A guesser: five wrong passwords through A (the backend refuses each) ban it there ...
        self.assertTrue(self.guess(a, "203.0.113.10", 5))
        a.wait_for_log(event="ban", ip="203.0.113.10")
        # ... and B refuses it within a second.
        delay = self.refused_within(b, "203.0.113.10", 1.0)
        self.assertLess(delay, 1.0)
        self.assertIn("203.0.113.10", self.admin(b, "GET", "/bans"))
        # Lifted on B, lifted on A.
        self.assertIn("unbanned", self.admin(b, "DELETE", "/bans/203.0.113.10"))
        support.wait_until(lambda: self.greeting(a, "203.0.113.10") == 220, 1.0,
                           message="the lift reaching A")

    def test_failures_on_both_instances_add_up_to_one_ban(self):
        a, b = self.instance("gw1", max_failures=4), self.instance("gw2", max_failures=4)
        self.wait_up(a)
        self.wait_up(b)
        for gw in (a, b, a):
            self.assertTrue(self.guess(gw, "203.0.113.20"))
        time.sleep(0.3)  # the failures' events reach the other instance
        self.assertTrue(self.guess(b, "203.0.113.20"))  # the 4th, counted on B
        b.wait_for_log(event="ban", ip="203.0.113.20")
        self.refused_within(a, "203.0.113.20", 1.0)

    def test_redis_down_and_back(self):
        a, b = self.instance("gw1"), self.instance("gw2")
        self.wait_up(a)
        self.wait_up(b)
        self.admin(a, "POST", "/bans/203.0.113.30")
        self.refused_within(b, "203.0.113.30", 1.0)
        self.redis.kill()
        a.wait_for_log(event="error", component="shared", timeout=15)
        # Both keep serving and keep their bans.
        self.assertEqual(self.greeting(a, "203.0.113.31"), 220)
        self.assertEqual(self.greeting(b, "203.0.113.30"), 554)
        # A decides while Redis is down ...
        self.admin(a, "POST", "/bans/203.0.113.32")
        self.assertEqual(self.greeting(b, "203.0.113.32"), 220)
        # ... and B learns it once Redis is back (A publishes what it decided meanwhile).
        port = self.redis.port
        self.redis = RedisServer()
        self.redis.port = port
        self.redis.start()
        self.addCleanup(self.redis.stop)
        self.refused_within(b, "203.0.113.32", 35)

    def test_redis_password_from_a_file_never_logged(self):
        secret = "s3cret-redis-Pw-41"
        self.redis.kill()
        self.redis = RedisServer()
        self.redis.start(password=secret)
        self.addCleanup(self.redis.stop)
        path = os.path.join(self.state_dir, "redis.pass")
        with open(path, "w") as f:
            f.write(secret + "\n")
        a = self.instance("gw1", password_file=path)
        self.wait_up(a)
        self.assertIn("smtpgate_shared_up 1", self.admin(a, "GET", "/metrics"))
        # A wrong one: the link stays down, logged, and still no password in the log.
        with open(path, "w") as f:
            f.write("wrong-" + secret + "\n")
        b = self.instance("gw2", password_file=path)
        b.wait_for_log(event="error", component="shared", timeout=10)
        self.assertEqual(self.greeting(b, "203.0.113.45"), 220)
        for gw in (a, b):
            self.assertEqual(gw.stop(), 0)
            check_no_secret(gw, secret)
            check_no_secret(gw, "wrong-" + secret)

    def test_an_instance_started_while_redis_is_down_serves_at_once(self):
        self.redis.kill()
        a = self.instance("gw1")
        self.assertEqual(self.greeting(a, "203.0.113.40"), 220)
        self.assertIn("smtpgate_shared_up 0", self.admin(a, "GET", "/metrics"))


    def test_login_lock_and_the_owners_address_are_shared(self):
        per_login = {"max_failures": 3, "lock": "1h"}
        a = self.instance("gw1", max_failures=100, per_login=per_login)
        b = self.instance("gw2", max_failures=100, per_login=per_login)
        self.wait_up(a)
        self.wait_up(b)

        def auth(gw, ip, password):
            c = self.client(gw, ip)
            self.assertEqual(c.greeting().code, 220)
            c.ehlo()
            blob = base64.b64encode(b"\0owner@example.com\0" + password.encode()).decode()
            code = c.command("AUTH PLAIN " + blob).code
            c.close()
            return code

        self.assertEqual(auth(a, "203.0.113.50", "right-password"), 235)  # the owner, on A
        time.sleep(0.3)
        # Strangers guess through B (one address each) until the login locks ...
        for i in range(3):
            self.assertEqual(auth(b, "203.0.113.%d" % (60 + i), "guess-%d" % i), 535)
        b.wait_for_log(event="login_lock", login="owner@example.com")
        # ... and A knows the lock: a new stranger is refused there without the backend.
        support.wait_until(lambda: auth(a, "203.0.113.70", "right-password") == 535, 2,
                           message="the lock reaching A")
        # The owner's address, known on A, is known on B too: the owner still gets in there.
        self.assertEqual(auth(b, "203.0.113.50", "right-password"), 235)

    @unittest.skipUnless(shutil.which("haproxy"), "needs haproxy")
    def test_behind_haproxy(self):
        a, b = self.instance("gw1"), self.instance("gw2")
        self.wait_up(a)
        self.wait_up(b)
        front = support.free_port()
        with open(os.path.join(EXAMPLES, "haproxy.cfg")) as f:
            cfg = f.read()
        cfg = cfg.replace("bind :25", "bind 127.0.0.1:%d" % front)
        cfg = cfg.replace("127.0.0.1:10251", "127.0.0.1:%d" % a.port("mx"))
        cfg = cfg.replace("127.0.0.1:10252", "127.0.0.1:%d" % b.port("mx"))
        cfg = cfg.replace("log stdout format raw local0 info", "log stdout format raw local0 err")
        path = os.path.join(self.state_dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        proc = subprocess.Popen(["haproxy", "-db", "-f", path], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (proc.terminate(), proc.wait(10)))

        def through(source):
            c = RawClient("127.0.0.1", front, source)
            self.addCleanup(c.close)
            return c

        def answering():
            try:
                return through("127.0.8.1").greeting().code == 220
            except OSError:
                return False
        support.wait_until(answering, 10, message="haproxy forwarding")
        # A guesser through the balancer: its attempts alternate between the instances, the
        # failures add up, and once banned it is refused by both.
        for i in range(5):
            c = through("127.0.8.9")
            if c.greeting().code != 220:
                break
            c.ehlo()
            blob = base64.b64encode(b"\0bob\0through-%d" % i).decode()
            c.command("AUTH PLAIN " + blob)
            c.close()
            time.sleep(0.1)
        support.wait_until(lambda: a.find(event="ban", ip="127.0.8.9") or
                           b.find(event="ban", ip="127.0.8.9"), 5, message="a ban")
        time.sleep(1.0)
        codes = [through("127.0.8.9").greeting().code for _ in range(4)]
        self.assertEqual(codes, [554] * 4)
        # Both instances saw the guesser's own address (sessions from 127.0.0.1 itself are the
        # balancer's health checks: PROXY v2 LOCAL, judged as the balancer).
        self.assertTrue(any(o["client"].startswith("127.0.8.9:") for o in a.find(event="session_open")))
        self.assertTrue(any(o["client"].startswith("127.0.8.9:") for o in b.find(event="session_open")))
        self.assertFalse(a.find(event="ban", ip="127.0.0.1") + b.find(event="ban", ip="127.0.0.1"))


if __name__ == "__main__":
    unittest.main()
