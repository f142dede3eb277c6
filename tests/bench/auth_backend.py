#!/usr/bin/python3
"""A fast SMTP backend that answers AUTH PLAIN at once (for tests/bench/auth_defence_bench.sh).

One thread, one epoll loop, non-blocking sockets, pipelined input handled. 220 on connect;
EHLO -> 250 with PIPELINING and AUTH PLAIN; `AUTH PLAIN <blob>` (or `AUTH PLAIN`, 334, blob)
-> 235 when the password is "right:" + the login, else 535 5.7.8; QUIT -> 221 and close;
MAIL/RCPT/RSET/NOOP -> 250; anything else 502. No XCLIENT (the bench's policy has
backend.client_ip "none"). `XSTATS` -> `250 {"conns": n, "auth_ok": n, "auth_failed": n}`
(the counters since start; the driver reads them before and after a run: every AUTH the
client sent must have reached the backend, i.e. none was refused by a lock).

Loopback only (--host must be 127.x). Runs until TERM/INT.
"""
import argparse
import base64
import binascii
import errno
import json
import select
import signal
import socket
import sys

EHLO = (b"250-auth-backend.localhost\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
        b"250 AUTH PLAIN\r\n")
OK235 = b"235 2.7.0 Authentication successful\r\n"
BAD535 = b"535 5.7.8 Error: authentication failed\r\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    if not a.host.startswith("127."):
        sys.exit("loopback only")

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.host, a.port))
    ls.listen(4096)
    ls.setblocking(False)
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    conns = {}   # fd -> [sock, inbuf(bytearray), outbuf(bytearray), state]
    stats = {"conns": 0, "auth_ok": 0, "auth_failed": 0}

    def check(blob):
        try:
            parts = base64.b64decode(blob, validate=True).split(b"\0")
        except (binascii.Error, ValueError):
            return False
        return len(parts) == 3 and parts[2] == b"right:" + parts[1]

    def close(fd):
        c = conns.pop(fd, None)
        if c is None:
            return
        try:
            ep.unregister(fd)
        except OSError:
            pass
        c[0].close()

    def flush(fd, c):
        out = c[2]
        while out:
            try:
                n = c[0].send(out)
            except BlockingIOError:
                break
            except OSError:
                close(fd)
                return
            del out[:n]
        try:
            ep.modify(fd, select.EPOLLIN | (select.EPOLLOUT if out else 0))
        except OSError:
            pass

    def handle(c, line):
        """One command line; returns False once the connection is to be closed."""
        out = c[2]
        if c[3] == "auth334":
            c[3] = "cmd"
            ok = check(line.strip())
            stats["auth_ok" if ok else "auth_failed"] += 1
            out += OK235 if ok else BAD535
            return True
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            out += EHLO
        elif verb == b"AUTH":
            w = line.split()
            if len(w) >= 2 and w[1].upper() == b"PLAIN":
                if len(w) >= 3:
                    ok = check(w[2])
                    stats["auth_ok" if ok else "auth_failed"] += 1
                    out += OK235 if ok else BAD535
                else:
                    c[3] = "auth334"
                    out += b"334 \r\n"
            else:
                out += b"504 5.5.4 Unrecognized authentication type\r\n"
        elif verb == b"QUIT":
            out += b"221 2.0.0 Bye\r\n"
            return False
        elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            out += b"250 2.0.0 Ok\r\n"
        elif line[:6].upper() == b"XSTATS":
            out += b"250 " + json.dumps(stats).encode() + b"\r\n"
        else:
            out += b"502 5.5.2 Error: command not recognized\r\n"
        return True

    while not stop:
        try:
            events = ep.poll(0.5)
        except InterruptedError:
            continue
        for fd, ev in events:
            if fd == ls.fileno():
                for _ in range(64):
                    try:
                        s, _peer = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        if e.errno in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                            break
                        raise
                    s.setblocking(False)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    c = [s, bytearray(), bytearray(b"220 auth-backend.localhost ESMTP\r\n"), "cmd"]
                    conns[s.fileno()] = c
                    stats["conns"] += 1
                    ep.register(s.fileno(), select.EPOLLIN)
                    flush(s.fileno(), c)
                continue
            c = conns.get(fd)
            if c is None:
                continue
            if ev & select.EPOLLOUT:
                flush(fd, c)
                if fd not in conns:
                    continue
            if not ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                d = c[0].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                close(fd)
                continue
            if not d:
                close(fd)
                continue
            buf = c[1]
            buf += d
            if len(buf) > 1 << 20:
                close(fd)
                continue
            keep = True
            while keep:
                i = buf.find(b"\r\n")
                if i < 0:
                    break
                line = bytes(buf[:i])
                del buf[:i + 2]
                keep = handle(c, line)
            flush(fd, c)
            if not keep and fd in conns:
                close(fd)   # after the 221 (a short write: the rest is dropped, harmless)
    for fd in list(conns):
        close(fd)
    ls.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
