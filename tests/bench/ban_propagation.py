#!/usr/bin/python3
"""Ban propagation between two gateways sharing Redis (driver for ban_propagation.sh).

Issues bans on instance A and measures how long until instance B refuses the address.
Clients are named by PROXY v2 headers sent from 127.0.0.1 (B's trusted proxy); the
addresses are 198.18.x.y (RFC 2544's benchmarking range), address i = 198.18.0.0 + i.

Phases (--phase):
  normal   for each of --n addresses, one after the other (--gap-ms apart): check that B
           does not refuse it yet, ban it on A (--via admin: POST /bans/<ip> on A's admin
           endpoint; --via guess: 5 connections to A's listener, each EHLO + AUTH PLAIN with
           its own wrong password, the backend answering 535), then poll B every
           --interval-ms (start to start; never more than --bound-s, i.e. at most
           bound/interval + 1 probes) until B refuses it. The probe alternates per address
           over --probe: "greeting" (a connection to B's listener with the PROXY v2 header:
           refused = 554 at greeting) or "bans" (GET /bans on B's admin endpoint: refused =
           the address is listed).
           t0 = A's answer received (the admin POST's 200, or the 5th AUTH's 535): A holds
           the ban then. delay = t0 -> the end of B's first refusing probe (an upper bound);
           lower = t0 -> the start of B's last non-refusing probe (0 if the first probe
           refused): B applied the ban between the two.
  down     (Redis stopped) ban --n addresses on A; right after each, one greeting probe on B
           (expected: not refused, B cannot know yet). Writes the addresses and ban times.
  recover  (Redis started again at wall time --since-wall) greeting probes on B for the
           addresses of --down-json, round robin, one every --interval-ms, at most --bound-s,
           until B refuses all of them; per address: wall time of the first refusing probe,
           minus --since-wall and minus its ban time.

Loopback only. Every socket has a timeout; every loop is bounded in count and time.
Writes JSON to stdout.
"""
import argparse
import base64
import http.client
import ipaddress
import json
import socket
import struct
import sys
import time

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def hostport(s):
    h, p = s.rsplit(":", 1)
    if not h.startswith("127."):
        sys.exit("loopback only: " + s)
    return h, int(p)


def v2(src, dst="127.0.0.1", sport=40000, dport=25):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    block = s.packed + d.packed + struct.pack("!HH", sport, dport)
    return SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


def addr(i):
    return str(ipaddress.ip_address("198.18.0.0") + i)


def read_line(sock, buf=b""):
    """One complete SMTP reply; returns (code, rest)."""
    while True:
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            if len(line) < 4 or line[3:4] != b"-":
                return line[:3].decode("ascii", "replace"), buf
        d = sock.recv(4096)
        if not d:
            return "EOF", b""
        buf += d


def greeting(mx, ip, timeout=1.0):
    """B's greeting code for a client named ip by a PROXY v2 header."""
    with socket.create_connection(mx, timeout) as s:
        s.settimeout(timeout)
        s.sendall(v2(ip))
        code, _ = read_line(s)
        return code


class Admin:
    """One keep-alive-less HTTP/1.1 client per request (the admin server closes anyway)."""

    def __init__(self, hp):
        self.hp = hp

    def call(self, method, path, timeout=2.0):
        c = http.client.HTTPConnection(self.hp[0], self.hp[1], timeout=timeout)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            c.close()


def listed(admin, ip):
    st, body = admin.call("GET", "/bans")
    if st != 200:
        raise RuntimeError("GET /bans: %d %s" % (st, body[:200]))
    return ('"%s"' % ip) in body


def refused(kind, b_mx, b_admin, ip):
    if kind == "greeting":
        code = greeting(b_mx, ip)
        if code not in ("220", "554"):
            raise RuntimeError("B greeted %s with %s" % (ip, code))
        return code == "554"
    return listed(b_admin, ip)


GUESSES = [0]


def guess(a_mx, ip, n=5, timeout=2.0):
    """n connections to A from ip, each EHLO + AUTH PLAIN with its own wrong password; returns
    the last AUTH reply's code and the time it arrived."""
    code = "?"
    for _ in range(n):
        with socket.create_connection(a_mx, timeout) as s:
            s.settimeout(timeout)
            s.sendall(v2(ip))
            c, buf = read_line(s)
            if c != "220":
                return c, time.monotonic()
            s.sendall(b"EHLO bench.example\r\n")
            c, buf = read_line(s, buf)
            GUESSES[0] += 1
            blob = base64.b64encode(b"\0bob\0wrong-%d" % GUESSES[0]).decode()
            s.sendall(("AUTH PLAIN %s\r\n" % blob).encode())
            code, buf = read_line(s, buf)
            t = time.monotonic()
    return code, t


def ban_on_a(a, via, ip):
    """Returns (t_send, t0, detail); t0 = A's answer received (monotonic)."""
    t_send = time.monotonic()
    if via == "admin":
        st, body = a["admin"].call("POST", "/bans/" + ip)
        t0 = time.monotonic()
        if st != 200 or '"banned"' not in body:
            raise RuntimeError("POST /bans/%s on A: %d %s" % (ip, st, body[:200]))
        return t_send, t0, st
    code, t0 = guess(a["mx"], ip)
    if code != "535":
        raise RuntimeError("5th AUTH on A from %s: %s" % (ip, code))
    return t_send, t0, code


def poll(kind, b_mx, b_admin, ip, t0, interval, bound):
    """Probes B from t0 every interval s (start to start) for at most bound s."""
    max_probes = int(bound / interval) + 1
    nxt = t0
    last_no_start = None
    for k in range(max_probes):
        now = time.monotonic()
        if nxt > now:
            time.sleep(nxt - now)
        s = time.monotonic()
        if s - t0 > bound:
            break
        r = refused(kind, b_mx, b_admin, ip)
        e = time.monotonic()
        if r:
            return {"delay_ms": (e - t0) * 1e3,
                    "lower_ms": ((last_no_start - t0) * 1e3) if last_no_start is not None else 0.0,
                    "probe_ms": (e - s) * 1e3, "probes": k + 1}
        last_no_start = s
        nxt = max(nxt + interval, time.monotonic())
    return {"delay_ms": None, "probes": max_probes, "timeout": True}


def phase_normal(a, b_mx, b_admin, args):
    kinds = args.probe.split(",")
    out = []
    deadline = time.monotonic() + args.time_limit
    for j in range(args.n):
        if time.monotonic() > deadline:
            out.append({"error": "time limit reached after %d addresses" % j})
            break
        ip = addr(args.first + j)
        kind = kinds[j % len(kinds)]
        rec = {"ip": ip, "probe": kind}
        try:
            if refused(kind, b_mx, b_admin, ip):
                raise RuntimeError("B refused %s before the ban" % ip)
            t_send, t0, _ = ban_on_a(a, args.via, ip)
            rec["ban_ms"] = (t0 - t_send) * 1e3
            rec.update(poll(kind, b_mx, b_admin, ip, t0, args.interval_ms / 1e3, args.bound_s))
            if rec.get("delay_ms") is not None:
                rec["from_send_ms"] = rec["delay_ms"] + rec["ban_ms"]
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            rec["error"] = "%s: %s" % (type(e).__name__, e)
        out.append(rec)
        time.sleep(args.gap_ms / 1e3)
    return out


def phase_down(a, b_mx, args):
    out = []
    for j in range(args.n):
        ip = addr(args.first + j)
        rec = {"ip": ip}
        try:
            _, t0, _ = ban_on_a(a, args.via, ip)
            rec["ban_wall"] = time.time() - (time.monotonic() - t0)
            time.sleep(0.05)
            rec["b_code_after_50ms"] = greeting(b_mx, ip)
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            rec["error"] = "%s: %s" % (type(e).__name__, e)
        out.append(rec)
        time.sleep(args.gap_ms / 1e3)
    return out


def phase_recover(b_mx, args):
    down = json.load(open(args.down_json))["records"]
    pending = {r["ip"]: r for r in down if "error" not in r}
    out = {ip: {"ip": ip, "ban_wall": r["ban_wall"]} for ip, r in pending.items()}
    interval = args.interval_ms / 1e3
    t_start = time.monotonic()
    max_probes = int(args.bound_s / interval) + 1
    probes = 0
    nxt = t_start
    while pending and probes < max_probes and time.monotonic() - t_start <= args.bound_s:
        order = list(pending)
        ip = order[probes % len(order)]
        probes += 1
        now = time.monotonic()
        if nxt > now:
            time.sleep(nxt - now)
        nxt = max(nxt + interval, time.monotonic())
        try:
            code = greeting(b_mx, ip)
        except OSError as e:
            out[ip]["last_error"] = str(e)
            continue
        if code == "554":
            w = time.time()
            out[ip]["refused_wall"] = w
            out[ip]["from_redis_up_ms"] = (w - args.since_wall) * 1e3
            out[ip]["from_ban_ms"] = (w - pending[ip]["ban_wall"]) * 1e3
            del pending[ip]
    for ip in pending:
        out[ip]["timeout"] = True
    return list(out.values()), probes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phase", choices=["normal", "down", "recover"], default="normal")
    ap.add_argument("--a-admin", required=True)
    ap.add_argument("--a-mx", required=True)
    ap.add_argument("--b-admin", required=True)
    ap.add_argument("--b-mx", required=True)
    ap.add_argument("--via", choices=["admin", "guess"], default="admin")
    ap.add_argument("--probe", default="greeting,bans")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--first", type=int, default=1, help="index of the first address")
    ap.add_argument("--interval-ms", type=float, default=2.0)
    ap.add_argument("--bound-s", type=float, default=2.0)
    ap.add_argument("--gap-ms", type=float, default=20.0)
    ap.add_argument("--time-limit", type=float, default=300.0)
    ap.add_argument("--down-json")
    ap.add_argument("--since-wall", type=float)
    args = ap.parse_args()
    if not (1 <= args.n <= 5000 and 0.5 <= args.interval_ms <= 1000 and 0 < args.bound_s <= 120
            and 1 <= args.first and args.first + args.n < 65000 and 0 <= args.gap_ms <= 10000):
        sys.exit("n 1..5000, interval 0.5..1000 ms, bound <= 120 s, first + n < 65000")
    for k in args.probe.split(","):
        if k not in ("greeting", "bans"):
            sys.exit("--probe: greeting and/or bans")
    a = {"admin": Admin(hostport(args.a_admin)), "mx": hostport(args.a_mx)}
    b_mx, b_admin = hostport(args.b_mx), Admin(hostport(args.b_admin))
    t = time.monotonic()
    res = {"phase": args.phase, "args": vars(args)}
    if args.phase == "normal":
        res["records"] = phase_normal(a, b_mx, b_admin, args)
    elif args.phase == "down":
        res["records"] = phase_down(a, b_mx, args)
    else:
        res["records"], res["probes"] = phase_recover(b_mx, args)
    res["wall_s"] = time.monotonic() - t
    json.dump(res, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
