"""Shared helpers for smtpgate's integration tests.

Everything here is loopback-only, bounded in time, and cleans up after itself:
every process is started by us and stopped by its PID, every temp dir lives
under /tmp and is removed.

* free_port(), wait_for_port()
* Gateway          — runs ``$SMTPGATE_BINARY run -c policy.json`` and collects
                     its JSON log lines from stderr
* gateway_policy() — a minimal valid policy dict (SPEC §4) to start from
* RecordingBackend — wraps recording_backend.py (aiosmtpd) as a subprocess
* PostfixBackend   — wraps postfix_backend.PostfixInstance (Postfix + Dovecot)
* RawClient        — exact-bytes SMTP client (send bytes, read whole replies)
* smtp_client()    — smtplib.SMTP bound to a chosen 127.0.0.x source address
* run_swaks()      — swaks against a loopback server
* check_no_secret()— assert a secret (and its base64 forms) is not in log lines
* make_test_cert() — a self-signed P-256 certificate for localhost/127.0.0.1
* client_address() — a client as the gateway's log names it ("IP:PORT")
* log_barrier()    — one session whose session_close proves every earlier log
                     line is in (before asserting that a line is absent)
"""

import base64
import glob
import json
import os
import re
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import postfix_backend  # noqa: E402

SOURCE_DIR = os.environ.get("SMTPGATE_SOURCE_DIR") or os.path.abspath(
    os.path.join(HERE, "..", ".."))
PYTHON = sys.executable or "/usr/bin/python3"

wait_for_port = postfix_backend.wait_for_port

_ports_lock = threading.Lock()
_ports_given = set()


def free_port(host="127.0.0.1"):
    """A TCP port nothing listens on now (bind 0, release), and never one this process
    handed out before: the kernel may give a released port again at once, and two
    listeners of one policy on the same port fail its check ("duplicate listen address")."""
    with _ports_lock:
        for _ in range(100):
            port = postfix_backend.free_port(host)
            if port not in _ports_given:
                break
        _ports_given.add(port)
        return port


def gateway_binary():
    """$SMTPGATE_BINARY, else the newest build*/smtpgate under the source dir."""
    path = os.environ.get("SMTPGATE_BINARY")
    if path:
        if not os.access(path, os.X_OK):
            raise FileNotFoundError("SMTPGATE_BINARY=%s is not an executable file" % path)
        return path
    cands = [p for p in glob.glob(os.path.join(SOURCE_DIR, "build*", "smtpgate"))
             + glob.glob(os.path.join(SOURCE_DIR, "build*", "*", "smtpgate"))
             if os.path.isfile(p) and os.access(p, os.X_OK)]
    if not cands:
        raise FileNotFoundError(
            "smtpgate binary not found: set SMTPGATE_BINARY (ctest does) or build it "
            "under %s/build*/" % SOURCE_DIR)
    return max(cands, key=os.path.getmtime)


def make_tempdir(prefix="smtpgate-test-"):
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def _stop_process(proc, timeout=5.0, group=False):
    """SIGTERM, wait up to timeout, then SIGKILL. Only for processes we
    started (proc is our Popen). group=True also SIGKILLs the process group we
    created for it (start_new_session=True) after it exited."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    if group:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return proc.returncode


def wait_until(predicate, timeout=10.0, interval=0.05, message="condition"):
    """Poll predicate() until it returns a truthy value; return that value.
    Raise AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, message))
        time.sleep(interval)


# --------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------

def listen_addr(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def parse_listen(listen):
    """'127.0.0.1:25' / '[::1]:25' -> (host, port)."""
    m = re.match(r"^\[(.*)\]:(\d+)$", listen) or re.match(r"^([^:]*):(\d+)$", listen)
    if not m:
        raise ValueError("bad listen address %r" % listen)
    return m.group(1), int(m.group(2))


def gateway_policy(backend_address, listeners=(("mx", "mx"),), hostname="gw.example.test",
                   local_domains=("example.com", "example.net"), client_ip="none",
                   **sections):
    """A policy dict per SPEC §4. listeners: (name, class) or (name, class,
    tls) tuples; each gets a fresh 127.0.0.1 port (tls, if given, becomes the
    listener's "tls" key). Extra top-level sections (mx=..., submission=...,
    timeouts=..., message=..., tls=...) are passed through as given."""
    entries = []
    for spec in listeners:
        name, cls = spec[0], spec[1]
        entry = {"name": name, "listen": listen_addr("127.0.0.1", free_port()), "class": cls}
        if len(spec) > 2 and spec[2] is not None:
            entry["tls"] = spec[2]
        entries.append(entry)
    policy = {
        "version": 1,
        "hostname": hostname,
        "local_domains": list(local_domains),
        "listeners": entries,
        "backend": {"address": backend_address, "client_ip": client_ip},
        "log": {"format": "json", "path": "-"},
    }
    for key, value in sections.items():
        policy[key] = value
    return policy


# --------------------------------------------------------------------------
# Gateway
# --------------------------------------------------------------------------

# The first line of a sanitizer's report on stderr (ASan, LSan, TSan, UBSan). Under a
# sanitizer build a report often changes nothing a client sees (a race, a leak at exit), so
# Gateway.stop() fails the test when the gateway's stderr had one.
_SANITIZER_REPORT = re.compile(
    r"^(==\d+==)?(ERROR|WARNING): (Address|Leak|Thread|UndefinedBehavior)Sanitizer"
    r"|: runtime error: ")


class Gateway:
    """Runs the smtpgate binary on a policy dict.

    g = Gateway(policy); g.start()  (or `with Gateway(policy) as g:`)
    g.port("mx") / g.address("mx") ; g.logs (list of dicts, one per JSON line)
    g.lines (raw stderr lines) ; g.find(event="decision", rule="mx.relay")
    g.wait_for_log(event="session_close") ; g.stop()

    A gateway's log lines are written by a thread of its own, so a line may reach
    g.logs after the client saw the reply it describes: wait for a line
    (wait_for_log, wait_until) before asserting on it, and for a later line of the
    same session (its session_close) before asserting that a line is absent.

    stop() raises AssertionError if the gateway's stderr held a sanitizer report
    (sanitizer_report: its lines, kept across restarts of this Gateway).
    """

    def __init__(self, policy, extra_args=(), start_timeout=10.0, env=None):
        self.policy = policy
        self.extra_args = list(extra_args)
        self.env = dict(env or {})   # set for the gateway, on top of our environment
        self.start_timeout = start_timeout
        self.tmpdir = make_tempdir("smtpgate-gw-")
        self.policy_path = os.path.join(self.tmpdir, "policy.json")
        self.proc = None
        self.lines = []          # raw stderr lines (str, without newline)
        self.logs = []           # parsed JSON objects (non-JSON lines: {"_raw": line})
        self.stdout_lines = []
        self.sanitizer_report = []   # stderr lines from a sanitizer report's first one on
        self._in_report = False
        self._report_raised = False
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._threads = []

    # -- lifecycle --------------------------------------------------------
    def write_policy(self):
        with open(self.policy_path, "w") as f:
            json.dump(self.policy, f, indent=2)

    def listeners(self):
        return [(l["name"],) + parse_listen(l["listen"]) for l in self.policy["listeners"]]

    def start(self):
        binary = gateway_binary()
        for attempt in range(3):
            self.write_policy()
            self._spawn(binary)
            try:
                self._wait_listening()
                return self
            except _PortInUse:
                _stop_process(self.proc)
                self._join_readers()
                # Someone grabbed a port between free_port() and bind(): pick new ones.
                for l in self.policy["listeners"]:
                    host, _ = parse_listen(l["listen"])
                    l["listen"] = listen_addr(host, free_port(host))
            except BaseException:
                self.stop(check=False)     # a report still fails the test's own stop()
                raise
        self.stop(check=False)
        raise RuntimeError("gateway could not bind its listeners after 3 attempts")

    def _spawn(self, binary):
        self.lines, self.logs, self.stdout_lines = [], [], []
        self._in_report = False
        self.proc = subprocess.Popen(
            [binary, "run", "-c", self.policy_path] + self.extra_args,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.tmpdir, env=dict(os.environ, **self.env) if self.env else None)
        self._threads = [
            threading.Thread(target=self._reader, args=(self.proc.stderr, True), daemon=True),
            threading.Thread(target=self._reader, args=(self.proc.stdout, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _reader(self, stream, is_stderr):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                if is_stderr:
                    self.lines.append(line)
                    try:
                        obj = json.loads(line)
                        if not isinstance(obj, dict):
                            obj = {"_raw": line}
                    except ValueError:
                        obj = {"_raw": line}
                    self.logs.append(obj)
                    if "_raw" in obj:
                        self._note_raw(line)
                else:
                    self.stdout_lines.append(line)
                self._cond.notify_all()
        stream.close()

    def _note_raw(self, line):
        if not self._in_report and _SANITIZER_REPORT.search(line):
            self._in_report = True
        if self._in_report and len(self.sanitizer_report) < 400:
            self.sanitizer_report.append(line)

    def check_sanitizer(self):
        """Raise AssertionError (once) if the gateway's stderr had a sanitizer report."""
        with self._lock:
            report = list(self.sanitizer_report)
        if report and not self._report_raised:
            self._report_raised = True
            raise AssertionError("sanitizer report on smtpgate's stderr:\n" + "\n".join(report))

    def _join_readers(self):
        for t in self._threads:
            t.join(timeout=5)

    def _wait_listening(self):
        deadline = time.monotonic() + self.start_timeout
        listeners = self.listeners()
        admin = (self.policy.get("admin") or {}).get("listen")
        if admin:
            listeners.append(("admin",) + parse_listen(admin))   # opens after the SMTP ones
        for name, host, port in listeners:
            while True:
                if self.proc.poll() is not None:
                    self._join_readers()
                    text = "\n".join(self.lines[-30:])
                    if re.search(r"in use|EADDRINUSE", text, re.I):
                        raise _PortInUse(text)
                    raise RuntimeError("smtpgate exited with status %s before listening "
                                       "on %s (%s:%d); stderr:\n%s"
                                       % (self.proc.returncode, name, host, port, text))
                if _is_listening(host, port, self.proc.pid):
                    break
                if time.monotonic() >= deadline:
                    raise TimeoutError("smtpgate did not listen on %s:%d within %.0fs; "
                                       "stderr:\n%s" % (host, port, self.start_timeout,
                                                        "\n".join(self.lines[-30:])))
                time.sleep(0.05)

    def stop(self, timeout=5.0, check=True):
        """SIGTERM, then SIGKILL after timeout. Returns the exit status. With check,
        raises AssertionError if there was a sanitizer report (see check_sanitizer)."""
        rc = None
        if self.proc is not None:
            rc = _stop_process(self.proc, timeout)
            self._join_readers()
        if self.tmpdir and os.path.isdir(self.tmpdir):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if check:
            self.check_sanitizer()
        return rc

    def signal(self, sig):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def reload(self, policy=None):
        """Rewrite the policy file (if given) and send SIGHUP."""
        if policy is not None:
            self.policy = policy
            self.write_policy()
        self.signal(signal.SIGHUP)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- addresses ----------------------------------------------------------
    def _listener(self, name):
        for n, host, port in self.listeners():
            if n == name:
                return host, port
        raise KeyError("no listener named %r" % name)

    def port(self, name):
        return self._listener(name)[1]

    def host(self, name):
        host = self._listener(name)[0]
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

    # -- logs ---------------------------------------------------------------
    def snapshot(self):
        with self._lock:
            return list(self.logs)

    def text(self):
        with self._lock:
            return "\n".join(self.lines)

    def find(self, **fields):
        """Log objects whose fields equal the given values."""
        return [o for o in self.snapshot()
                if all(o.get(k) == v for k, v in fields.items())]

    def wait_for_log(self, timeout=5.0, **fields):
        """Wait until a log object with these fields appears; return it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for o in self.logs:
                    if all(o.get(k) == v for k, v in fields.items()):
                        return o
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no log line with %r within %.1fs; last lines:\n%s"
                                         % (fields, timeout, "\n".join(self.lines[-20:])))
                self._cond.wait(left)

    def decisions(self, **fields):
        return self.find(event="decision", **fields)


class _PortInUse(Exception):
    pass


def client_address(client):
    """How the gateway's log names a client ("client" of its session lines): the
    "IP:PORT" of a RawClient's, an smtplib.SMTP's or a socket's local end. Take it
    while the connection is open."""
    sock = getattr(client, "sock", client)
    host, port = sock.getsockname()[:2]
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def log_barrier(gateway, listener="mx", source="127.0.0.1", timeout=10.0):
    """Opens one session from source, ends it (QUIT, or the gateway's refusal) and
    waits for its session_close line, which it returns. The gateway writes its log in
    order from one thread, so every line it logged before that session began is in
    gateway.logs then: for asserting that a line is absent while the gateway goes on
    (after gateway.stop() every line is in anyway). The session counts in the log and
    the metrics like any other."""
    c = RawClient(gateway.host(listener), gateway.port(listener), source, timeout)
    try:
        name = client_address(c)
        try:
            if c.read_reply().code == 220:
                c.command("QUIT")
        except (ConnectionClosed, OSError):
            pass       # refused at connect and closed
    finally:
        c.close()
    return gateway.wait_for_log(timeout, event="session_close", client=name)


def _socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def _is_listening(host, port, pid=None):
    """True if a TCP socket listens on port (owned by pid, if given). Reads
    /proc/net/tcp{,6} so that waiting for the gateway does not open a session
    on it (which would show up in its logs and metrics); falls back to
    connecting where /proc is absent."""
    owned = _socket_inodes(pid) if pid is not None else None
    found_proc = False
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        found_proc = True
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "0A":           # TCP_LISTEN
                if int(fields[1].rsplit(":", 1)[1], 16) == port and (
                        owned is None or fields[9] in owned):
                    return True
    if found_proc:
        return False
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    target = {"::": "::1", "0.0.0.0": "127.0.0.1"}.get(host, host)
    try:
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect((target, port))
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# Recording backend
# --------------------------------------------------------------------------

class RecordingBackend:
    """recording_backend.py as a subprocess on 127.0.0.1 (port chosen by the
    OS). users: {login: password}. Other keywords map to its options:
    data_reply, data_delay, reject_rcpt (list), xclient, proxy_protocol,
    no_auth, max_size, tls_cert + tls_key (offer STARTTLS), implicit_tls
    (with tls_cert/tls_key: TLS from the first byte instead)."""

    def __init__(self, users=None, data_reply=None, data_delay=None, reject_rcpt=(),
                 xclient=False, proxy_protocol=False, no_auth=False, max_size=None,
                 host="127.0.0.1", start_timeout=10.0, tls_cert=None, tls_key=None,
                 implicit_tls=False):
        self.host = host
        self.dir = make_tempdir("smtpgate-rec-")
        self.args = [PYTHON, os.path.join(HERE, "recording_backend.py"),
                     "--dir", self.dir, "--host", host, "--port", "0"]
        for u, p in (users or {}).items():
            self.args += ["--user", "%s:%s" % (u, p)]
        if data_reply:
            self.args += ["--data-reply", data_reply]
        if data_delay:
            self.args += ["--data-delay", str(data_delay)]
        for r in reject_rcpt:
            self.args += ["--reject-rcpt", r]
        if xclient:
            self.args.append("--xclient")
        if proxy_protocol:
            self.args.append("--proxy-protocol")
        if no_auth:
            self.args.append("--no-auth")
        if max_size is not None:
            self.args += ["--max-size", str(max_size)]
        if tls_cert or tls_key:
            self.args += ["--tls-cert", tls_cert, "--tls-key", tls_key]
        if implicit_tls:
            self.args.append("--implicit-tls")
        self.start_timeout = start_timeout
        self.proc = None
        self.port = None
        self._stderr = None

    def start(self):
        self._stderr = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._stderr)
        try:
            line = _readline_timeout(self.proc.stdout, self.start_timeout)
            m = re.match(rb"^PORT (\d+)", line or b"")
            if not m:
                raise RuntimeError("recording backend did not start (got %r); stderr:\n%s"
                                   % (line, self.stderr()))
            self.port = int(m.group(1))
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def address(self):
        return listen_addr(self.host, self.port)

    def stderr(self):
        try:
            with open(os.path.join(self.dir, "stderr.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None:
            _stop_process(self.proc)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None
        if self._stderr:
            self._stderr.close()
            self._stderr = None
        if os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- what was recorded ----------------------------------------------------
    def messages(self):
        """Accepted messages, oldest first: the JSON record plus 'data' (bytes)."""
        out = []
        for path in sorted(glob.glob(os.path.join(self.dir, "msg-*.json"))):
            with open(path) as f:
                rec = json.load(f)
            with open(os.path.join(self.dir, rec["eml"]), "rb") as f:
                rec["data"] = f.read()
            out.append(rec)
        return out

    def wait_for_messages(self, count, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if len(msgs) >= count or time.monotonic() >= deadline:
                return msgs
            time.sleep(0.05)

    def events(self, event=None, conn=None):
        path = os.path.join(self.dir, "commands.jsonl")
        out = []
        try:
            with open(path, "rb") as f:
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break      # a line being written right now
                    obj = json.loads(raw)
                    if event is not None and obj.get("event") != event:
                        continue
                    if conn is not None and obj.get("conn") != conn:
                        continue
                    out.append(obj)
        except FileNotFoundError:
            pass
        return out

    def commands(self, conn=None):
        """Every command line the backend received (str, no line ending)."""
        return [e["line"] for e in self.events("command", conn)]

    def verbs(self, conn=None):
        return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in self.commands(conn)]

    def saw(self, verb, conn=None):
        """True if any received command starts with this verb (case-insensitive)."""
        return verb.upper() in self.verbs(conn)

    def connections(self):
        """Connection numbers seen so far (1, 2, ...)."""
        return [e["conn"] for e in self.events("connect")]

    def closed_connections(self):
        return [e["conn"] for e in self.events("disconnect")]

    def wait_for_disconnect(self, conn=None, timeout=10.0):
        """Wait until connection conn (default: every connection so far) is closed."""
        def done():
            closed = set(self.closed_connections())
            want = [conn] if conn is not None else self.connections()
            return all(c in closed for c in want)
        wait_until(done, timeout, message="backend connection(s) to close")

    def raw(self, conn):
        """The inbound byte stream of connection conn, exactly as received."""
        with open(os.path.join(self.dir, "conn-%05d.raw" % conn), "rb") as f:
            return f.read()

    def raw_all(self):
        return b"".join(self.raw(c) for c in self.connections()
                        if os.path.exists(os.path.join(self.dir, "conn-%05d.raw" % c)))


def _readline_timeout(stream, timeout):
    """One line from a pipe, or None at EOF/timeout (bounded, no thread)."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return None
        chunk = os.read(fd, 1)
        if not chunk:
            return buf or None
        buf += chunk
    return buf


# --------------------------------------------------------------------------
# Postfix backend
# --------------------------------------------------------------------------

class PostfixBackend(postfix_backend.PostfixInstance):
    """A private Postfix + Dovecot on 127.0.0.1 (see postfix_backend.py)."""

    @property
    def address(self):
        return listen_addr(self.host, self.port)


def have_postfix():
    return (os.geteuid() == 0 and os.path.exists(postfix_backend.MASTER)
            and os.path.exists(postfix_backend.DOVECOT))


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

class Reply:
    """One complete SMTP reply: code (int), lines (texts after the code and
    separator), raw (bytes as received)."""

    def __init__(self, code, lines, raw):
        self.code, self.lines, self.raw = code, lines, raw

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enhanced(self):
        m = re.match(r"^([245]\.\d{1,3}\.\d{1,3})\b", self.lines[0] if self.lines else "")
        return m.group(1) if m else None

    def __repr__(self):
        return "Reply(%r)" % self.raw.decode("latin-1")

    __str__ = __repr__


class ConnectionClosed(Exception):
    pass


def ipv6_loopback_available():
    """True when ::1 can be bound here (some containers have no IPv6)."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
            return True
        finally:
            s.close()
    except OSError:
        return False


class RawClient:
    """Exact-bytes SMTP client. send(bytes) writes as is; read_reply() returns
    one complete (multi-line) reply, bounded by timeout."""

    def __init__(self, host, port, source_addr="127.0.0.1", timeout=10.0):
        self.timeout = timeout
        self.buf = b""
        self.sock = socket.create_connection(
            (host, port), timeout=timeout,
            source_address=(source_addr, 0) if source_addr else None)
        self.sock.settimeout(timeout)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out waiting for a reply; buffered %r" % self.buf)
        self.sock.settimeout(left)
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed("connection closed by peer; buffered %r" % self.buf)
        self.buf += chunk

    def read_line(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read_reply(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        raw = b""
        lines = []
        code = None
        while True:
            line = self.read_line(max(0.001, deadline - time.monotonic()))
            raw += line
            text = line.rstrip(b"\r\n").decode("utf-8", "replace")
            m = re.match(r"^(\d{3})([ -]?)(.*)$", text)
            if not m:
                raise AssertionError("malformed reply line %r (so far %r)" % (line, raw))
            if code is None:
                code = int(m.group(1))
            lines.append(m.group(3))
            if m.group(2) != "-":
                return Reply(code, lines, raw)

    def command(self, line, timeout=None):
        """Send one command line (CRLF added) and read its reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.read_reply(timeout)

    def greeting(self, timeout=None):
        return self.read_reply(timeout)

    def start_tls(self, context, server_hostname="localhost"):
        """TLS handshake on this connection (after a 220 to STARTTLS, or at once
        on an implicit-TLS port); later send/read go through TLS. Bytes already
        buffered in the clear would be lost, so there must be none."""
        if self.buf:
            raise AssertionError("plaintext buffered before the TLS handshake: %r" % self.buf)
        self.sock.settimeout(self.timeout)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        return self.sock

    def pending(self, timeout=0.5):
        """Whatever arrives within timeout (bytes, maybe b""), added to what is
        already buffered and returned without consuming it. EOF ends the wait."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self.buf
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return self.buf
            if not chunk:
                return self.buf
            self.buf += chunk

    def ehlo(self, name="client.example.org"):
        return self.command("EHLO " + name)

    def is_closed(self, timeout=5.0):
        """Wait (bounded) for EOF from the server: True if it closed the
        connection (any unread bytes stay in buf), False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
            self.buf += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Close with RST-free FIN right now (client disappears)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dot_stuff(body):
    """Transparency (RFC 5321 §4.5.2) for raw DATA: double a leading dot on
    every line. body must be CRLF text; add b".\r\n" yourself."""
    out = re.sub(rb"(^|\r\n)\.", rb"\1..", body)
    return out


def smtp_client(host, port, source="127.0.0.5", timeout=10.0, ehlo=True):
    """smtplib.SMTP connected from source (a 127.0.0.x address)."""
    s = smtplib.SMTP(host, port, timeout=timeout, source_address=(source, 0),
                     local_hostname="client.example.org")
    if ehlo:
        s.ehlo()
    return s


def run_swaks(server, port, *args, source=None, timeout=30):
    """swaks against host:port (IPv4: swaks here lacks IO::Socket::INET6, so
    host and port are passed apart). Returns the CompletedProcess (text)."""
    cmd = ["swaks", "--server", server, "--port", str(port), "--timeout", "10"]
    if source:
        cmd += ["--local-interface", source]
    cmd += list(args)
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def have_swaks():
    return shutil.which("swaks") is not None


# --------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------

def secret_forms(secret, user=None):
    """The secret and the encodings in which an SMTP AUTH exchange carries it."""
    if isinstance(secret, bytes):
        secret = secret.decode()
    forms = {secret, base64.b64encode(secret.encode()).decode()}
    if user is not None:
        for authz in ("", user):
            blob = ("%s\0%s\0%s" % (authz, user, secret)).encode()
            forms.add(base64.b64encode(blob).decode())
    return forms


def check_no_secret(logs, secret, user=None):
    """Raise AssertionError if secret (or base64 of it, or of the AUTH PLAIN
    blob for user) appears anywhere in logs: a Gateway, a list of str lines,
    a list of dicts, or a str."""
    if isinstance(logs, Gateway):
        text = logs.text()
    elif isinstance(logs, str):
        text = logs
    else:
        text = "\n".join(l if isinstance(l, str) else json.dumps(l) for l in logs)
    for form in secret_forms(secret, user):
        if form and form in text:
            raise AssertionError("secret %r found in logs (as %r)" % (secret, form))


# --------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------

def make_test_cert(directory, name="localhost", ip="127.0.0.1", days=2, prefix=""):
    """A self-signed P-256 certificate (CN=name, SAN DNS:name and IP:ip) and its
    key, written to directory as PREFIXcert.pem / PREFIXkey.pem by openssl.
    Returns (cert_path, key_path)."""
    cert = os.path.join(directory, prefix + "cert.pem")
    key = os.path.join(directory, prefix + "key.pem")
    san = "subjectAltName=DNS:%s" % name + (",IP:%s" % ip if ip else "")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", str(days),
                    "-subj", "/CN=%s" % name, "-addext", san],
                   stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=30)
    return cert, key


# --------------------------------------------------------------------------
# A base TestCase with cleanup helpers
# --------------------------------------------------------------------------

class IntegrationTestCase(unittest.TestCase):
    maxDiff = 4000

    def start_backend(self, **kw):
        b = RecordingBackend(**kw).start()
        self.addCleanup(b.stop)
        return b

    def start_gateway(self, policy, **kw):
        g = Gateway(policy, **kw)
        self.addCleanup(g.stop)
        g.start()
        return g

    def raw_client(self, gateway, listener="mx", source="127.0.0.5", timeout=10.0):
        c = RawClient(gateway.host(listener), gateway.port(listener), source, timeout)
        self.addCleanup(c.close)
        return c

    def smtp(self, gateway, listener="mx", source="127.0.0.5", timeout=10.0, ehlo=True):
        s = smtp_client(gateway.host(listener), gateway.port(listener), source, timeout, ehlo)
        self.addCleanup(_close_smtp, s)
        return s

    def assertReply(self, reply, code, enhanced=None, contains=None):
        msg = "unexpected reply %r" % reply.raw
        self.assertEqual(reply.code, code, msg)
        if enhanced is not None:
            self.assertEqual(reply.enhanced, enhanced, msg)
        if contains is not None:
            self.assertIn(contains.lower(), reply.text.lower(), msg)


def _close_smtp(s):
    try:
        s.close()
    except Exception:
        pass
