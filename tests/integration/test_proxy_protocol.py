"""Inbound PROXY protocol (SPEC §8): a load balancer in front of smtpgate. The address in the
header is the client for access lists, bans, logs, the Received: header and XCLIENT toward
the backend; anything else is closed without a byte. Raw headers (v1, v2, split, garbage,
untrusted sources) and a real HAProxy with send-proxy-v2. Clients on 127.0.6.0/24."""

import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.request

import support
from support import IntegrationTestCase, RawClient

HOSTNAME = "gw.example.test"
PROXY = "127.0.6.1"        # the load balancer (trusted)
STRANGER = "127.0.6.2"     # not in trusted_proxies
DENIED = "192.0.2.66"      # a carried client that mx.access denies
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src, dst="127.0.0.1", sport=40000, dport=25):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src=None, dst="127.0.0.1", sport=40000, dport=25, local=False, tlv=b""):
    if local:
        return SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    s = ipaddress.ip_address(src)
    if s.version == 4:
        block = s.packed + ipaddress.ip_address(dst).packed + struct.pack("!HH", sport, dport)
        fam = 0x11
    else:
        d = ipaddress.ip_address(dst if ":" in dst else "::1")
        block = s.packed + d.packed + struct.pack("!HH", sport, dport)
        fam = 0x21
    return SIG + bytes([0x21, fam]) + struct.pack("!H", len(block) + len(tlv)) + block + tlv


class ProxyProtocolTest(IntegrationTestCase):

    def setUp(self):
        self.backend = self.start_backend(xclient=True)
        self.policy = support.gateway_policy(
            self.backend.address, listeners=(("mx", "mx"),), hostname=HOSTNAME,
            client_ip="xclient",
            mx={"access": {"default": "allow", "deny": [DENIED + "/32"]}},
            trusted_proxies=[PROXY],
            admin={"listen": "127.0.0.1:%d" % support.free_port()},
            brute_force={"max_failures": 2})
        self.policy["listeners"][0]["proxy_protocol"] = True
        self.gw = self.start_gateway(self.policy)

    def connect(self, source=PROXY):
        return self.raw_client(self.gw, "mx", source)

    def metrics(self):
        url = "http://%s/metrics" % self.policy["admin"]["listen"]
        return urllib.request.urlopen(url, timeout=5).read().decode()

    def assert_closed_silently(self, c):
        # Closed with the client's bytes unread, the kernel may answer with a reset.
        try:
            self.assertEqual(c.pending(timeout=2.0), b"")
            self.assertTrue(c.is_closed())
        except ConnectionResetError:
            pass

    def deliver(self, c, tag):
        self.assertEqual(c.greeting().code, 220)
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.command("MAIL FROM:<a@other.example>").code, 250)
        self.assertEqual(c.command("RCPT TO:<user@example.com>").code, 250)
        self.assertEqual(c.command("DATA").code, 354)
        self.assertEqual(c.command(b"Subject: " + tag.encode() + b"\r\n\r\nhi\r\n.").code, 250)
        c.command("QUIT")
        return support.wait_until(
            lambda: [m for m in self.backend.messages() if tag.encode() in m["data"]], 10,
            message="delivery of " + tag)[0]

    def test_v1_client_address_is_used_everywhere(self):
        c = self.connect()
        c.send(v1("203.0.113.7"))
        m = self.deliver(c, "pp-v1")
        self.assertEqual(m["xclient"].get("ADDR"), "203.0.113.7", m["xclient"])
        self.assertIn(b"[203.0.113.7]", m["data"].split(b"\r\n\r\n")[0])  # our Received:
        opened = self.gw.wait_for_log(event="session_open")
        self.assertTrue(opened["client"].startswith("203.0.113.7:"), opened)
        self.assertIn('smtpgate_proxy_protocol_total{result="proxied"} 1', self.metrics())

    def test_v2_tcp6_with_tlvs(self):
        c = self.connect()
        c.send(v2("2001:db8::7", tlv=b"\x05\x00\x03abc"))  # a unique-id TLV, skipped
        m = self.deliver(c, "pp-v2")
        self.assertEqual(m["xclient"].get("ADDR"), "IPV6:2001:db8::7", m["xclient"])

    def test_header_split_across_writes(self):
        c = self.connect()
        header = v2("198.51.100.9")
        for i in range(len(header)):
            c.send(header[i:i + 1])
            time.sleep(0.005)
        m = self.deliver(c, "pp-split")
        self.assertEqual(m["xclient"].get("ADDR"), "198.51.100.9")

    def test_access_lists_judge_the_carried_address(self):
        c = self.connect()
        c.send(v1(DENIED))
        self.assertEqual(c.greeting().code, 554)
        d = self.gw.wait_for_log(event="decision", rule="mx.access")
        self.assertEqual(d["verdict"], "reject")
        self.assertTrue(d["client"].startswith(DENIED + ":"), d)

    def test_bans_hit_the_carried_client_never_the_proxy(self):
        for _ in range(2):
            c = self.connect()
            c.send(v1("203.0.113.44"))
            self.assertEqual(c.greeting().code, 220)
            c.ehlo()
            # AUTH on an mx listener is a failure; the second bans 203.0.113.44.
            c.command("AUTH PLAIN AGJvYgBwdw==")
        self.gw.wait_for_log(event="ban", ip="203.0.113.44")
        banned = self.connect()
        banned.send(v1("203.0.113.44"))
        self.assertEqual(banned.greeting().code, 554)
        other = self.connect()
        other.send(v1("203.0.113.45"))
        self.assertEqual(other.greeting().code, 220)
        # LOCAL (the balancer's health check) is judged as the proxy itself, which is
        # never banned however it fails.
        for _ in range(3):
            c = self.connect()
            c.send(v2(local=True))
            self.assertEqual(c.greeting().code, 220)
            c.ehlo()
            c.command("AUTH PLAIN AGJvYgBwdw==")
            c.close()
        health = self.connect()
        health.send(v2(local=True))
        self.assertEqual(health.greeting().code, 220)
        self.assertFalse(any(l.get("ip") == PROXY for l in self.gw.find(event="ban")))

    def test_v1_unknown_is_a_local_session(self):
        c = self.connect()
        c.send(b"PROXY UNKNOWN\r\n")
        self.assertEqual(c.greeting().code, 220)
        opened = self.gw.wait_for_log(event="session_open")
        self.assertTrue(opened["client"].startswith(PROXY + ":"), opened)

    def test_garbage_header_closed_without_a_byte(self):
        for junk in (b"EHLO client.example\r\n", b"GET / HTTP/1.0\r\n\r\n",
                     b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", SIG + b"\x31\x11\x00\x0c"):
            c = self.connect()
            c.send(junk)
            self.assert_closed_silently(c)
        err = self.gw.wait_for_log(event="error", component="proxy_protocol")
        self.assertIn("bad PROXY header", err["reason"])
        self.assertNotIn(b"EHLO", json.dumps(err).encode())  # the input is not echoed raw
        support.wait_until(
            lambda: 'smtpgate_proxy_protocol_total{result="invalid"} 4' in self.metrics(), 5,
            message="4 invalid headers counted")
        self.assertEqual(len(self.backend.connections()), 0)

    def test_untrusted_source_closed_without_a_byte(self):
        c = self.connect(STRANGER)
        c.send(v1("203.0.113.8"))
        self.assert_closed_silently(c)
        err = self.gw.wait_for_log(event="error", component="proxy_protocol")
        self.assertIn("not in trusted_proxies", err["reason"])
        self.assertTrue(err["client"].startswith(STRANGER + ":"), err)

    def test_smtp_without_a_header_is_refused(self):
        c = self.connect()
        self.assertEqual(c.pending(timeout=0.5), b"")  # no greeting before the header
        c.send(b"EHLO client.example\r\n")
        self.assert_closed_silently(c)

    def test_header_and_early_smtp_in_one_segment(self):
        # The bytes after the header are the client's: here sent before the greeting, so the
        # pregreet rule answers as it would without a balancer. Nothing is lost or misread.
        c = self.connect()
        c.send(v1("203.0.113.9") + b"EHLO early.example\r\n")
        reply = c.read_reply()
        self.assertEqual(reply.code, 554)
        d = self.gw.wait_for_log(event="decision", rule="protocol.sync")
        self.assertTrue(d["client"].startswith("203.0.113.9:"), d)

    def test_no_header_within_10_seconds(self):
        c = self.connect()
        c.send(b"PROXY TCP4 203.0.113.1")  # and then nothing
        start = time.monotonic()
        self.assertTrue(c.is_closed(timeout=15))
        self.assertGreaterEqual(time.monotonic() - start, 8.5)
        err = self.gw.wait_for_log(event="error", component="proxy_protocol")
        self.assertIn("no PROXY header within 10 s", err["reason"])


class ImplicitTlsProxyTest(IntegrationTestCase):
    """Port 465 behind a balancer: the PROXY header, then the TLS handshake; the ClientHello
    may come in the same read as the header."""

    def test_client_hello_in_the_same_segment_as_the_header(self):
        import ssl
        d = tempfile.mkdtemp(prefix="smtpgate-pp-tls-")
        self.addCleanup(shutil.rmtree, d, True)
        cert, key = support.make_test_cert(d)
        backend = self.start_backend(xclient=True)
        policy = support.gateway_policy(
            backend.address, listeners=(("smtps", "mx", "implicit"),), hostname=HOSTNAME,
            client_ip="xclient", trusted_proxies=[PROXY], tls={"cert": cert, "key": key})
        policy["listeners"][0]["proxy_protocol"] = True
        gw = self.start_gateway(policy)
        sock = socket.create_connection(("127.0.0.1", gw.port("smtps")), 10,
                                        source_address=(PROXY, 0))
        self.addCleanup(sock.close)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        sock.sendall(v1("203.0.113.61", dport=465) + outgoing.read())  # one segment
        deadline = time.monotonic() + 10
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    sock.sendall(pending)
                self.assertLess(time.monotonic(), deadline, "handshake did not complete")
                incoming.write(sock.recv(65536))
        sock.sendall(outgoing.read())
        greeting = b""
        while not greeting.endswith(b"\r\n"):
            try:
                greeting += tls.read(4096)
            except ssl.SSLWantReadError:
                incoming.write(sock.recv(65536))
        self.assertTrue(greeting.startswith(b"220 "), greeting)
        opened = gw.wait_for_log(event="session_open")
        self.assertTrue(opened["client"].startswith("203.0.113.61:"), opened)


@unittest.skipUnless(shutil.which("haproxy"), "needs haproxy")
class HaproxyTest(IntegrationTestCase):
    """A real HAProxy (TCP mode, send-proxy-v2) in front of the gateway."""

    def setUp(self):
        self.backend = self.start_backend(xclient=True)
        self.policy = support.gateway_policy(
            self.backend.address, listeners=(("mx", "mx"),), hostname=HOSTNAME,
            client_ip="xclient", trusted_proxies=["127.0.0.1"])
        self.policy["listeners"][0]["proxy_protocol"] = True
        self.gw = self.start_gateway(self.policy)
        self.front = support.free_port()
        d = tempfile.mkdtemp(prefix="smtpgate-haproxy-")
        self.addCleanup(shutil.rmtree, d, True)
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("""global
  log stdout format raw local0 err
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend smtp
  bind 127.0.0.1:%d
  default_backend gateways
backend gateways
  server gw1 127.0.0.1:%d send-proxy-v2 source 127.0.0.1
""" % (self.front, self.gw.port("mx")))
        self.haproxy = subprocess.Popen(["haproxy", "-db", "-f", cfg],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self._stop_haproxy)
        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.front), 0.5).close()
                return True
            except OSError:
                return False
        support.wait_until(listening, 10, message="haproxy listening")

    def _stop_haproxy(self):
        self.haproxy.terminate()
        try:
            self.haproxy.wait(5)
        except subprocess.TimeoutExpired:
            self.haproxy.kill()
            self.haproxy.wait()

    def test_client_address_through_haproxy(self):
        c = RawClient("127.0.0.1", self.front, "127.0.6.77")
        self.addCleanup(c.close)
        self.assertEqual(c.greeting().code, 220)
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.command("MAIL FROM:<a@other.example>").code, 250)
        self.assertEqual(c.command("RCPT TO:<user@example.com>").code, 250)
        self.assertEqual(c.command("DATA").code, 354)
        self.assertEqual(c.command(b"Subject: via haproxy\r\n\r\nhi\r\n.").code, 250)
        c.command("QUIT")
        m = self.backend.wait_for_messages(1)[0]
        self.assertEqual(m["xclient"].get("ADDR"), "127.0.6.77", m["xclient"])
        # (the readiness probe above went through HAProxy too, as 127.0.0.1)
        support.wait_until(
            lambda: [o for o in self.gw.find(event="session_open")
                     if o["client"].startswith("127.0.6.77:")], 5,
            message="a session_open line naming 127.0.6.77")


if __name__ == "__main__":
    unittest.main()
