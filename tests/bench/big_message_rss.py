#!/usr/bin/env python3
"""Resident memory of smtpgate while one large message passes through it.

Starts (all on 127.0.0.1, all killed by their own PID at exit):
  smtp-sink -u nobody 127.0.0.1:SINK_PORT 64        the backend; it discards messages
  smtpgate run -c <copy of gateway-bench.json>       listener GW_PORT -> SINK_PORT
then sends ONE message of --size bytes (default 50,000,000, below the default
message.max_bytes of 52,428,800) in a single SMTP session, while a thread samples the
gateway's VmRSS from /proc/PID/status every --interval seconds (default 0.05).

Prints start RSS (session open, before DATA), peak RSS during DATA, RSS after the reply
to the final dot, and after QUIT; plus the delivery reply and throughput. Exit 0 only
if the message was accepted (250) and peak - start stays under --max-growth-kb
(default 8192), i.e. memory is flat.

Bounded: every socket operation has a timeout, the whole run has --timeout (default
120 s), and exactly one message is sent.

  tests/bench/big_message_rss.py [--binary build-bench/smtpgate] [--size N]
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def vmrss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_port(port, deadline):
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def strip_comments(text):
    # The policy allows // comments; drop whole-line and trailing ones outside strings.
    out = []
    for line in text.splitlines():
        in_str = False
        i = 0
        cut = len(line)
        while i < len(line):
            c = line[i]
            if c == '"' and (i == 0 or line[i - 1] != "\\"):
                in_str = not in_str
            elif not in_str and line.startswith("//", i):
                cut = i
                break
            i += 1
        out.append(line[:cut])
    return "\n".join(out)


class Client:
    def __init__(self, port, timeout):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed; got %r" % lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("latin-1"))
            if len(line) < 4 or line[3:4] != b"-":
                return lines

    def cmd(self, text, expect):
        self.s.sendall(text.encode() + b"\r\n")
        r = self.reply()
        if not r[-1].startswith(expect):
            raise RuntimeError(f"{text!r}: unexpected reply {r}")
        return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build-bench", "smtpgate"))
    ap.add_argument("--policy", default=os.path.join(ROOT, "tests", "bench", "gateway-bench.json"))
    ap.add_argument("--size", type=int, default=50_000_000, help="message bytes (headers+body)")
    ap.add_argument("--gw-port", type=int, default=2613)
    ap.add_argument("--sink-port", type=int, default=2536)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--max-growth-kb", type=int, default=8192)
    ap.add_argument("--samples", help="write every (t, rss_kb) sample to this TSV file")
    a = ap.parse_args()

    for p in (a.gw_port, a.sink_port):
        try:
            socket.create_connection(("127.0.0.1", p), timeout=0.3).close()
            sys.exit(f"port {p} already in use; pick another with --gw-port/--sink-port")
        except OSError:
            pass

    deadline = time.time() + a.timeout
    with open(a.policy) as f:
        pol = json.loads(strip_comments(f.read()))
    pol["listeners"] = [{"name": "mx", "listen": f"127.0.0.1:{a.gw_port}", "class": "mx"}]
    pol["backend"] = {"address": f"127.0.0.1:{a.sink_port}"}
    work = tempfile.mkdtemp(prefix="smtpgate-bigmsg.")
    pol["log"] = {"format": "json", "path": os.path.join(work, "gateway.log")}
    policy_path = os.path.join(work, "policy.json")
    with open(policy_path, "w") as f:
        json.dump(pol, f, indent=1)

    procs = []
    samples = []
    stop = threading.Event()
    marks = {}
    try:
        sink = subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{a.sink_port}", "64"],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "sink.err"), "w"))
        procs.append(sink)
        gw = subprocess.Popen([a.binary, "run", "-c", policy_path],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "gateway.err"), "w"))
        procs.append(gw)
        if not wait_port(a.sink_port, deadline) or not wait_port(a.gw_port, deadline):
            sys.exit(f"gateway or sink did not come up; see {work}")
        time.sleep(0.2)
        marks["idle"] = vmrss_kb(gw.pid)

        t0 = time.time()

        def sampler():
            while not stop.is_set() and time.time() < deadline:
                samples.append((time.time() - t0, vmrss_kb(gw.pid)))
                time.sleep(a.interval)

        th = threading.Thread(target=sampler, daemon=True)
        th.start()

        c = Client(a.gw_port, timeout=max(5.0, min(60.0, deadline - time.time())))
        c.reply()
        c.cmd("EHLO big.example.net", "250")
        c.cmd("MAIL FROM:<bench@example.net>", "250")
        c.cmd("RCPT TO:<sink@example.com>", "250")
        marks["start"] = vmrss_kb(gw.pid)
        c.cmd("DATA", "354")
        t_data = time.time()
        head = (b"From: bench@example.net\r\nTo: sink@example.com\r\n"
                b"Subject: 50 MB through smtpgate\r\n\r\n")
        line = (b"x" * 998) + b"\r\n"          # 1000 bytes, no leading dot
        block = line * 64                       # 64,000 bytes per sendall
        sent = len(head)
        c.s.sendall(head)
        while sent + len(block) <= a.size:
            if time.time() > deadline:
                raise RuntimeError("timeout while sending the body")
            c.s.sendall(block)
            sent += len(block)
        rest = a.size - sent
        if rest > 0:
            nlines = max(1, rest // len(line))
            c.s.sendall(line * nlines)
            sent += nlines * len(line)
        c.s.sendall(b".\r\n")
        end_reply = c.reply()
        t_done = time.time()
        marks["end"] = vmrss_kb(gw.pid)
        c.cmd("QUIT", "221")
        c.s.close()
        time.sleep(0.3)
        marks["after_quit"] = vmrss_kb(gw.pid)
        stop.set()
        th.join(2)

        during = [r for (t, r) in samples if t_data - t0 <= t <= t_done - t0 + a.interval]
        peak = max([r for _, r in samples] + [marks["end"]])
        peak_data = max(during) if during else peak
        secs = t_done - t_data
        print(f"message: {sent:,} bytes in {secs:.2f} s ({sent / secs / 1e6:.1f} MB/s); "
              f"reply to final dot: {end_reply[-1]}")
        print(f"gateway VmRSS (kB): idle {marks['idle']:,}  start(before DATA) {marks['start']:,}  "
              f"peak during DATA {peak_data:,}  end(after dot reply) {marks['end']:,}  "
              f"after QUIT {marks['after_quit']:,}")
        print(f"growth peak-start: {peak_data - marks['start']:,} kB over {len(during)} samples "
              f"every {a.interval * 1000:.0f} ms")
        if a.samples:
            with open(a.samples, "w") as f:
                f.write("t_s\trss_kb\n")
                for t, r in samples:
                    f.write(f"{t:.3f}\t{r}\n")
        ok = end_reply[-1].startswith("250") and peak_data - marks["start"] <= a.max_growth_kb
        return 0 if ok else 1
    finally:
        stop.set()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


if __name__ == "__main__":
    sys.exit(main())
