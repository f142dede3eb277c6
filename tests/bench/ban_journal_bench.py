#!/usr/bin/python3
"""Bans N distinct addresses one connection each (driver for tests/bench/ban_journal_bench.sh).

The gateway's policy has `"mx": {"auth": "ban"}`: any AUTH on the mx listener bans the
client's IP at once, so one connection is one ban. Connection i comes from its own source
address 127.1.0.1, 127.1.0.2, ... (127.<1 + i // 62500>.<(i // 250) % 250>.<i % 250 + 1>;
any 127.0.0.0/8 address works on Linux loopback; each socket is bound before connect).
Each connection: read 220, EHLO, read 250, send `AUTH PLAIN <blob>`, then read until the
gateway closes (502 5.5.1 and close). Latency = AUTH sent -> EOF seen. At most
--concurrency connections in flight (default 8: bans arrive in parallel, so the journal
can batch, but the client stays small next to the gateway on 2 cores). One epoll loop,
non-blocking sockets.

Bans are counted in the order they complete, in buckets of --bucket (1000): per bucket the
wall time (bans/s), latency p50/p99/max, and with --gw-pid the gateway's CPU (all its
threads: sum of /proc/PID/task/*/schedstat run time, ns resolution) per ban. So a cost that
grows with the number of bans already held shows up bucket by bucket.

--probe: instead, ONE legitimate session from --probe-source (127.0.0.1, never banned):
EHLO, then NOOP every --interval seconds (0.01) until --stop-file exists or --time-limit
(and every 90th time MAIL + RSET instead, untimed: the gateway closes a session after 100
junk commands since the last accepted MAIL);
prints {"probe": n, "rtt_ms": {p50, p99, max}, "over_5ms": n, "worst": [[t_rel_s, ms]...]}.

Bounded: --total connections (<= 60000) and --time-limit seconds, whichever first (at the
time limit no new connection is opened; those in flight finish, so every ban made is
counted); each connection is given up after --conn-timeout seconds. Loopback only.

Prints one JSON object on stdout (see the keys at the end of bans()).
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

from smtp_reply import read_reply

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
AUTH = b"AUTH PLAIN " + base64.b64encode(b"\0guess@example.com\0hunter2") + b"\r\n"
EHLO = b"EHLO bot.example.net\r\n"
MAX_TOTAL = 60000


def source(i):
    return "127.%d.%d.%d" % (1 + i // 62500, (i // 250) % 250, i % 250 + 1)


def pct(xs, p):
    """xs sorted; nearest-rank style, as ban_flood.py."""
    return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 3) if xs else None


def gw_cpu_ns(pid):
    """CPU time of every thread of pid (ns), from /proc/PID/task/*/schedstat."""
    if not pid:
        return None
    t = 0
    for f in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(f) as fh:
                t += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return t


def gw_ticks(pid):
    if not pid:
        return None
    with open("/proc/%d/stat" % pid) as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def probe(a):
    rtt, worst, errors = [], [], {}
    m0 = time.monotonic()
    deadline = m0 + a.time_limit
    try:
        s = socket.create_connection((a.host, a.port), timeout=10,
                                     source_address=(a.probe_source, 0))
        code, buf = read_reply(s)
        if code != "220":
            raise ConnectionError("greeting " + code)
        s.sendall(b"EHLO probe.example.com\r\n")
        code, buf = read_reply(s, buf)
        if a.ready_file:
            open(a.ready_file, "w").close()
        n = 0
        while time.monotonic() < deadline and not (a.stop_file and os.path.exists(a.stop_file)):
            n += 1
            if n % 90 == 0:
                # The gateway ends a session after 100 junk commands (NOOP, RSET, ...) since
                # the last MAIL that passed policy: MAIL + RSET reset the count (not timed;
                # the MAIL goes on to the backend).
                s.sendall(b"MAIL FROM:<probe@example.net>\r\n")
                code, buf = read_reply(s, buf)
                if code != "250":
                    raise ConnectionError("MAIL " + code)
                s.sendall(b"RSET\r\n")
                code, buf = read_reply(s, buf)
                if code != "250":
                    raise ConnectionError("RSET " + code)
            t0 = time.monotonic()
            s.sendall(b"NOOP\r\n")
            code, buf = read_reply(s, buf)
            dt = time.monotonic() - t0
            rtt.append(dt)
            worst.append((dt, t0 - m0))
            if code != "250":
                raise ConnectionError("NOOP " + code)
            time.sleep(a.interval)
        s.sendall(b"QUIT\r\n")
        read_reply(s, buf)
        s.close()
    except Exception as e:  # noqa: BLE001 - reported
        errors[type(e).__name__ + ": " + str(e)[:80]] = 1
    rtt.sort()
    worst.sort(reverse=True)
    print(json.dumps({
        "probe": len(rtt), "errors": errors,
        "rtt_ms": {"p50": pct(rtt, 0.5), "p99": pct(rtt, 0.99),
                   "max": round(rtt[-1] * 1000, 3) if rtt else None},
        "over_5ms": sum(1 for x in rtt if x > 0.005),
        "worst": [[round(t, 2), round(d * 1000, 2)] for d, t in worst[:5]]}))
    return 0 if rtt and not errors else 1


def bans(a):
    ep = select.epoll()
    conns = {}   # fd -> dict(sock, state, buf, t_conn, t_auth)
    replies, errors = {}, {}
    started = ok = timeouts = 0
    done_lat = []       # latency of each ok ban, in completion order
    done_at = []        # monotonic completion time of each ok ban
    bucket_cpu = []     # gateway CPU ns at each bucket boundary (after bucket k)
    bucket_t = []
    addr = (a.host, a.port)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    tick0 = gw_ticks(a.gw_pid)
    cpu0 = gw_cpu_ns(a.gw_pid)
    t_start = time.time()
    m0 = time.monotonic()
    deadline = m0 + a.time_limit
    next_sweep = m0 + 0.2
    backoff_until = 0.0
    time_limit_hit = False

    def count(d, k):
        d[k] = d.get(k, 0) + 1

    def finish(fd, err=None):
        nonlocal ok
        c = conns.pop(fd)
        try:
            ep.unregister(fd)
        except OSError:
            pass
        c["sock"].close()
        code = c.get("code", "none")
        if err is not None:
            count(errors, err)
            count(replies, code)
            return
        count(replies, code)
        if c["state"] == "auth" and code == a.expect:
            now = time.monotonic()
            ok += 1
            done_lat.append(now - c["t_auth"])
            done_at.append(now)
            if ok % a.bucket == 0:
                bucket_cpu.append(gw_cpu_ns(a.gw_pid))
                bucket_t.append(now)
        else:
            count(errors, "closed in state " + c["state"])

    def lines(c):
        """Complete reply lines in c['buf'] -> (code, final?) list; keeps the rest."""
        out = []
        buf = c["buf"]
        while True:
            i = buf.find(b"\r\n")
            if i < 0:
                break
            line = bytes(buf[:i])
            del buf[:i + 2]
            out.append((line[:3].decode("ascii", "replace"), len(line) < 4 or line[3:4] != b"-"))
        return out

    while True:
        now = time.monotonic()
        if now >= deadline and not time_limit_hit:
            # stop opening connections; those in flight finish (their bans are made)
            time_limit_hit = started < a.total
        if (started >= a.total or time_limit_hit) and not conns:
            break
        if now >= deadline + a.conn_timeout:
            break
        while (not time_limit_hit and started < a.total and len(conns) < a.concurrency
               and now >= backoff_until):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((source(started + a.first), 0))
                s.setblocking(False)
                rc = s.connect_ex(addr)
            except OSError as e:
                rc = e.errno
            started += 1
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                count(errors, "connect:" + errno.errorcode.get(rc, str(rc)))
                backoff_until = time.monotonic() + 0.05
                continue
            fd = s.fileno()
            conns[fd] = {"sock": s, "state": "greet", "buf": bytearray(), "t_conn": now}
            ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        for fd, ev in ep.poll(0.05):
            c = conns.get(fd)
            if c is None:
                continue
            sock = c["sock"]
            err = None
            closed = False
            while True:
                try:
                    d = sock.recv(4096)
                except BlockingIOError:
                    break
                except OSError as e:
                    err = "recv:" + errno.errorcode.get(e.errno, str(e.errno))
                    break
                if not d:
                    closed = True
                    break
                c["buf"] += d
            for code, final in lines(c):
                if not final:
                    continue
                st = c["state"]
                if st == "greet":
                    if code != "220":
                        err = err or "greeting " + code
                        break
                    c["state"] = "ehlo"
                    sock.send(EHLO)
                elif st == "ehlo":
                    if code != "250":
                        err = err or "ehlo " + code
                        break
                    c["state"] = "auth"
                    c["t_auth"] = time.monotonic()
                    sock.send(AUTH)   # 50 bytes into an empty socket buffer: never partial
                elif st == "auth":
                    c.setdefault("code", code)
            if err is None and not closed and ev & (select.EPOLLERR | select.EPOLLHUP):
                e = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                err = "sock:" + errno.errorcode.get(e, str(e)) if e else None
                closed = True
            if err is not None or closed:
                finish(fd, err)
        now = time.monotonic()
        if now >= next_sweep:
            next_sweep = now + 0.2
            for fd in [fd for fd, c in conns.items() if now - c["t_conn"] > a.conn_timeout]:
                timeouts += 1
                finish(fd, "timeout")
    for fd in list(conns):
        timeouts += 1
        finish(fd, "timeout (time limit)")
    wall = time.monotonic() - m0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    tick1 = gw_ticks(a.gw_pid)
    cpu1 = gw_cpu_ns(a.gw_pid)

    buckets = []
    prev_t, prev_cpu = m0, cpu0
    for k in range(len(bucket_t)):
        lo, hi = k * a.bucket, (k + 1) * a.bucket
        lat = sorted(done_lat[lo:hi])
        w = bucket_t[k] - prev_t
        b = {"from": lo, "to": hi, "wall_s": round(w, 3), "bans_s": round(a.bucket / w, 1),
             "lat_ms": {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
                        "max": round(lat[-1] * 1000, 3)}}
        if prev_cpu is not None and bucket_cpu[k] is not None:
            b["gw_cpu_us_per_ban"] = round((bucket_cpu[k] - prev_cpu) / 1000 / a.bucket, 1)
        buckets.append(b)
        prev_t, prev_cpu = bucket_t[k], bucket_cpu[k]
    lat = sorted(done_lat)
    out = {
        "started": started, "ok": ok, "replies": replies, "errors": errors,
        "timeouts": timeouts, "time_limit_hit": time_limit_hit,
        "wall_s": round(wall, 3), "bans_s": round(ok / wall, 1) if wall > 0 else 0,
        "t_start": t_start, "t_end": t_start + wall,
        "lat_ms": {"p50": pct(lat, 0.5), "p90": pct(lat, 0.9), "p99": pct(lat, 0.99),
                   "max": round(lat[-1] * 1000, 3) if lat else None},
        "client_cpu_s": round(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime, 3),
        "buckets": buckets,
    }
    if a.gw_pid:
        out["gw_ticks"] = tick1 - tick0
        out["gw_cpu_s_schedstat"] = round((cpu1 - cpu0) / 1e9, 3)
    print(json.dumps(out))
    return 0 if ok == started else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--total", type=int, default=10000)
    ap.add_argument("--first", type=int, default=0, help="index of the first source address")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--bucket", type=int, default=1000)
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--conn-timeout", type=float, default=30.0)
    ap.add_argument("--expect", default="502", help="reply code AUTH must get")
    ap.add_argument("--gw-pid", type=int, default=0, help="gateway PID: CPU per bucket")
    ap.add_argument("--probe", action="store_true", help="one NOOP session, see above")
    ap.add_argument("--probe-source", default="127.0.0.1")
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--stop-file", default=None)
    ap.add_argument("--ready-file", default=None, help="--probe: created once EHLO is done")
    a = ap.parse_args()
    if not a.host.startswith("127.") or not a.probe_source.startswith("127."):
        sys.exit("loopback only")
    if not (0 < a.time_limit <= 600 and 0.001 <= a.interval <= 1):
        sys.exit("time-limit 0..600 s, interval 0.001..1 s")
    if a.probe:
        return probe(a)
    if not (1 <= a.total and a.first >= 0 and a.first + a.total <= MAX_TOTAL
            and 1 <= a.concurrency <= 256 and 1 <= a.bucket <= a.total):
        sys.exit("bounds: first + total <= %d, concurrency 1..256, bucket 1..total" % MAX_TOTAL)
    return bans(a)


if __name__ == "__main__":
    sys.exit(main())
