#!/usr/bin/python3
"""Connection flood from banned addresses (driver for tests/bench/ban_flood.sh).

Opens TOTAL TCP connections to HOST:PORT, round-robin from the --sources addresses
(127.0.0.x, each socket bound before connect), at most CONCURRENCY in flight. Each
connection reads everything the gateway sends until the gateway closes (a banned client
gets "554 5.7.1 ... access denied" and then EOF), then closes its own end. One epoll loop,
non-blocking sockets, no asyncio: the client is the cheapest Python can be, because it
shares the 2 cores with the gateway.

--stop-file PATH: stop opening connections once PATH exists (the in-flight ones finish);
TOTAL is then only the cap. ban_flood.sh uses it to keep the flood going exactly as long
as the legitimate sender runs.

Bounded: TOTAL connections and --time-limit seconds (whichever comes first), and each
connection is given up after --conn-timeout seconds. Loopback only (--host must be
127.0.0.0/8 and so must every source).

--probe: instead of flooding, keep ONE legitimate session open from --probe-source
(127.0.0.1) and measure the event loop's responsiveness: EHLO, then a NOOP every 5 ms
until --stop-file exists or --time-limit passes; prints {"probe": n, "rtt_ms": {p50, p99,
max}, "errors": ...}. Run next to the flood it shows how long legitimate sessions wait.
--hold N (with --probe): first open N more legitimate sessions (220 + EHLO) and keep them
idle until the probe ends, so the gateway has N sessions open during the flood.

Prints one JSON object on stdout:
  started, finished, replies {"554": n, ...}, ok (554 + EOF), errors {errno name: n},
  timeouts, wall_s, rate_per_s (ok / wall), t_start / t_end (epoch seconds),
  lat_ms {p50, p90, p99, max} (connect() call to EOF), client_cpu_s.
"""
import argparse
import errno
import json
import os
import resource
import select
import socket
import sys
import time

from smtp_reply import read_reply

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def loopback(ip):
    return ip.startswith("127.")


def probe(a):
    rtt, errors = [], {}
    deadline = time.monotonic() + a.time_limit
    held = []
    try:
        for _ in range(a.hold):
            h = socket.create_connection((a.host, a.port), timeout=10,
                                         source_address=(a.probe_source, 0))
            held.append(h)
            code, _ = read_reply(h)
            h.sendall(b"EHLO idle.example.com\r\n")
            code, _ = read_reply(h)
            if code != "250":
                raise ConnectionError("idle session EHLO " + code)
        if a.hold:
            print("holding %d idle sessions" % len(held), file=sys.stderr, flush=True)
        def session():
            c = socket.create_connection((a.host, a.port), timeout=10,
                                         source_address=(a.probe_source, 0))
            code, rest = read_reply(c)
            if code != "220":
                raise ConnectionError("greeting " + code)
            c.sendall(b"EHLO probe.example.com\r\n")
            code, rest = read_reply(c, rest)
            return c, rest

        s, buf = session()
        noops = 0
        while time.monotonic() < deadline and not (a.stop_file and os.path.exists(a.stop_file)):
            # The gateway closes a session after 100 junk commands: start a new one (untimed).
            if noops == 90:
                s.sendall(b"QUIT\r\n")
                read_reply(s, buf)
                s.close()
                s, buf = session()
                noops = 0
            noops += 1
            t0 = time.monotonic()
            s.sendall(b"NOOP\r\n")
            code, buf = read_reply(s, buf)
            rtt.append(time.monotonic() - t0)
            if code != "250":
                raise ConnectionError("NOOP " + code)
            time.sleep(0.005)
        s.sendall(b"QUIT\r\n")
        read_reply(s, buf)
        s.close()
    except Exception as e:  # noqa: BLE001 - reported
        errors[type(e).__name__ + ": " + str(e)[:80]] = 1
    for h in held:
        h.close()
    rtt.sort()
    pct = lambda p: round(rtt[min(len(rtt) - 1, int(p * len(rtt)))] * 1000, 2) if rtt else None
    print(json.dumps({"probe": len(rtt), "held": len(held), "errors": errors,
                      "rtt_ms": {"p50": pct(0.5), "p99": pct(0.99),
                                 "max": round(rtt[-1] * 1000, 2) if rtt else None}}))
    return 0 if rtt and not errors else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sources", default="127.0.0.50,127.0.0.51,127.0.0.52,127.0.0.53")
    ap.add_argument("--total", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=300)
    ap.add_argument("--time-limit", type=float, default=120.0)
    ap.add_argument("--conn-timeout", type=float, default=10.0)
    ap.add_argument("--expect", default="554", help="reply code a connection must get")
    ap.add_argument("--stop-file", default=None, help="stop opening connections once it exists")
    ap.add_argument("--probe", action="store_true", help="one legitimate NOOP session, see above")
    ap.add_argument("--probe-source", default="127.0.0.1")
    ap.add_argument("--hold", type=int, default=0, help="--probe: idle sessions to hold")
    a = ap.parse_args()
    if a.probe:
        if not (loopback(a.host) and loopback(a.probe_source) and a.time_limit <= 600
                and 0 <= a.hold <= 10000):
            sys.exit("loopback only, time-limit <= 600, hold <= 10000")
        return probe(a)
    sources = [s.strip() for s in a.sources.split(",") if s.strip()]
    if not loopback(a.host) or not sources or not all(loopback(s) for s in sources):
        sys.exit("loopback addresses only")
    if not (1 <= a.total <= 200000 and 1 <= a.concurrency <= 5000 and a.time_limit <= 600):
        sys.exit("bounds: total 1..200000, concurrency 1..5000, time-limit <= 600")

    ep = select.epoll()
    conns = {}          # fd -> [sock, t0, bytearray]
    replies, errors = {}, {}
    started = finished = ok = timeouts = 0
    lat = []
    addr = (a.host, a.port)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.time()
    m0 = time.monotonic()
    deadline = m0 + a.time_limit
    next_sweep = m0 + 0.2
    backoff_until = 0.0
    stopped = False        # --stop-file seen

    def count_err(name):
        errors[name] = errors.get(name, 0) + 1

    def done(fd, err=None):
        nonlocal finished, ok
        sock, t0, buf = conns.pop(fd)
        try:
            ep.unregister(fd)
        except OSError:
            pass
        sock.close()
        finished += 1
        code = bytes(buf[:3]).decode("ascii", "replace") if buf else "none"
        replies[code] = replies.get(code, 0) + 1
        if err is not None:
            count_err(err)
        elif code == a.expect:
            ok += 1
            lat.append(time.monotonic() - t0)

    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if a.stop_file and not stopped and os.path.exists(a.stop_file):
            stopped = True
        if (started >= a.total or stopped) and not conns:
            break
        # open new connections up to the concurrency limit
        while not stopped and started < a.total and len(conns) < a.concurrency and now >= backoff_until:
            src = sources[started % len(sources)]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((src, 0))
                s.setblocking(False)
                rc = s.connect_ex(addr)
            except OSError as e:
                rc = e.errno
            started += 1
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                finished += 1
                count_err("connect:" + errno.errorcode.get(rc, str(rc)))
                if rc in (errno.EADDRNOTAVAIL, errno.EAGAIN, errno.EMFILE, errno.ENFILE):
                    backoff_until = time.monotonic() + 0.05
                continue
            fd = s.fileno()
            conns[fd] = [s, time.monotonic(), bytearray()]
            ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        for fd, ev in ep.poll(0.05):
            c = conns.get(fd)
            if c is None:
                continue
            sock, _, buf = c
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
                buf += d
            if err is None and not closed and ev & (select.EPOLLERR | select.EPOLLHUP):
                e = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                err = "sock:" + errno.errorcode.get(e, str(e)) if e else None
                closed = True
            if err is not None or closed:
                done(fd, err)
        now = time.monotonic()
        if now >= next_sweep:
            next_sweep = now + 0.2
            for fd in [fd for fd, c in conns.items() if now - c[1] > a.conn_timeout]:
                timeouts += 1
                done(fd, "timeout")
    # time limit: whatever is still open counts as a timeout
    for fd in list(conns):
        timeouts += 1
        done(fd, "timeout")
    wall = time.monotonic() - m0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

    print(json.dumps({
        "started": started, "finished": finished, "ok": ok, "replies": replies,
        "errors": errors, "timeouts": timeouts, "wall_s": round(wall, 3),
        "rate_per_s": round(ok / wall, 1) if wall > 0 else 0,
        "t_start": t_start, "t_end": t_start + wall,
        "lat_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99),
                   "max": round(lat[-1] * 1000, 2) if lat else None},
        "client_cpu_s": round(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime, 3),
        "stopped_by_file": stopped,
        "time_limit_hit": started < a.total and not stopped,
    }))
    return 0 if ok == started else 1


if __name__ == "__main__":
    sys.exit(main())
