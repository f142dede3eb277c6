#!/usr/bin/python3
"""A private Postfix + Dovecot(SASL) instance for smtpgate's integration tests.

Nothing here touches the system's mail setup: every file (main.cf, master.cf,
queue, data directory, mailboxes, Dovecot's config, sockets and logs) lives in
one temporary directory, the SMTP service listens only on 127.0.0.1:PORT, and
/etc/postfix is only read (Postfix's compiled-in meta_directory).

Mail for the virtual mailbox domains (example.com, example.net) is delivered by
Postfix's ``virtual`` agent into Maildirs under ``<root>/mail``; unknown local
users are refused at RCPT (550). Everything else is relayed only after SASL
authentication and then *discarded* (``default_transport = discard``) so the
instance never touches the network; with ``relayhost=(host, port)`` it is sent
there instead (e.g. to a recording backend).

SASL: ``smtpd_sasl_type = dovecot`` against a private ``dovecot -F`` whose only
service is auth, with a passwd-file of test users. XCLIENT is allowed from
127.0.0.0/8; ``proxy_protocol=True`` makes the SMTP service expect a PROXY
header (``smtpd_upstream_proxy_protocol = haproxy``, v1 and v2).

Must run as root (Postfix's master and Dovecot need it).

As a module::

    with PostfixInstance(users={"cms@example.com": "secret"}) as pf:
        ... smtp to 127.0.0.1:pf.port ...
        msgs = pf.wait_for_messages(1)

As a CLI (runs until Ctrl-C / SIGTERM, prints ``PORT nnnn`` and the root)::

    postfix_backend.py [--port N] [--user login:password]... [--keep]
"""

import argparse
import email.parser
import email.policy
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

POSTFIX_SBIN = "/usr/lib/postfix/sbin"
MASTER = os.path.join(POSTFIX_SBIN, "master")
POSTFIX_CMD = "/usr/sbin/postfix"
DOVECOT = "/usr/sbin/dovecot"

DEFAULT_DOMAINS = ("example.com", "example.net")
DEFAULT_USERS = {
    "cms@example.com": "secret",
    "user@example.com": "userpass",
    "alice@example.net": "alicepass",
}
DEFAULT_MAILBOXES = ("postmaster@example.com", "user@example.com", "cms@example.com",
                     "noreply@example.com", "alice@example.net", "bob@example.net")

MASTER_CF_SERVICES = """\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host, port, timeout, proc=None, what="service"):
    """Wait until host:port accepts a TCP connection; raise on timeout or if
    proc (a Popen) died meanwhile."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with status %s before listening on %s:%d"
                               % (what, proc.returncode, host, port))
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError as e:
            last = e
            time.sleep(0.05)
    raise TimeoutError("%s did not listen on %s:%d within %.0fs (%s)"
                       % (what, host, port, timeout, last))


def _read_banner(host, port, timeout):
    """Connect, read the 220 greeting, QUIT. Proves smtpd really answers."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        try:
            s.sendall(b"QUIT\r\n")
            s.recv(4096)
        except OSError:
            pass
        return buf.decode("latin-1")


class PostfixInstance:
    """One private Postfix (+ Dovecot for SASL). Use start()/stop() or `with`."""

    def __init__(self, port=None, users=None, mailboxes=None, domains=DEFAULT_DOMAINS,
                 hostname="postfix-backend.test", xclient_hosts="127.0.0.0/8",
                 proxy_protocol=False, relayhost=None, root=None, keep=False,
                 extra_main_cf=None):
        if os.geteuid() != 0:
            raise PermissionError("a private Postfix instance needs root")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.users = dict(DEFAULT_USERS if users is None else users)
        mb = list(DEFAULT_MAILBOXES if mailboxes is None else mailboxes)
        for u in self.users:        # every SASL user gets a mailbox too
            if u not in mb and u.rpartition("@")[2] in domains:
                mb.append(u)
        self.mailboxes = mb
        self.domains = tuple(domains)
        self.hostname = hostname
        self.xclient_hosts = xclient_hosts
        self.proxy_protocol = proxy_protocol
        self.relayhost = relayhost
        self.keep = keep
        self.extra_main_cf = dict(extra_main_cf or {})
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="smtpgate-postfix-")
        self.config_dir = os.path.join(self.root, "etc")
        self.queue_dir = os.path.join(self.root, "spool")
        self.data_dir = os.path.join(self.root, "lib")
        self.mail_dir = os.path.join(self.root, "mail")
        self.dovecot_dir = os.path.join(self.root, "dovecot")
        self.dovecot_run = os.path.join(self.root, "dovecot-run")
        self.auth_socket = os.path.join(self.dovecot_run, "auth-postfix")
        self.maillog_path = os.path.join(self.root, "maillog")
        self.dovecot_log_path = os.path.join(self.root, "dovecot.log")
        self.master_proc = None
        self.dovecot_proc = None
        self._started = False

    # ------------------------------------------------------------------ config
    def _write(self, path, text, mode=0o644):
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)

    def _configure(self):
        pf = pwd.getpwnam("postfix")
        mail_uid, mail_gid = 65534, 65534          # nobody:nogroup own the Maildirs
        # mkdtemp makes 0700; the postfix user (smtpd, virtual) must traverse it.
        os.chmod(self.root, 0o755)
        for d in (self.config_dir, self.queue_dir, self.data_dir, self.dovecot_dir,
                  self.dovecot_run):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        os.makedirs(self.mail_dir, exist_ok=True)
        os.chown(self.mail_dir, mail_uid, mail_gid)
        os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)
        open(self.maillog_path, "a").close()

        vmailbox = os.path.join(self.config_dir, "vmailbox")
        lines = []
        for addr in self.mailboxes:
            local, _, dom = addr.rpartition("@")
            lines.append("%s %s/%s/" % (addr, dom, local))   # trailing / = Maildir
        self._write(vmailbox, "\n".join(lines) + "\n")

        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": "backend.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            # Not used by any restriction below: only SASL may relay.
            "mynetworks": "127.0.0.1/32",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "relay_domains": "",
            "virtual_mailbox_domains": ", ".join(self.domains),
            "virtual_mailbox_base": self.mail_dir,
            "virtual_mailbox_maps": "texthash:" + vmailbox,
            "virtual_uid_maps": "static:%d" % mail_uid,
            "virtual_gid_maps": "static:%d" % mail_gid,
            "virtual_mailbox_limit": "0",
            "mailbox_size_limit": "0",
            "message_size_limit": "104857600",
            "default_transport": ("smtp" if self.relayhost
                                  else "discard:outbound delivery disabled in test instance"),
            "relayhost": ("[%s]:%d" % tuple(self.relayhost)) if self.relayhost else "",
            "smtp_dns_support_level": "disabled",
            "smtpd_banner": "$myhostname ESMTP Postfix (smtpgate test backend)",
            "smtpd_peername_lookup": "no",
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "1000",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": self.auth_socket,
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_sasl_authenticated_header": "yes",
            "smtpd_tls_security_level": "none",
            "smtpd_tls_auth_only": "no",
            "smtpd_authorized_xclient_hosts": self.xclient_hosts,
            "smtputf8_enable": "yes",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            "maillog_file": self.maillog_path,
            "maillog_file_prefixes": self.root,
            "in_flow_delay": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "master_service_disable": "",
        }
        main.update(self.extra_main_cf)
        self._write(os.path.join(self.config_dir, "main.cf"),
                    "".join("%s = %s\n" % kv for kv in main.items()))
        smtpd = "%s:%d inet  n       -       n       -       -       smtpd" % (
            self.host, self.port)
        if self.proxy_protocol:
            smtpd += "\n  -o smtpd_upstream_proxy_protocol=haproxy"
        self._write(os.path.join(self.config_dir, "master.cf"),
                    smtpd + "\n" + MASTER_CF_SERVICES)

        # Dovecot: auth only, passwd-file with plaintext test passwords.
        passwd = os.path.join(self.dovecot_dir, "users")
        self._write(passwd, "".join("%s:{PLAIN}%s::::::\n" % (u, p)
                                    for u, p in self.users.items()), 0o640)
        os.chown(passwd, 0, grp.getgrnam("dovecot").gr_gid)
        self._write(os.path.join(self.dovecot_dir, "dovecot.conf"), f"""\
# private Dovecot for smtpgate tests: SASL for Postfix only
protocols =
base_dir = {self.dovecot_run}
state_dir = {self.dovecot_dir}/state
instance_name = smtpgate-test-{self.port}
log_path = {self.dovecot_log_path}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={self.mail_dir}/%d/%n
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
service anvil {{
  chroot =
}}
""")
        os.makedirs(os.path.join(self.dovecot_dir, "state"), exist_ok=True)

    # ------------------------------------------------------------------ run
    def _postfix(self, *args, timeout=60):
        return subprocess.run([POSTFIX_CMD, "-c", self.config_dir] + list(args),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def start(self, timeout=30):
        if self._started:
            return self
        self._started = True
        try:
            self._configure()
            deadline = time.monotonic() + timeout
            # Dovecot first, so SASL works as soon as smtpd answers.
            with open(os.path.join(self.root, "dovecot.stderr"), "wb") as err:
                self.dovecot_proc = subprocess.Popen(
                    [DOVECOT, "-F", "-c", os.path.join(self.dovecot_dir, "dovecot.conf")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    start_new_session=True)
            # Create the queue's directories with their owners and modes.
            r = self._postfix("set-permissions", "create-missing")
            if r.returncode != 0:
                r = self._postfix("check")
            if r.returncode != 0:
                raise RuntimeError("postfix set-permissions/check failed:\n%s%s"
                                   % (r.stdout, r.stderr))
            # master in the foreground (-d): our child, stoppable by its pid.
            with open(os.path.join(self.root, "master.stderr"), "wb") as err:
                self.master_proc = subprocess.Popen(
                    [MASTER, "-c", self.config_dir, "-d"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    env=dict(os.environ, MAIL_CONFIG=self.config_dir),
                    start_new_session=True)
            self._wait_for_socket(self.auth_socket, deadline, self.dovecot_proc, "dovecot")
            wait_for_port(self.host, self.port, max(0.1, deadline - time.monotonic()),
                          self.master_proc, "postfix master")
            if not self.proxy_protocol:
                banner = _read_banner(self.host, self.port,
                                      max(1.0, deadline - time.monotonic()))
                if not banner.startswith("220"):
                    raise RuntimeError("unexpected Postfix banner %r" % banner)
        except BaseException:
            diag = self.diagnostics()
            self.stop()
            raise RuntimeError("private Postfix failed to start\n" + diag)
        return self

    @staticmethod
    def _wait_for_socket(path, deadline, proc, what):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("%s exited with status %s" % (what, proc.returncode))
            if os.path.exists(path):
                return
            time.sleep(0.05)
        raise TimeoutError("%s did not create %s" % (what, path))

    @staticmethod
    def _terminate(proc, timeout):
        """SIGTERM the process we started, then SIGKILL its process group
        (the group is its own: start_new_session=True)."""
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Children (smtpd, auth workers ...) share the session's process group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, timeout=10):
        self._terminate(self.master_proc, timeout)
        self._terminate(self.dovecot_proc, timeout)
        self.master_proc = self.dovecot_proc = None
        if self._own_root and not self.keep and os.path.isdir(self.root):
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------- inspection
    def _read(self, path):
        try:
            with open(path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def maillog(self):
        return self._read(self.maillog_path)

    def dovecot_log(self):
        return self._read(self.dovecot_log_path)

    def diagnostics(self):
        parts = []
        for name in ("maillog", "master.stderr", "dovecot.log", "dovecot.stderr"):
            text = self._read(os.path.join(self.root, name))
            if text:
                parts.append("--- %s ---\n%s" % (name, text[-4000:]))
        return "\n".join(parts)

    def messages(self):
        """Every delivered message, oldest first, as dicts: mailbox (address),
        path, data (bytes, exactly as in the Maildir file), return_path,
        delivered_to, original_to (from the headers the virtual agent adds),
        headers (an email.message.Message of the header part)."""
        out = []
        if not os.path.isdir(self.mail_dir):
            return out
        parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
        for dom in sorted(os.listdir(self.mail_dir)):
            ddir = os.path.join(self.mail_dir, dom)
            if not os.path.isdir(ddir):
                continue
            for local in sorted(os.listdir(ddir)):
                for sub in ("new", "cur"):
                    mdir = os.path.join(ddir, local, sub)
                    if not os.path.isdir(mdir):
                        continue
                    for name in os.listdir(mdir):
                        path = os.path.join(mdir, name)
                        with open(path, "rb") as f:
                            data = f.read()
                        hdr = parser.parsebytes(data)
                        rp = hdr.get("Return-Path", "")
                        out.append({
                            "mailbox": "%s@%s" % (local, dom),
                            "path": path,
                            "mtime": os.stat(path).st_mtime,
                            "data": data,
                            "headers": hdr,
                            "return_path": rp.strip().strip("<>") if rp else None,
                            "delivered_to": hdr.get("Delivered-To"),
                            "original_to": hdr.get("X-Original-To"),
                        })
        out.sort(key=lambda m: (m["mtime"], m["path"]))
        return out

    def wait_for_messages(self, count, timeout=15):
        """Wait until at least count messages are delivered; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if len(msgs) >= count or time.monotonic() >= deadline:
                return msgs
            time.sleep(0.1)

    def queue_is_empty(self):
        """True when nothing waits in the queue (active/incoming/deferred)."""
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            d = os.path.join(self.queue_dir, sub)
            for _, _, files in os.walk(d):
                if files:
                    return False
        return True


def main(argv=None):
    p = argparse.ArgumentParser(description="Run a private Postfix+Dovecot test instance")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--user", action="append", default=[], help="login:password")
    p.add_argument("--mailbox", action="append", default=[], help="extra mailbox address")
    p.add_argument("--proxy-protocol", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the temp dir after stopping")
    args = p.parse_args(argv)
    users = None
    if args.user:
        users = dict(u.split(":", 1) for u in args.user)
    mailboxes = list(DEFAULT_MAILBOXES) + args.mailbox
    inst = PostfixInstance(port=args.port or None, users=users, mailboxes=mailboxes,
                           proxy_protocol=args.proxy_protocol, keep=args.keep)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    inst.start()
    try:
        print("PORT %d" % inst.port, flush=True)
        print("ROOT %s" % inst.root, flush=True)
        while not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        inst.stop()


if __name__ == "__main__":
    main()
