#!/usr/bin/python3
"""AUTH load from many addresses for many logins (driver for tests/bench/auth_defence_bench.sh).

Several gateways side by side (--port P1,P2,..., --gw-pid in the same order) get the same
load at the same time: connection i goes to gateway i % n as that gateway's connection
k = i // n, so every gateway sees the same connections, addresses, logins and passwords,
interleaved, under the same machine load.

Connection k comes from its own bound source address (127.<B + i // 62500>.<(i // 250) %
250>.<i % 250 + 1>, B = --addr-octet; any 127.0.0.0/8 address works on Linux loopback),
reads 220, sends EHLO, then --per-conn (K) AUTH PLAIN exchanges one at a time, then QUIT
and reads until the gateway closes. Logins are u<n>@example.com; the backend
(auth_backend.py) takes "right:" + the login as the password.

Default pattern (the CPU runs): address i = k % --addresses; attempt j of connection k
(index g = k*K + j) is for login g % --logins with the wrong password guess-<g % 7>,
except the last one: in every --success-every-th connection it is the right password for
its login (235: a success, where per_login records a known-good address and
submission.breaker counts the login's addresses), otherwise it repeats attempt 0 (same
login, same wrong password: the repeated failure distinct_passwords counts once).

--distinct (the memory run): every AUTH is for its own login (u<g>@example.com), every
connection from its own address (i = k), every password wrong and different: N failures
for N distinct logins from N / K distinct addresses.

Expected replies: 535 for a wrong password, 235 for the right one; anything else is
counted under "unexpected" (and makes the exit status 1), so a lock, a ban or a
suspension during the run shows. At most --concurrency connections in flight in all; one
epoll loop. With --gw-pid: each gateway's CPU (utime+stime ticks from /proc/PID/stat, and
the sum of /proc/PID/task/*/schedstat in ns) and VmRSS at the start, every --bucket AUTH
replies (all gateways together), and 0.3 s after the last connection closed. With
--backend-port: the backend's XSTATS counters before and after (every AUTH must have
reached it).

Bounded: --auths (per gateway) <= 2,000,000, at most 4 gateways, and --time-limit seconds
(no new connection after it; those in flight finish); each connection is given up after
--conn-timeout seconds. Loopback only. Prints one JSON object on stdout ("targets": one
entry per gateway).
"""
import argparse
import base64
import errno
import glob
import json
import os
import resource
import select
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
EHLO = b"EHLO client.example.net\r\n"
MAX_AUTHS = 2_000_000


def source(base, i):
    return "127.%d.%d.%d" % (base + i // 62500, (i // 250) % 250, i % 250 + 1)


def auth_line(login, password):
    blob = b"\0" + login.encode() + b"\0" + password.encode()
    return b"AUTH PLAIN " + base64.b64encode(blob) + b"\r\n"


def gw_cpu_ns(pid):
    t = 0
    for f in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(f) as fh:
                t += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return t


def gw_ticks(pid):
    with open("/proc/%d/stat" % pid) as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def gw_rss_kb(pid):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def backend_stats(port):
    """The backend's XSTATS counters (None if it does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"XSTATS\r\n")
            line = f.readline()
            s.sendall(b"QUIT\r\n")
            return json.loads(line[4:])
    except (OSError, ValueError):
        return None


class Plan:
    """Connection k of each gateway: its source address, [(AUTH line, expected code)]."""

    def __init__(self, a):
        self.a = a

    def address(self, k):
        a = self.a
        return source(a.addr_octet, k if a.distinct else k % a.addresses)

    def attempts(self, k):
        a = self.a
        per = a.per_conn
        first = k * per
        n = min(per, a.auths - first)
        out = []
        if a.distinct:
            for j in range(n):
                g = first + j
                out.append((auth_line("u%d@example.com" % g, "guess-%d" % g), "535"))
            return out
        success = a.success_every > 0 and k % a.success_every == 0
        for j in range(n):
            g = first + j
            login = "u%d@example.com" % (g % a.logins)
            if j == per - 1 and j > 0:
                if success:
                    out.append((auth_line(login, "right:" + login), "235"))
                else:
                    out.append(out[0])   # the first attempt again: a repeated failure
            else:
                out.append((auth_line(login, "guess-%d" % (g % 7)), "535"))
        return out


def run(a):
    plan = Plan(a)
    ports, pids = a.ports, a.pids
    nt = len(ports)
    n_plan = (a.auths + a.per_conn - 1) // a.per_conn   # connections per target
    n_conns = n_plan * nt
    ep = select.epoll()
    conns = {}
    T = [{"port": p, "conns": 0, "conns_closed_ok": 0, "auths_sent": 0, "auths": 0,
          "replies": {}, "unexpected": {}, "errors": {}, "timeouts": 0, "last_reply": 0.0}
         for p in ports]
    buckets = []
    auths_done = 0

    def count(d, k, n=1):
        d[k] = d.get(k, 0) + n

    def gw_sample():
        return [{"ticks": gw_ticks(p), "ns": gw_cpu_ns(p), "rss_kb": gw_rss_kb(p)} for p in pids]

    be0 = backend_stats(a.backend_port) if a.backend_port else None
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    g0 = gw_sample()
    m0 = time.monotonic()
    deadline = m0 + a.time_limit
    last_bucket = (m0, [g["ns"] for g in g0])
    next_sweep = m0 + 0.5
    backoff_until = 0.0
    time_limit_hit = False
    started = 0

    def finish(fd, err=None):
        c = conns.pop(fd)
        try:
            ep.unregister(fd)
        except OSError:
            pass
        c["sock"].close()
        t = T[c["target"]]
        if err is not None:
            count(t["errors"], err)
            if err.startswith("timeout"):
                t["timeouts"] += 1
        elif c["state"] != "quit":
            count(t["errors"], "closed in state " + c["state"])
        else:
            t["conns_closed_ok"] += 1

    def send_next(c):
        if c["next"] < len(c["plan"]):
            c["state"] = "auth"
            c["sock"].send(c["plan"][c["next"]][0])   # < 200 bytes into an empty buffer
            T[c["target"]]["auths_sent"] += 1
        else:
            c["state"] = "quit"
            c["sock"].send(b"QUIT\r\n")

    while True:
        now = time.monotonic()
        if now >= deadline and not time_limit_hit:
            time_limit_hit = started < n_conns
        if (started >= n_conns or time_limit_hit) and not conns:
            break
        if now >= deadline + a.conn_timeout:
            break
        while (not time_limit_hit and started < n_conns and len(conns) < a.concurrency
               and now >= backoff_until):
            # Connection i goes to target i % nt as that target's connection i // nt: every
            # target gets the same plan, the targets' connections interleaved.
            ti, k = started % nt, started // nt
            started += 1
            T[ti]["conns"] += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((plan.address(k), 0))
                s.setblocking(False)
                rc = s.connect_ex((a.host, ports[ti]))
            except OSError as e:
                rc = e.errno
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                count(T[ti]["errors"], "connect:" + errno.errorcode.get(rc, str(rc)))
                backoff_until = time.monotonic() + 0.05
                continue
            fd = s.fileno()
            conns[fd] = {"sock": s, "state": "greet", "buf": bytearray(), "t": now,
                         "plan": plan.attempts(k), "next": 0, "target": ti}
            ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        for fd, ev in ep.poll(0.05):
            c = conns.get(fd)
            if c is None:
                continue
            sock = c["sock"]
            t = T[c["target"]]
            err = None
            eof = False
            while True:
                try:
                    d = sock.recv(4096)
                except BlockingIOError:
                    break
                except OSError as e:
                    err = "recv:" + errno.errorcode.get(e.errno, str(e.errno))
                    break
                if not d:
                    eof = True
                    break
                c["buf"] += d
            buf = c["buf"]
            while err is None:
                i = buf.find(b"\r\n")
                if i < 0:
                    break
                line = bytes(buf[:i])
                del buf[:i + 2]
                if len(line) >= 4 and line[3:4] == b"-":
                    continue
                code = line[:3].decode("ascii", "replace")
                st = c["state"]
                if st == "greet":
                    if code != "220":
                        err = "greeting " + code
                        break
                    c["state"] = "ehlo"
                    sock.send(EHLO)
                elif st == "ehlo":
                    if code != "250":
                        err = "ehlo " + code
                        break
                    send_next(c)
                elif st == "auth":
                    want = c["plan"][c["next"]][1]
                    count(t["replies"], code)
                    if code != want:
                        count(t["unexpected"], "%s (wanted %s): %s" % (
                            code, want, line[:60].decode("ascii", "replace")))
                    c["next"] += 1
                    t["auths"] += 1
                    auths_done += 1
                    if pids and auths_done % a.bucket == 0:
                        tb, ns = time.monotonic(), [gw_cpu_ns(p) for p in pids]
                        buckets.append({
                            "auths": auths_done, "t": round(tb - m0, 3),
                            "auth_s": round(a.bucket / (tb - last_bucket[0]), 1),
                            "gw_cpu_us_per_auth": [round((x - y) / 1000 / (a.bucket / nt), 2)
                                                   for x, y in zip(ns, last_bucket[1])],
                            "gw_rss_kb": [gw_rss_kb(p) for p in pids]})
                        last_bucket = (tb, ns)
                    if code != "235" and code != "535" and code[0] != "4":
                        c["next"] = len(c["plan"])   # the gateway may close: stop here
                    send_next(c)
                elif st == "quit":
                    t["last_reply"] = time.monotonic() - m0   # 221; the gateway closes next
            if err is None and not eof and ev & (select.EPOLLERR | select.EPOLLHUP):
                e = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                err = "sock:" + errno.errorcode.get(e, str(e)) if e else None
                eof = True
            if err is not None or eof:
                finish(fd, err)
        now = time.monotonic()
        if now >= next_sweep:
            next_sweep = now + 0.5
            for fd in [fd for fd, c in conns.items() if now - c["t"] > a.conn_timeout]:
                finish(fd, "timeout")
    for fd in list(conns):
        finish(fd, "timeout (time limit)")
    wall = time.monotonic() - m0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "conns": started, "auths": auths_done, "time_limit_hit": time_limit_hit,
        "wall_s": round(wall, 3), "auth_s": round(auths_done / wall, 1) if wall > 0 else 0,
        "client_cpu_s": round(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime, 3),
    }
    if pids:
        time.sleep(0.3)   # the gateways close their backend connections, their log threads write
        g1 = gw_sample()
        for t, x, y in zip(T, g0, g1):
            t["gw"] = {"start": x, "end": y, "ticks": y["ticks"] - x["ticks"],
                       "cpu_ns": y["ns"] - x["ns"]}
        out["buckets"] = buckets
    out["targets"] = T
    if a.backend_port:
        be1 = backend_stats(a.backend_port)
        if be0 and be1:
            out["backend"] = {k: be1[k] - be0[k] for k in be1}
    print(json.dumps(out))
    bad = any(t["unexpected"] or t["errors"] or t["auths"] != t["auths_sent"] for t in T)
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", required=True,
                    help="gateway port, or several comma-separated: each gets the same load")
    ap.add_argument("--backend-port", type=int, default=0)
    ap.add_argument("--auths", type=int, default=100000, help="AUTH exchanges per gateway")
    ap.add_argument("--per-conn", type=int, default=5, help="AUTH exchanges per connection")
    ap.add_argument("--addresses", type=int, default=20000)
    ap.add_argument("--logins", type=int, default=10000)
    ap.add_argument("--success-every", type=int, default=2,
                    help="every Nth connection ends with the right password (0: never)")
    ap.add_argument("--distinct", action="store_true", help="see above (the memory run)")
    ap.add_argument("--addr-octet", type=int, default=2, help="second octet of the sources")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--time-limit", type=float, default=300.0)
    ap.add_argument("--conn-timeout", type=float, default=30.0)
    ap.add_argument("--gw-pid", default="", help="the gateways' PIDs, in --port's order")
    ap.add_argument("--bucket", type=int, default=10000, help="AUTH replies per bucket")
    a = ap.parse_args()
    a.ports = [int(x) for x in a.port.split(",")]
    a.pids = [int(x) for x in a.gw_pid.split(",")] if a.gw_pid else []
    if a.pids and len(a.pids) != len(a.ports):
        sys.exit("one --gw-pid per --port")
    if not 1 <= len(a.ports) <= 4:
        sys.exit("1..4 gateways")
    if not a.host.startswith("127."):
        sys.exit("loopback only")
    n_addr = (a.auths + a.per_conn - 1) // a.per_conn if a.distinct else a.addresses
    if not (1 <= a.auths <= MAX_AUTHS and 1 <= a.per_conn <= 20 and 1 <= a.logins
            and 1 <= a.addresses and 1 <= a.concurrency <= 512 and 0 <= a.success_every
            and 1 <= a.bucket and 0 < a.time_limit <= 900 and 0 < a.conn_timeout <= 120):
        sys.exit("bounds: auths 1..%d, per-conn 1..20, concurrency 1..512, time-limit <= 900 s"
                 % MAX_AUTHS)
    if not (1 <= a.addr_octet and a.addr_octet + (n_addr - 1) // 62500 <= 254):
        sys.exit("source addresses past 127.254.x.y")
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
