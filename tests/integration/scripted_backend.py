"""A scripted, in-process SMTP backend for tests of broken or hostile backends.

A threaded socket server on 127.0.0.1 (port 0) that speaks just enough SMTP and
answers as its script says, byte for byte:

* greeting ``220 scripted ESMTP``; EHLO/HELO -> ``250-scripted`` /
  ``250-PIPELINING`` (unless pipelining=False) / ``250-8BITMIME`` /
  ``250 SMTPUTF8``; MAIL/RCPT/RSET/NOOP -> 250; DATA -> ``354 go ahead``; the
  body is read up to CRLF.CRLF and the dot ("DOT") answered
  ``250 2.0.0 Ok: queued as REAL``; QUIT -> 221 and close; anything else -> 502.
* replies={"MAIL"|"RCPT"|"DATA"|"DOT"|"RSET"|"NOOP"|"EHLO"|"GREETING": action}
  overrides a reply. An action is raw bytes (written in ONE sendall, so
  b"354 go\\r\\n250 Ok: FAKE\\r\\n" leaves in one segment), a list of bytes and
  floats (each bytes one sendall, each float a sleep of that many seconds), or
  a callable (conn, line) -> one of those. The body is read after DATA only
  if the reply to DATA began with 354.
* mid_body=bytes sends them as soon as the first body bytes arrived;
  mid_body=CLOSE closes the connection then.
* Each connection is a Conn: ``raw`` (every inbound byte, exactly), ``commands``
  (command lines, latin-1, without CRLF), ``bodies`` (complete bodies, without
  the final dot), ``sent``, ``eof`` (the peer closed), ``closed``,
  ``mid_body_at`` (time.monotonic() of the mid-body action). All under one lock:
  read them through ``connections()`` / ``wait_for()``.

    with ScriptedBackend(replies={"RCPT": b"354 what\\r\\n"}) as b:
        ... b.address ...
        b.wait_for_connections(1); b.wait_for(lambda: b.connections()[0].eof)

Every thread is a daemon bounded by stop() (which closes every socket) and by
MAX_CONNECTION_SECONDS; stop() is idempotent, so it suits addCleanup.
"""

import socket
import threading
import time

CLOSE = object()           # mid_body=CLOSE: close the connection mid-body
MAX_CONNECTION_SECONDS = 120.0

GREETING = b"220 scripted ESMTP\r\n"
DEFAULTS = {
    "MAIL": b"250 2.1.0 Ok\r\n",
    "RCPT": b"250 2.1.5 Ok\r\n",
    "RSET": b"250 2.0.0 Ok\r\n",
    "NOOP": b"250 2.0.0 Ok\r\n",
    "DATA": b"354 go ahead\r\n",
    "DOT": b"250 2.0.0 Ok: queued as REAL\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
}
UNKNOWN = b"502 5.5.2 Error: command not recognized\r\n"


def ehlo_reply(pipelining=True):
    return (b"250-scripted\r\n" + (b"250-PIPELINING\r\n" if pipelining else b"")
            + b"250-8BITMIME\r\n250 SMTPUTF8\r\n")


class Conn:
    """What one connection saw. Fields change only under the backend's lock."""

    def __init__(self, index):
        self.index = index
        self.raw = b""
        self.commands = []
        self.bodies = []
        self.sent = []             # (time.monotonic(), bytes) per sendall
        self.eof = False           # the gateway closed (EOF or reset)
        self.closed = False        # the handler is done with the socket
        self.mid_body_at = None

    def verbs(self):
        return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in self.commands]

    def __repr__(self):
        return ("Conn(%d, commands=%r, eof=%r, closed=%r, raw=%r)"
                % (self.index, self.commands, self.eof, self.closed, self.raw[-300:]))


class ScriptedBackend:

    def __init__(self, replies=None, pipelining=True, mid_body=None, host="127.0.0.1"):
        self.replies = dict(replies or {})
        self.pipelining = pipelining
        self.mid_body = mid_body
        self.host = host
        self.port = None
        self._conns = []
        self._socks = []
        self._threads = []
        self._lock = threading.RLock()    # predicates may call connections()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._listener = None

    # -- lifecycle --------------------------------------------------------
    def start(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self, timeout=5.0):
        self._stopping.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    # -- what was seen ------------------------------------------------------
    def connections(self):
        """The Conn objects so far (a snapshot of the list, oldest first)."""
        with self._lock:
            return list(self._conns)

    def wait_for(self, predicate, timeout=10.0, message="condition"):
        """Wait until predicate() is truthy (re-checked whenever a connection
        records something); return its value, or raise AssertionError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("scripted backend: timed out after %.1fs waiting "
                                         "for %s; connections: %r"
                                         % (timeout, message, self._conns))
                self._cond.wait(min(left, 0.1))

    def wait_for_connections(self, count, timeout=10.0):
        return self.wait_for(lambda: len(self._conns) >= count and self._conns[:count],
                             timeout, "%d connection(s)" % count)

    # -- server -------------------------------------------------------------
    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                conn = Conn(len(self._conns) + 1)
                self._conns.append(conn)
                self._socks.append(sock)
                self._cond.notify_all()
            t = threading.Thread(target=self._serve, args=(sock, conn), daemon=True)
            t.start()
            self._threads.append(t)

    def _record(self, conn, **fields):
        with self._cond:
            for key, value in fields.items():
                if key in ("raw", "commands", "bodies", "sent"):
                    setattr(conn, key, getattr(conn, key) + value)
                else:
                    setattr(conn, key, value)
            self._cond.notify_all()

    def _send(self, sock, conn, action, line=""):
        """Perform a reply action; False if the connection is gone."""
        if callable(action):
            action = action(conn, line)
        for part in action if isinstance(action, (list, tuple)) else [action]:
            if isinstance(part, (int, float)):
                if self._stopping.wait(part):
                    return False
                continue
            try:
                sock.sendall(part)
            except OSError:
                return False
            self._record(conn, sent=[(time.monotonic(), part)])
        return True

    def _fill(self, sock, conn, inbox, deadline):
        """Append more input to inbox (a bytearray); False at EOF, on an error,
        on stop() or past the connection's lifetime."""
        while not self._stopping.is_set() and time.monotonic() < deadline:
            sock.settimeout(0.1)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._record(conn, eof=True)
                return False
            self._record(conn, raw=chunk)
            inbox += chunk
            return True
        return False

    def _serve(self, sock, conn):
        deadline = time.monotonic() + MAX_CONNECTION_SECONDS
        inbox = bytearray()
        try:
            if not self._send(sock, conn, self.replies.get("GREETING", GREETING)):
                return
            while True:
                while b"\n" not in inbox:
                    if not self._fill(sock, conn, inbox, deadline):
                        return
                end = inbox.index(b"\n")
                text = bytes(inbox[:end]).rstrip(b"\r").decode("latin-1")
                del inbox[:end + 1]
                self._record(conn, commands=[text])
                verb = text.split(" ", 1)[0].split(":", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    action = self.replies.get("EHLO", ehlo_reply(self.pipelining))
                else:
                    action = self.replies.get(verb, DEFAULTS.get(verb, UNKNOWN))
                if callable(action):
                    action = action(conn, text)
                if not self._send(sock, conn, action, text) or verb == "QUIT":
                    return
                first = action[0] if isinstance(action, (list, tuple)) else action
                if verb == "DATA" and isinstance(first, bytes) and first.startswith(b"354"):
                    if not self._read_body(sock, conn, inbox, deadline):
                        return
        finally:
            self._record(conn, closed=True)
            try:
                sock.close()
            except OSError:
                pass

    def _read_body(self, sock, conn, inbox, deadline):
        """Read up to CRLF.CRLF (what follows stays in inbox), doing the mid-body
        action once body bytes arrived, and answer the dot. False if the
        connection is over."""
        body = bytearray(b"\r\n")     # DATA's own CRLF: an empty body is just ".\r\n"
        body += inbox
        del inbox[:]
        acted = False
        while True:
            if len(body) > 2 and not acted and self.mid_body is not None:
                acted = True
                self._record(conn, mid_body_at=time.monotonic())
                if self.mid_body is CLOSE:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return False
                if not self._send(sock, conn, self.mid_body):
                    return False
            end = body.find(b"\r\n.\r\n")
            if end >= 0:
                inbox += body[end + 5:]
                self._record(conn, bodies=[bytes(body[2:end + 2])])
                return self._send(sock, conn, self.replies.get("DOT", DEFAULTS["DOT"]))
            if not self._fill(sock, conn, body, deadline):
                return False
