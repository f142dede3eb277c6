"""The command line as an operator meets it: exit codes as the README documents them, and
`check`/`explain` refusing mistakes loudly instead of guessing."""

import json
import os
import subprocess
import tempfile
import unittest

import support


def run(*args):
    return subprocess.run([support.gateway_binary()] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=20)


class CliTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def policy(self, **sections):
        p = support.gateway_policy("127.0.0.1:10025", listeners=(("mx", "mx"),), **sections)
        path = os.path.join(self.dir.name, "policy.json")
        with open(path, "w") as f:
            json.dump(p, f)
        return path

    def test_exit_codes(self):
        self.assertEqual(run("--version").returncode, 0)
        self.assertEqual(run("check", "--help").returncode, 0)
        missing = run("check")  # no -c: a usage error, exit 1 (not CLI11's 106)
        self.assertEqual(missing.returncode, 1, missing.stderr)
        self.assertIn("--config", missing.stderr)
        self.assertEqual(run("no-such-command").returncode, 1)
        self.assertEqual(run("check", "-c", self.policy()).returncode, 0)
        self.assertEqual(run("check", "-c", os.path.join(self.dir.name, "nope.json")).returncode, 1)

    def test_check_refuses_host_bits_and_an_unwritable_log_directory(self):
        path = self.policy(mx={"access": {"deny": ["127.0.0.10/24"]}},
                           log={"format": "json",
                                "path": os.path.join(self.dir.name, "missing", "gw.log")})
        out = run("check", "-c", path)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn('/mx/access/deny/0: "127.0.0.10/24" has host bits set; did you mean '
                      '"127.0.0.0/24" or "127.0.0.10/32"?', out.stderr)
        self.assertIn('/log/path: directory "%s" of the log file: No such file or directory'
                      % os.path.join(self.dir.name, "missing"), out.stderr)
        # run refuses the same file at start (no restart loop under systemd from check passing).
        started = run("run", "-c", path)
        self.assertNotEqual(started.returncode, 0)

    def test_explain_refuses_a_recipient_without_a_sender(self):
        out = run("explain", "-c", self.policy(), "--client", "192.0.2.1", "--listener", "mx",
                  "--rcpt", "x@gmail.test")
        self.assertEqual(out.returncode, 1, out.stdout)
        self.assertIn("--rcpt needs --mail-from", out.stderr)
        out = run("explain", "-c", self.policy(), "--client", "192.0.2.1", "--listener", "mx",
                  "--mail-from", "<>", "--rcpt", "x@gmail.test")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("outcome: rejected", out.stdout)


if __name__ == "__main__":
    unittest.main()
