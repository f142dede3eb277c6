#!/usr/bin/python3
"""A recording SMTP backend for smtpgate's integration tests.

Run as a subprocess:

    recording_backend.py --dir OUT [--host 127.0.0.1] [--port 0]
                         [--user login:password]... [--data-reply "554 5.7.1 no"]
                         [--reject-rcpt addr]... [--xclient] [--proxy-protocol]
                         [--data-delay SECONDS] [--hostname backend.test]
                         [--tls-cert PEM --tls-key PEM [--implicit-tls]]

The first line on stdout is ``PORT nnnn`` once the socket listens (then the
script prints nothing else on stdout).  SIGTERM / SIGINT stop it.

Everything the backend sees ends up in OUT:

* ``msg-NNNNN.json`` + ``msg-NNNNN.eml``: one pair per message the backend
  accepted (the .eml is the message byte-exact, after dot-unstuffing; the
  JSON holds the envelope, the session's peer, helo, auth state, XCLIENT and
  PROXY data, the connection number and the data's base64).  The JSON file is
  written last, atomically, so a test that sees it can read both.
* ``commands.jsonl``: one JSON object per event, in order, for every
  connection: ``connect`` (peer), ``tls`` (the TLS handshake completed: after
  STARTTLS, or at once with --implicit-tls; version and cipher), ``proxy``
  (PROXY header), ``command`` (every
  command line exactly as received, without its line ending), ``auth_response``
  (SASL continuation lines), ``reply`` (every reply line sent), ``data_end``
  (byte count of a DATA transfer and the reply), ``disconnect``.
* ``conn-NNNNN.raw``: the whole inbound byte stream of each connection,
  unmodified (PROXY header, commands, DATA with dots and line endings as they
  arrived), so smuggling tests can count ``\\r\\n.\\r\\n`` themselves.

With --tls-cert/--tls-key the backend offers STARTTLS (aiosmtpd's
tls_context); with --implicit-tls as well it speaks TLS from the first byte
(port-465 style, no STARTTLS).  A message's JSON then has ``tls``
({"version", "cipher"}, or null for a message received in the clear).  The
raw stream of a connection is the plaintext the SMTP layer saw (before and
after the handshake), never ciphertext.

Everything is written unbuffered, so tests may read it while the backend runs.
"""

import argparse
import asyncio
import base64
import collections
import json
import os
import re
import signal
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, syntax

# Recording must see what the gateway sends, not what a strict server would
# accept: long body lines and long commands are accepted.
_BIG_LIMIT = 1 << 24
_COMMAND_LIMIT = 8192

XCLIENT_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR",
                 "DESTPORT")


def xtext_decode(value):
    """RFC 3461 xtext: "+XX" is the byte 0xXX."""
    raw = value.encode("utf-8", "surrogateescape")
    out = re.sub(rb"\+([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)
    return out.decode("utf-8", "replace")


class Recorder:
    """Shared state: output directory, counters, event log."""

    def __init__(self, outdir):
        self.outdir = outdir
        os.makedirs(outdir, exist_ok=True)
        self.conn_seq = 0
        self.msg_seq = 0
        self.lock = threading.Lock()
        self.events = open(os.path.join(outdir, "commands.jsonl"), "ab", buffering=0)

    def next_conn(self):
        with self.lock:
            self.conn_seq += 1
            return self.conn_seq

    def next_msg(self):
        with self.lock:
            self.msg_seq += 1
            return self.msg_seq

    def event(self, conn, kind, **fields):
        rec = {"conn": conn, "event": kind}
        rec.update(fields)
        line = json.dumps(rec, ensure_ascii=True, sort_keys=False) + "\n"
        with self.lock:
            self.events.write(line.encode("ascii"))

    def write_atomic(self, name, data):
        path = os.path.join(self.outdir, name)
        tmp = os.path.join(self.outdir, "." + name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


def _text(b):
    """bytes → str without losing anything (invalid UTF-8 as surrogate escapes
    is not JSON-safe, so use latin-1, which maps bytes 1:1)."""
    if isinstance(b, str):
        return b
    return b.decode("latin-1")


class Handler:
    def __init__(self, args, recorder):
        self.args = args
        self.rec = recorder
        self.reject_rcpt = {a.lower() for a in args.reject_rcpt}

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.args.no_auth:
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        if self.args.xclient:
            responses.insert(-1, "250-XCLIENT " + " ".join(XCLIENT_ATTRS))
        return responses

    async def handle_PROXY(self, server, session, envelope, proxy_data):
        pd = proxy_data
        server.proxy_info = {
            "version": pd.version,
            "valid": bool(pd.valid) if hasattr(pd, "valid") else True,
            "command": str(pd.command) if pd.command is not None else None,
            "family": str(pd.family) if pd.family is not None else None,
            "protocol": str(pd.protocol) if pd.protocol is not None else None,
            "src_addr": str(pd.src_addr) if pd.src_addr is not None else None,
            "src_port": pd.src_port,
            "dst_addr": str(pd.dst_addr) if pd.dst_addr is not None else None,
            "dst_port": pd.dst_port,
            "raw_b64": base64.b64encode(bytes(pd.whole_raw)).decode("ascii"),
            "error": pd.error,
        }
        self.rec.event(server.conn_id, "proxy", **server.proxy_info)
        return True

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.reject_rcpt:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.args.data_delay:
            await asyncio.sleep(self.args.data_delay)
        data = envelope.original_content or b""
        if self.args.data_reply:
            return self.args.data_reply
        n = self.rec.next_msg()
        base = "msg-%05d" % n
        login = session.auth_data
        if isinstance(login, LoginPassword):
            login = login.login
        record = {
            "id": n,
            "conn": server.conn_id,
            "peer": list(session.peer) if session.peer else None,
            "helo": session.host_name,
            "esmtp": bool(session.extended_smtp),
            "authenticated": bool(session.authenticated),
            "login": _text(login) if login is not None else None,
            # the null sender is recorded as "" (aiosmtpd keeps it as "<>")
            "mail_from": "" if envelope.mail_from == "<>" else envelope.mail_from,
            "mail_options": list(envelope.mail_options),
            "rcpt_tos": list(envelope.rcpt_tos),
            "rcpt_options": list(envelope.rcpt_options),
            "xclient": dict(server.xclient) if server.xclient is not None else None,
            "proxy": server.proxy_info,
            "tls": server.tls_info(),
            "size": len(data),
            "data_b64": base64.b64encode(data).decode("ascii"),
            "eml": base + ".eml",
        }
        self.rec.write_atomic(base + ".eml", data)
        self.rec.write_atomic(base + ".json", json.dumps(record, indent=1).encode())
        return "250 2.0.0 OK queued as %s" % base


class RecordingSMTP(SMTP):
    line_length_limit = _BIG_LIMIT
    command_size_limit = _COMMAND_LIMIT

    def __init__(self, handler, recorder, users, **kw):
        self.rec = recorder
        self.users = users
        self.conn_id = recorder.next_conn()
        self.xclient = None
        self.proxy_info = None
        self.raw = open(os.path.join(recorder.outdir, "conn-%05d.raw" % self.conn_id),
                        "ab", buffering=0)
        self._phase = "proxy" if kw.get("proxy_protocol_timeout") else "command"
        self._data_bytes = 0
        super().__init__(handler, authenticator=self._check_auth, **kw)
        # Instance-level: the class-level dict of aiosmtpd is shared and mutated.
        self.command_size_limits = collections.defaultdict(lambda: _COMMAND_LIMIT)

    # --- authentication against the users table -------------------------
    def _check_auth(self, server, session, envelope, mechanism, auth_data):
        ok = False
        login = None
        if isinstance(auth_data, LoginPassword):
            login = _text(auth_data.login)
            ok = self.users.get(login) == _text(auth_data.password)
        self.rec.event(self.conn_id, "auth_result", mechanism=mechanism,
                       login=login, success=ok)
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    # --- TLS state --------------------------------------------------------
    def tls_info(self):
        """{"version", "cipher"} of the TLS session under this connection now,
        or None in the clear."""
        t = self.transport
        obj = t.get_extra_info("ssl_object") if t is not None else None
        if obj is None:
            return None
        c = obj.cipher()
        return {"version": obj.version(), "cipher": c[0] if c else None}

    # --- raw tee and command logging --------------------------------------
    def connection_made(self, transport):
        # Called once per connection, and once more after a STARTTLS handshake
        # (aiosmtpd swaps in the TLS transport). With implicit TLS the first
        # call already comes after the handshake.
        first = self.transport is None
        super().connection_made(transport)
        if first:
            peer = transport.get_extra_info("peername")
            sock = transport.get_extra_info("sockname")
            self.rec.event(self.conn_id, "connect",
                           peer=list(peer) if peer else None,
                           sockname=list(sock) if sock else None)
        info = self.tls_info()
        if info is not None:
            self.rec.event(self.conn_id, "tls", starttls=not first, **info)

    def _client_connected_cb(self, reader, writer):
        super()._client_connected_cb(reader, writer)
        orig_readuntil = reader.readuntil
        orig_readline = reader.readline
        smtp = self

        async def readuntil(separator=b"\n"):
            line = await orig_readuntil(separator)
            if smtp._phase == "command" and separator == b"\n":
                smtp.rec.event(smtp.conn_id, "command",
                               line=_text(line.rstrip(b"\r\n")),
                               ending=_text(line[len(line.rstrip(b"\r\n")):]))
            elif smtp._phase == "data":
                smtp._data_bytes += len(line)
            return line

        async def readline():
            # StreamReader.readline() calls self.readuntil(): do not log twice.
            saved, smtp._phase = smtp._phase, "auth"
            try:
                line = await orig_readline()
            finally:
                smtp._phase = saved
            if saved == "command":
                smtp.rec.event(smtp.conn_id, "auth_response",
                               line=_text(line.rstrip(b"\r\n")))
            return line

        reader.readuntil = readuntil
        reader.readline = readline

    def data_received(self, data):
        try:
            self.raw.write(data)
        except ValueError:
            pass
        super().data_received(data)

    def connection_lost(self, exc):
        self.rec.event(self.conn_id, "disconnect",
                       error=repr(exc) if exc is not None else None)
        try:
            self.raw.close()
        except Exception:
            pass
        super().connection_lost(exc)

    async def push(self, status):
        if self._phase == "proxy":
            self._phase = "command"
        text = status if isinstance(status, str) else _text(status)
        self.rec.event(self.conn_id, "reply", line=text)
        await super().push(status)

    # --- DATA: mark the phase so data lines are not logged as commands ---
    async def smtp_DATA(self, arg):
        orig_push = super().push
        smtp = self

        async def push_and_enter_data(status):
            text = status if isinstance(status, str) else _text(status)
            smtp.rec.event(smtp.conn_id, "reply", line=text)
            await orig_push(status)
            if text.startswith("354"):
                smtp._phase = "data"
                smtp._data_bytes = 0

        self.push = push_and_enter_data
        try:
            await super().smtp_DATA(arg)
        finally:
            del self.push
            if self._phase == "data":
                self.rec.event(self.conn_id, "data_end", bytes=self._data_bytes)
            self._phase = "command"

    # --- XCLIENT (Postfix semantics: reset, new 220 greeting) --------------
    @syntax("XCLIENT attribute=value ...")
    async def smtp_XCLIENT(self, arg):
        if not self.event_handler.args.xclient:
            await self.push('500 Error: command "XCLIENT" not recognized')
            return
        if not arg:
            await self.push("501 5.5.4 Syntax: XCLIENT attribute=value...")
            return
        attrs = {}
        for item in arg.split():
            name, eq, value = item.partition("=")
            if not eq or name.upper() not in XCLIENT_ATTRS:
                await self.push("501 5.5.4 Bad XCLIENT attribute: %s" % name)
                return
            attrs[name.upper()] = xtext_decode(value)
        if self.xclient is None:
            self.xclient = {}
        self.xclient.update(attrs)
        self.rec.event(self.conn_id, "xclient", attrs=attrs)
        # Like Postfix: the session restarts, the client must say EHLO again.
        self._set_rset_state()
        self.session.host_name = None
        self.session.extended_smtp = False
        self.session.authenticated = None
        self.session.auth_data = None
        await self.push("220 %s ESMTP recording backend" % self.hostname)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True, help="output directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--hostname", default="backend.test")
    p.add_argument("--user", action="append", default=[],
                   help="login:password (repeatable)")
    p.add_argument("--data-reply", default=None,
                   help='reply to the final dot instead of 250, e.g. "554 5.7.1 rejected"')
    p.add_argument("--data-delay", type=float, default=0.0,
                   help="seconds to wait before replying to the final dot")
    p.add_argument("--reject-rcpt", action="append", default=[],
                   help="recipient answered 550 5.1.1 (repeatable)")
    p.add_argument("--xclient", action="store_true", help="advertise and accept XCLIENT")
    p.add_argument("--proxy-protocol", action="store_true",
                   help="require a PROXY v1/v2 header on every connection")
    p.add_argument("--no-auth", action="store_true", help="do not offer AUTH")
    p.add_argument("--max-size", type=int, default=64 * 1024 * 1024,
                   help="SIZE advertised / accepted (0 = unlimited)")
    p.add_argument("--tls-cert", default=None,
                   help="PEM certificate: offer STARTTLS (or, with --implicit-tls, "
                        "TLS from the first byte)")
    p.add_argument("--tls-key", default=None, help="PEM key of --tls-cert")
    p.add_argument("--implicit-tls", action="store_true",
                   help="implicit TLS (port-465 style) instead of STARTTLS")
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.implicit_tls and not args.tls_cert:
        p.error("--implicit-tls needs --tls-cert and --tls-key")
    return args


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    users = {}
    for u in args.user:
        login, sep, pw = u.partition(":")
        if not sep:
            sys.exit("--user wants login:password, got %r" % u)
        users[login] = pw
    recorder = Recorder(args.dir)
    handler = Handler(args, recorder)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    tls_context = None
    if args.tls_cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)

    def factory():
        kw = dict(hostname=args.hostname,
                  data_size_limit=args.max_size or None,
                  enable_SMTPUTF8=True,
                  decode_data=False,
                  auth_require_tls=False,
                  loop=loop)
        if args.no_auth:
            kw["auth_exclude_mechanism"] = ["PLAIN", "LOGIN"]
        if args.proxy_protocol:
            kw["proxy_protocol_timeout"] = 5
        if tls_context is not None and not args.implicit_tls:
            kw["tls_context"] = tls_context
        return RecordingSMTP(handler, recorder, users, **kw)

    server = loop.run_until_complete(
        loop.create_server(factory, host=args.host, port=args.port, reuse_address=True,
                           ssl=tls_context if args.implicit_tls else None))
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write("PORT %d\n" % port)
    sys.stdout.flush()

    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    try:
        loop.run_until_complete(stop)
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


if __name__ == "__main__":
    main()
