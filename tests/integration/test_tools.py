"""`smtpgate learn` and `smtpgate replay` on a real gateway's log: a week of dry-run in
miniature (a CMS login sending as several addresses, a relay attempt, an inbound delivery),
then the fragment learn proposes and what replay says a new policy would change."""

import base64
import copy
import gzip
import json
import os
import shutil
import subprocess

import support
from support import IntegrationTestCase, dot_stuff

LOGIN, PASSWORD = "cms@example.com", "s3cret-Pw"
CMS, SPAMMER, SENDER = "127.0.0.5", "127.0.0.6", "127.0.0.7"


def plain(login, password):
    return base64.b64encode(b"\0" + login.encode() + b"\0" + password.encode()).decode()


def smtpgate(*args):
    return subprocess.run([support.gateway_binary()] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)


class ToolsOnARealLogTest(IntegrationTestCase):

    def setUp(self):
        self.dir = support.make_tempdir("smtpgate-tools-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.log = os.path.join(self.dir, "gw.log")
        self.backend = self.start_backend(users={LOGIN: PASSWORD})
        # Submission in dry-run: the CMS's senders are logged, not refused; mx enforces.
        self.policy = support.gateway_policy(
            self.backend.address, listeners=(("mx", "mx"), ("sub", "submission")),
            log={"format": "json", "path": self.log},
            submission={"mode": "dry-run", "access": {"default": "allow"},
                        "require_tls": False})
        self.gw = self.start_gateway(self.policy)
        self.sessions()

    def client(self, listener, source):
        c = self.raw_client(self.gw, listener, source)
        self.assertEqual(c.greeting().code, 220)
        self.assertEqual(c.command("EHLO client.example").code, 250)
        return c

    def send(self, c, sender, rcpt):
        self.assertReply(c.command("MAIL FROM:<%s>" % sender), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % rcpt), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(dot_stuff(b"Subject: hi\r\n\r\nbody\r\n") + b".\r\n")
        self.assertReply(c.read_reply(), 250)

    def events(self, event=None):
        with open(self.log) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        return [e for e in lines if event is None or e["event"] == event]

    def sessions(self):
        c = self.client("sub", CMS)
        self.assertReply(c.command("AUTH PLAIN " + plain(LOGIN, PASSWORD)), 235)
        self.send(c, "cms@example.com", "one@gmail.example")
        self.send(c, "noreply@example.com", "two@gmail.example")
        self.send(c, "news@example.net", "three@gmail.example")
        self.assertReply(c.command("QUIT"), 221)

        c = self.client("mx", SPAMMER)
        self.assertReply(c.command("MAIL FROM:<spammer@elsewhere.test>"), 250)
        self.assertReply(c.command("RCPT TO:<victim@gmail.example>"), 554)
        self.assertReply(c.command("QUIT"), 221)

        c = self.client("mx", SENDER)
        self.send(c, "friend@elsewhere.test", "user@example.com")
        self.assertReply(c.command("QUIT"), 221)

        support.wait_until(lambda: len(self.events("session_close")) == 3,
                           message="three sessions in the log file")
        self.assertEqual(len(self.events("transaction")), 5)

    def write_policy(self, name, policy):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            json.dump(policy, f, indent=2)
        return path

    def test_learn_proposes_the_cms_senders_and_host(self):
        out = smtpgate("learn", "-c", self.gw.policy_path, self.log)
        self.assertEqual(out.returncode, 0, out.stderr)
        text = out.stdout
        self.assertIn("// smtpgate learn: 5 transactions in 1 file; 3 by 1 login after AUTH, "
                      "2 without.", text)
        self.assertIn('"cms@example.com": [', text)
        self.assertIn('"news@example.net",', text)
        self.assertIn('"noreply@example.com"', text)
        self.assertNotIn('"cms@example.com",', text)   # the login itself needs no entry
        self.assertIn('"learned-cms-example.com": [', text)
        self.assertIn('"127.0.0.5/32"  // 3 transactions; submission.access allows it now', text)

        machine = smtpgate("learn", "--json", "-c", self.gw.policy_path, self.log)
        self.assertEqual(machine.returncode, 0, machine.stderr)
        doc = json.loads(machine.stdout)
        self.assertEqual(doc["fragment"], {
            "submission": {"senders": {LOGIN: ["news@example.net", "noreply@example.com"]},
                           "access": {"allow": ["@learned-cms-example.com"]}},
            "lists": {"learned-cms-example.com": ["127.0.0.5/32"]}})
        self.assertEqual(doc["counts"]["transactions"], 5)
        self.assertGreater(doc["counts"]["other_events"], 0)

        # The same log rotated and compressed reads the same.
        gz = os.path.join(self.dir, "gw.log.1.gz")
        with open(self.log, "rb") as src, gzip.open(gz, "wb") as dst:
            shutil.copyfileobj(src, dst)
        again = smtpgate("learn", "--json", "-c", self.gw.policy_path, gz)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(json.loads(again.stdout)["fragment"], doc["fragment"])

        # The fragment adopted, submission enforced: replay finds nothing that would change.
        adopted = copy.deepcopy(self.policy)
        frag = doc["fragment"]
        adopted["submission"] = {"access": {"default": "deny",
                                            "allow": frag["submission"]["access"]["allow"]},
                                 "require_tls": False,
                                 "senders": frag["submission"]["senders"]}
        adopted["lists"] = frag["lists"]
        out = smtpgate("replay", "-c", self.write_policy("adopted.json", adopted), self.log)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("Outcomes: 4 accepted before, 4 now; 0 accepted -> rejected, "
                      "0 rejected -> accepted.", out.stdout)
        self.assertIn("submission.auth_match", out.stdout)

        # Without it, the CMS's two senders would be refused.
        strict = copy.deepcopy(self.policy)
        del strict["submission"]["mode"]
        out = smtpgate("replay", "--json", "-c", self.write_policy("strict.json", strict),
                       self.log)
        self.assertEqual(out.returncode, 0, out.stderr)
        doc = json.loads(out.stdout)
        self.assertEqual(doc["outcomes"]["accepted_to_rejected"], 2)
        self.assertEqual([d["from"] for d in doc["differences"]],
                         ["noreply@example.com", "news@example.net"])
        self.assertEqual({d["decision"]["rule"] for d in doc["differences"]},
                         {"submission.auth_match"})

    def test_replay_reports_a_denied_client_and_an_allowed_relay(self):
        new = copy.deepcopy(self.policy)
        new["mx"] = {"access": {"default": "allow", "deny": [SENDER + "/32"]}}
        new["local_domains"] = ["example.com", "example.net", "gmail.example"]
        out = smtpgate("replay", "-c", self.write_policy("new.json", new), self.log)
        self.assertEqual(out.returncode, 0, out.stderr)
        text = out.stdout
        self.assertIn("smtpgate replay: 5 transactions in 1 file, 5 replayed under the new "
                      "policy.", text)
        self.assertRegex(text, r"\n  connect   reject   mx.access +1\n")
        self.assertIn("Outcomes: 4 accepted before, 4 now; 1 accepted -> rejected, "
                      "1 rejected -> accepted.", text)
        self.assertRegex(text, r"accepted -> rejected: \S+ session \S+\n"
                               r"  client 127\.0\.0\.7:\d+, listener mx, no login\n"
                               r"  from friend@elsewhere\.test to user@example\.com\n"
                               r"  recorded: delivered at data, accepted 1 of 1; 250 .*\n"
                               r"  now: connect reject mx\.access: ")
        self.assertRegex(text, r"rejected -> accepted: \S+ session \S+\n"
                               r"  client 127\.0\.0\.6:\d+, listener mx, no login\n"
                               r"  from spammer@elsewhere\.test to victim@gmail\.example\n"
                               r"  recorded: abandoned at quit, accepted 0 of 1\n"
                               r"  now: rcpt allow ")

        # A listener gone from the new policy is reported, not judged.
        renamed = copy.deepcopy(self.policy)
        renamed["listeners"][1]["name"] = "submission"
        out = smtpgate("replay", "--json", "-c", self.write_policy("renamed.json", renamed),
                       self.log)
        self.assertEqual(out.returncode, 0, out.stderr)
        doc = json.loads(out.stdout)
        self.assertEqual(doc["not_replayed"]["missing_listeners"], {"sub": 3})
        self.assertEqual(doc["counts"]["replayed"], 2)
        self.assertEqual(doc["differences"], [])

    def test_bad_arguments_exit_1(self):
        missing = smtpgate("replay", "-c", self.gw.policy_path)   # no LOG
        self.assertEqual(missing.returncode, 1)
        self.assertIn("LOG", missing.stderr)
        nofile = smtpgate("learn", "-c", self.gw.policy_path, os.path.join(self.dir, "nope"))
        self.assertEqual(nofile.returncode, 1)
        self.assertIn("nope: No such file or directory", nofile.stderr)
        self.assertEqual(nofile.stdout, "")
        bad = self.write_policy("bad.json", {"version": 1})
        self.assertEqual(smtpgate("replay", "-c", bad, self.log).returncode, 1)
        self.assertEqual(smtpgate("learn", "--help").returncode, 0)
