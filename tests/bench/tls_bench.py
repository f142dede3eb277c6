#!/usr/bin/python3
"""TLS vs plaintext load driver (for tests/bench/tls_bench.sh). Loopback only, bounded.

  tls_bench.py handshake --port P [--tls] [--tls-max 1.2] -n 2000 -k 8
      N connections, K threads: connect, (implicit TLS handshake, no certificate
      verification), read the 220 greeting, send QUIT, read the 221 reply, close.
      With --tls the TLS session is never resumed: every connection is a full handshake.
  tls_bench.py messages --port P [--tls] -m 2000 -s 5 -l 1024
      M messages of L bytes over S persistent sessions (S processes, smtplib SMTP_SSL or
      SMTP; EHLO once, then sendmail() M/S times, then QUIT).

Prints one JSON object: ok, errors {text: n}, wall_s, rate_per_s, client_cpu_s (all
threads / child processes), lat_ms {p50, p99} for handshake mode, tls (version and cipher
of the last connection). Exit status 0 only if every connection/message succeeded.
Every socket has a 10 s timeout and the whole run a --time-limit (default 120 s).
"""
import argparse
import json
import multiprocessing as mp
import resource
import smtplib
import socket
import ssl
import sys
import threading
import time

from smtp_reply import read_reply


def client_ctx(tls_max=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls_max == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def cpu_self_and_children():
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def handshake(a):
    ctx = client_ctx(a.tls_max) if a.tls else None
    addr = (a.host, a.port)
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "errors": {}, "lat": [], "tls": None}
    deadline = time.monotonic() + a.time_limit

    def worker():
        while True:
            with lock:
                if state["next"] >= a.n or time.monotonic() > deadline:
                    return
                state["next"] += 1
            t0 = time.monotonic()
            s = None
            try:
                s = socket.create_connection(addr, timeout=10)
                if ctx:
                    s = ctx.wrap_socket(s)          # handshake on connect
                code, rest = read_reply(s)
                if code != "220":
                    raise ConnectionError("greeting " + code)
                s.sendall(b"QUIT\r\n")
                code, _ = read_reply(s, rest)
                if code != "221":
                    raise ConnectionError("QUIT reply " + code)
                dt = time.monotonic() - t0
                with lock:
                    state["ok"] += 1
                    state["lat"].append(dt)
                    if ctx and state["tls"] is None:
                        state["tls"] = "%s %s" % (s.version(), s.cipher()[0])
            except Exception as e:  # noqa: BLE001 - counted and reported
                k = type(e).__name__ + ": " + str(e)[:80]
                with lock:
                    state["errors"][k] = state["errors"].get(k, 0) + 1
            finally:
                if s is not None:
                    s.close()

    c0 = cpu_self_and_children()
    m0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(a.k)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.monotonic() - m0
    lat = sorted(state["lat"])
    pct = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None
    return {"mode": "handshake", "tls": state["tls"] if a.tls else "none", "n": a.n, "k": a.k,
            "ok": state["ok"], "errors": state["errors"], "wall_s": round(wall, 3),
            "rate_per_s": round(state["ok"] / wall, 1),
            "client_cpu_s": round(cpu_self_and_children() - c0, 3),
            "lat_ms": {"p50": pct(0.5), "p99": pct(0.99)}}, state["ok"] == a.n


def session_worker(args):
    host, port, tls, count, size, time_limit, tls_max = args
    body = ("From: bench@example.com\r\nTo: sink@example.com\r\nSubject: tls bench\r\n\r\n"
            .encode())
    line = b"x" * 76 + b"\r\n"
    body += line * max(1, (size - len(body)) // len(line))
    ok, errors, tls_info = 0, {}, None
    deadline = time.monotonic() + time_limit
    try:
        if tls:
            c = smtplib.SMTP_SSL(host, port, timeout=10, context=client_ctx(tls_max))
            tls_info = "%s %s" % (c.sock.version(), c.sock.cipher()[0])
        else:
            c = smtplib.SMTP(host, port, timeout=10)
        c.ehlo("bench.example.com")
        for _ in range(count):
            if time.monotonic() > deadline:
                errors["time limit"] = errors.get("time limit", 0) + 1
                break
            try:
                c.sendmail("bench@example.com", ["sink@example.com"], body)
                ok += 1
            except smtplib.SMTPException as e:
                k = type(e).__name__ + ": " + str(e)[:80]
                errors[k] = errors.get(k, 0) + 1
                c.rset()
        c.quit()
    except Exception as e:  # noqa: BLE001
        k = type(e).__name__ + ": " + str(e)[:80]
        errors[k] = errors.get(k, 0) + 1
    return ok, errors, tls_info


def messages(a):
    per = [a.m // a.s + (1 if i < a.m % a.s else 0) for i in range(a.s)]
    c0 = cpu_self_and_children()
    with mp.Pool(a.s) as pool:
        pool.map(abs, range(a.s))      # workers forked before the clock starts
        m0 = time.monotonic()
        res = pool.map(session_worker,
                       [(a.host, a.port, a.tls, n, a.l, a.time_limit, a.tls_max) for n in per],
                       chunksize=1)
        wall = time.monotonic() - m0
        pool.close()
        pool.join()                    # reaped, so RUSAGE_CHILDREN counts their CPU
    ok = sum(r[0] for r in res)
    errors = {}
    for r in res:
        for k, v in r[1].items():
            errors[k] = errors.get(k, 0) + v
    tls = next((r[2] for r in res if r[2]), None) if a.tls else "none"
    return {"mode": "messages", "tls": tls, "m": a.m, "s": a.s, "l": a.l, "ok": ok,
            "errors": errors, "wall_s": round(wall, 3), "rate_per_s": round(ok / wall, 1),
            "client_cpu_s": round(cpu_self_and_children() - c0, 3)}, ok == a.m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["handshake", "messages"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls", action="store_true", help="implicit TLS (port-465 style)")
    ap.add_argument("--tls-max", choices=["1.2", "1.3"], default=None)
    ap.add_argument("-n", type=int, default=2000, help="handshake: connections")
    ap.add_argument("-k", type=int, default=8, help="handshake: concurrent threads")
    ap.add_argument("-m", type=int, default=2000, help="messages: total messages")
    ap.add_argument("-s", type=int, default=5, help="messages: parallel sessions")
    ap.add_argument("-l", type=int, default=1024, help="messages: message size (bytes)")
    ap.add_argument("--time-limit", type=float, default=120.0)
    a = ap.parse_args()
    if not a.host.startswith("127."):
        sys.exit("loopback only")
    if not (1 <= a.n <= 50000 and 1 <= a.k <= 256 and 1 <= a.m <= 100000 and 1 <= a.s <= 64
            and a.time_limit <= 600):
        sys.exit("out of bounds")
    res, good = handshake(a) if a.mode == "handshake" else messages(a)
    print(json.dumps(res))
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
