"""The deployment guides' steps, run where a machine can run them: the systemd unit passes
systemd-analyze, the installed file modes let the service's group (and only it) read the
policy, the gateway speaks the readiness protocol a Type=notify unit waits for, and the
logrotate snippet rotates a real log that the gateway then reopens."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

import support
from support import IntegrationTestCase

ROOT = os.environ.get("SMTPGATE_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
UNIT = os.path.join(ROOT, "deploy", "systemd", "smtpgate.service")
LOGROTATE = os.path.join(ROOT, "deploy", "logrotate", "smtpgate")


def need(tool):
    path = shutil.which(tool)
    if not path:
        raise AssertionError("%s is not installed (deploy/scripts/install-deps.sh installs it)"
                             % tool)
    return path


class SystemdUnitTest(unittest.TestCase):

    def test_unit_passes_systemd_analyze_verify(self):
        need("systemd-analyze")
        with tempfile.TemporaryDirectory() as d:
            with open(UNIT) as f:
                text = f.read().replace("/usr/local/bin/smtpgate", support.gateway_binary())
            unit = os.path.join(d, "smtpgate.service")
            with open(unit, "w") as f:
                f.write(text)
            out = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True,
                                 text=True, timeout=60)
            # verify exits 0 on many mistakes (an unknown Type= is "ignored"): any word from
            # it is a finding.
            self.assertEqual((out.returncode, out.stdout + out.stderr), (0, ""))
        self.assertIn("Type=notify", text)
        self.assertIn("AmbientCapabilities=CAP_NET_BIND_SERVICE", text)
        self.assertIn("User=smtpgate", text)


@unittest.skipUnless(os.geteuid() == 0, "needs root to set file owners (CI runs as root)")
class InstalledModesTest(unittest.TestCase):
    """deploy/guides/systemd.md installs /etc/smtpgate root:smtpgate 0750 with 0640 files.
    Here the service user is `nobody` in group `nogroup`, in a directory laid out the same
    way: the group reads the policy, a user outside it does not."""

    def test_the_service_group_reads_the_policy_and_no_one_else(self):
        need("runuser")
        top = tempfile.mkdtemp(prefix="smtpgate-etc-")
        self.addCleanup(shutil.rmtree, top)
        os.chmod(top, 0o755)
        etc = os.path.join(top, "smtpgate")
        policy = os.path.join(etc, "policy.json")
        subprocess.run(["install", "-d", "-o", "root", "-g", "nogroup", "-m", "0750", etc],
                       check=True)
        with tempfile.NamedTemporaryFile("w", delete=False, suffix=".json") as f:
            json.dump(support.gateway_policy("127.0.0.1:10025"), f)
        self.addCleanup(os.unlink, f.name)
        subprocess.run(["install", "-o", "root", "-g", "nogroup", "-m", "0640", f.name, policy],
                       check=True)
        binary = support.gateway_binary()
        ok = subprocess.run(["runuser", "-u", "nobody", "-g", "nogroup", "--", binary, "check",
                             "-c", policy], capture_output=True, text=True, timeout=20)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        # The mistake the old install made: root-owned 0750/0640, the service user outside.
        subprocess.run(["chgrp", "-R", "root", etc], check=True)
        denied = subprocess.run(["runuser", "-u", "nobody", "-g", "nogroup", "--", binary,
                                 "check", "-c", policy], capture_output=True, text=True,
                                timeout=20)
        self.assertEqual(denied.returncode, 1, denied.stderr)
        self.assertIn("Permission denied", denied.stderr)


class ReadinessTest(IntegrationTestCase):
    """What a Type=notify unit waits for ($NOTIFY_SOCKET, sd_notify(3)'s datagrams)."""

    def test_ready_reloading_stopping(self):
        d = tempfile.mkdtemp(prefix="smtpgate-notify-")
        self.addCleanup(shutil.rmtree, d)
        path = os.path.join(d, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.settimeout(10)
        backend = self.start_backend()
        gw = self.start_gateway(support.gateway_policy(backend.address),
                                env={"NOTIFY_SOCKET": path})
        ready = sock.recv(4096).decode()
        self.assertTrue(ready.startswith("READY=1"), ready)
        c = self.raw_client(gw, "mx")   # accepting when it said so
        self.assertEqual(c.greeting().code, 220)
        gw.signal(signal.SIGHUP)
        self.assertEqual(sock.recv(4096).decode(), "RELOADING=1")
        self.assertTrue(sock.recv(4096).decode().startswith("READY=1"))
        gw.signal(signal.SIGTERM)
        self.assertEqual(sock.recv(4096).decode(), "STOPPING=1")


class LogrotateTest(IntegrationTestCase):
    """deploy/logrotate/smtpgate against a real log: rotated, then reopened by SIGUSR1. The
    copy differs only where the test cannot be the system: the log's path, the owner (the
    test's user, not `smtpgate`) and the postrotate signal (sent to this gateway's PID)."""

    def test_rotation_then_reopen(self):
        logrotate = need("logrotate")
        d = tempfile.mkdtemp(prefix="smtpgate-rotate-")
        self.addCleanup(shutil.rmtree, d)
        log = os.path.join(d, "smtpgate.log")
        backend = self.start_backend()
        gw = self.start_gateway(support.gateway_policy(
            backend.address, log={"format": "json", "path": log}))

        def events(p):
            with open(p) as f:
                return [json.loads(line)["event"] for line in f if line.strip()]

        c = self.raw_client(gw, "mx")
        self.assertEqual(c.greeting().code, 220)
        self.assertReply(c.command("QUIT"), 221)
        support.wait_until(lambda: "session_close" in events(log), message="the first session")

        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
        with open(LOGROTATE) as f:
            conf = (f.read().replace("/var/log/smtpgate/smtpgate.log", log)
                    .replace("smtpgate smtpgate", "%s %s" % (user, group))
                    .replace("systemctl kill --signal=SIGUSR1 --kill-whom=main smtpgate.service",
                             "kill -USR1 %d" % gw.proc.pid))
        conf_path = os.path.join(d, "logrotate.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        os.chmod(conf_path, 0o644)
        out = subprocess.run([logrotate, "-f", "-s", os.path.join(d, "state"), conf_path],
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertTrue(os.path.exists(log + ".1"), os.listdir(d))  # delaycompress
        support.wait_until(lambda: os.path.exists(log) and "log_reopen" in events(log),
                           message="the reopened log's first line")
        c = self.raw_client(gw, "mx")
        self.assertEqual(c.greeting().code, 220)
        self.assertReply(c.command("QUIT"), 221)
        support.wait_until(lambda: "session_close" in events(log), message="the new session")
        self.assertEqual(events(log)[0], "log_reopen")
        self.assertEqual(events(log + ".1").count("session_open"), 1)


if __name__ == "__main__":
    unittest.main()
