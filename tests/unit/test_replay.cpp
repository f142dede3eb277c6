// `smtpgate replay` on small logs written inline: tightening and loosening a policy,
// listeners that are gone, recipients the backend refused, and the report's shapes.
#include <catch2/catch.hpp>

#include "proxy/tools/replay.h"
#include "tools_fixture.h"

using namespace smtpgate;
using namespace tools_test;

namespace {

const std::string kOpen = R"(, "mx": { "access": { "default": "allow" } },
    "submission": { "access": { "default": "deny", "allow": ["@cms"] } })";
const std::string kDenyNet =
    R"(, "mx": { "access": { "default": "allow", "deny": ["192.0.2.0/24"] } },
    "submission": { "access": { "default": "deny", "allow": ["@cms"] } })";

ReplayReport replay(const Policy& p, const std::string& log, ReplayOptions o = {}) {
  TempDir dir;
  auto r = replay_files(p, {dir.write("gw.log", log)}, o);
  REQUIRE(r);
  return std::move(*r);
}

uint64_t count(const ReplayReport& r, Stage stage, Verdict verdict, const std::string& rule) {
  auto it = r.decisions.find({stage, verdict, rule, true});
  return it == r.decisions.end() ? 0 : it->second;
}

}  // namespace

TEST_CASE("replay: denying the client's /24 turns an accepted delivery into a rejection",
          "[replay]") {
  std::string log = Tx{}.line();  // 192.0.2.7 delivered to user@example.com
  Tx other;
  other.session = "s2";
  other.client = "198.51.100.20:1234";
  log += other.line();

  auto same = replay(*policy(kOpen), log);
  CHECK(same.replayed == 2);
  CHECK(same.accepted_before == 2);
  CHECK(same.accepted_now == 2);
  CHECK(same.differences.empty());

  auto r = replay(*policy(kDenyNet), log);
  CHECK(r.accepted_before == 2);
  CHECK(r.accepted_now == 1);
  CHECK(r.to_rejected == 1);
  CHECK(r.to_accepted == 0);
  REQUIRE(r.differences.size() == 1);
  const ReplayDifference& d = r.differences[0];
  CHECK_FALSE(d.now_accepted);
  CHECK(d.recorded.client == "192.0.2.7:40000");
  CHECK(d.decision.stage == Stage::Connect);
  CHECK(d.decision.rule == "mx.access");
  CHECK(d.decision.verdict == Verdict::Reject);
  CHECK(count(r, Stage::Connect, Verdict::Reject, "mx.access") == 1);
  CHECK(count(r, Stage::Connect, Verdict::Allow, "mx.access") == 1);

  const std::string text = replay_text(r);
  CHECK_THAT(text, Catch::Contains("1 accepted -> rejected, 0 rejected -> accepted"));
  CHECK_THAT(text, Catch::Contains("accepted -> rejected: 2026-12-01T10:00:00.000Z session s1\n"
                                   "  client 192.0.2.7:40000, listener mx, no login\n"
                                   "  from sender@elsewhere.test to user@example.com\n"
                                   "  recorded: delivered at data, accepted 1 of 1; 250 2.0.0 Ok\n"
                                   "  now: connect reject mx.access: "));
  CHECK_THAT(text, Catch::Contains("reply: 554 5.7.1 mx.example.com access denied"));
}

TEST_CASE("replay: lifting the deny turns a rejection at MAIL into an acceptance", "[replay]") {
  // On the auto listener the old policy refused MAIL without AUTH from a /24 mx.access
  // denies (the connection passed: submission.access allows the CMS host).
  Tx t;
  t.listener = "legacy";
  t.client = "203.0.113.10:1";
  t.outcome = "rejected";
  t.stage = "mail";
  t.rule = "mx.access";
  t.reply = "554 5.7.1 mx.example.com access denied";
  t.recipients = t.accepted = {};
  const std::string log = t.line();

  auto before = replay(*policy(R"(, "mx": { "access": { "deny": ["203.0.113.0/24"] } },
      "submission": { "access": { "default": "deny", "allow": ["@cms"] } })"),
                       log);
  CHECK(before.differences.empty());
  CHECK(count(before, Stage::Mail, Verdict::Reject, "mx.access") == 1);

  auto r = replay(*policy(kOpen), log);
  CHECK(r.to_accepted == 1);
  REQUIRE(r.differences.size() == 1);
  CHECK(r.differences[0].now_accepted);
  CHECK(r.differences[0].decision.stage == Stage::Mail);
  CHECK(r.differences[0].decision.allowed());
}

TEST_CASE("replay: a relay refusal becomes a delivery when the domain turns local", "[replay]") {
  // The old policy refused gmail.example at RCPT: never forwarded, so the scripted backend
  // takes it now. nobody@example.com the backend itself refused (not in accepted, no policy
  // refusal logged): refused again.
  Tx t;
  t.outcome = "abandoned";
  t.stage = "quit";
  t.reply = "";
  t.recipients = {"victim@gmail.example", "nobody@example.com"};
  t.accepted = {};
  const std::string log =
      rcpt_refused("s1", t.client, "mx.relay", "victim@gmail.example") + t.line();

  auto same = replay(*policy(kOpen), log);
  CHECK(same.differences.empty());
  CHECK(count(same, Stage::Rcpt, Verdict::Reject, "mx.relay") == 1);

  auto r = replay(*policy(kOpen, R"("cms": ["203.0.113.10"])",
                          R"("example.com", "example.net", "gmail.example")"),
                  log);
  CHECK(r.to_accepted == 1);
  REQUIRE(r.differences.size() == 1);
  const ReplayDifference& d = r.differences[0];
  CHECK(d.now_accepted);
  CHECK(d.decision.stage == Stage::Rcpt);
  CHECK(d.decision.allowed());
  CHECK(count(r, Stage::Rcpt, Verdict::Reject, "mx.relay") == 0);
  const std::string text = replay_text(r);
  CHECK_THAT(text, Catch::Contains("rejected -> accepted: "));
  CHECK_THAT(text, Catch::Contains("to victim@gmail.example, nobody@example.com"));
  CHECK_THAT(text, Catch::Contains("recorded: abandoned at quit, accepted 0 of 2"));

  // Without the decision line (a log filtered to transactions), the recipient counts as one
  // the backend refused: nothing would change.
  auto blind = replay(*policy(kOpen, R"("cms": ["203.0.113.10"])",
                              R"("example.com", "example.net", "gmail.example")"),
                      t.line());
  CHECK(blind.differences.empty());
}

TEST_CASE("replay: a listener the new policy lacks is reported, not judged", "[replay]") {
  Tx t = submission("cms@example.com", "cms@example.com");
  t.listener = "submission-old";
  auto r = replay(*policy(kOpen), t.line() + Tx{}.line());
  CHECK(r.transactions == 2);
  CHECK(r.replayed == 1);
  CHECK(r.missing_listeners == std::map<std::string, uint64_t>{{"submission-old", 1}});
  CHECK(r.differences.empty());
  CHECK_THAT(replay_text(r),
             Catch::Contains("Not replayed: 1 transaction on listener \"submission-old\", which "
                             "the new policy does not have."));
  auto doc = nlohmann::json::parse(replay_json(r));
  CHECK(doc["not_replayed"]["missing_listeners"]["submission-old"] == 1);
}

TEST_CASE("replay: a login's senders and TLS under the new submission policy", "[replay]") {
  std::string log = submission("cms@example.com", "noreply@example.com").line();
  Tx plain = submission("cms@example.com", "cms@example.com");
  plain.session = "s2";
  plain.tls = false;  // the old policy did not require TLS
  log += plain.line();

  const std::string listed =
      R"(, "submission": { "access": { "default": "deny", "allow": ["@cms"] },
      "require_tls": false, "senders": { "cms@example.com": ["noreply@example.com"] } })";
  auto same = replay(*policy(listed), log);
  CHECK(same.replayed == 2);
  CHECK(same.accepted_now == 2);
  CHECK(count(same, Stage::Auth, Verdict::Allow, "auth") == 2);
  CHECK(count(same, Stage::StartTls, Verdict::Allow, "default") == 1);

  // Senders unlisted and TLS required: both refused, each by its own rule.
  auto r = replay(*policy(kOpen), log);
  CHECK(r.to_rejected == 2);
  REQUIRE(r.differences.size() == 2);
  CHECK(r.differences[0].decision.rule == "submission.auth_match");
  CHECK(r.differences[0].decision.reply.code == 553);
  // AUTH before STARTTLS is refused; the client went on to MAIL unauthenticated.
  CHECK(r.differences[1].decision.rule == "submission.require_tls");
  CHECK(count(r, Stage::Mail, Verdict::Reject, "submission.auth_required") == 1);
}

TEST_CASE("replay: a failed login goes on unauthenticated, as the client did", "[replay]") {
  // The auto listener: AUTH failed, then a delivery to a local domain as an mx client.
  Tx t;
  t.listener = "legacy";
  t.client = "203.0.113.10:1";
  t.auth = "failed";
  t.login = "cms@example.com";
  t.tls = true;
  auto r = replay(*policy(kOpen), t.line());
  CHECK(r.replayed == 1);
  CHECK(r.accepted_before == 1);
  CHECK(r.accepted_now == 1);
  CHECK(count(r, Stage::Auth, Verdict::Reject, "auth") == 1);
}

TEST_CASE("replay: recipients the backend refused stay refused", "[replay]") {
  Tx t;
  t.recipients = {"a@example.com", "gone@example.com"};
  t.accepted = {"a@example.com"};
  Tx none = t;
  none.session = "s2";
  none.outcome = "abandoned";
  none.stage = "quit";
  none.accepted = {};
  none.recipients = {"gone@example.com"};
  auto r = replay(*policy(kOpen), t.line() + none.line());
  CHECK(r.accepted_before == 1);
  CHECK(r.accepted_now == 1);
  CHECK(r.differences.empty());
}

TEST_CASE("replay: malformed lines are counted, differences over the cap too", "[replay]") {
  std::string log = "not json\n{\"event\":\"transaction\"}\n";
  for (int i = 0; i < 5; ++i) {
    Tx t;
    t.session = "s" + std::to_string(i);
    log += t.line();
  }
  log += R"({"ts":"x","event":"session_close","session":"s1"})"
         "\n";
  log += R"({"ts":"x","event":"ban","ip":"192.0.2.1"})"
         "\n";
  ReplayOptions o;
  o.max_differences = 2;
  auto r = replay(*policy(kDenyNet), log, o);
  CHECK(r.counts.not_json == 1);
  CHECK(r.counts.malformed == 1);
  CHECK(r.counts.other_events == 1);
  CHECK(r.to_rejected == 5);
  CHECK(r.differences.size() == 2);
  CHECK(r.differences_omitted == 3);
  CHECK_THAT(replay_text(r), Catch::Contains("... and 3 more differences not shown."));

  auto doc = nlohmann::json::parse(replay_json(r));
  CHECK(doc["outcomes"]["accepted_to_rejected"] == 5);
  CHECK(doc["differences_omitted"] == 3);
  REQUIRE(doc["differences"].size() == 2);
  const auto& d = doc["differences"][0];
  CHECK(d["change"] == "accepted_to_rejected");
  CHECK(d["client"] == "192.0.2.7:40000");
  CHECK(d["recipients"] == nlohmann::json::array({"user@example.com"}));
  CHECK(d["recorded"]["outcome"] == "delivered");
  CHECK(d["decision"]["rule"] == "mx.access");
  CHECK(d["decision"]["reply"] == "554 5.7.1 mx.example.com access denied");
  bool found = false;
  for (const auto& c : doc["decisions"])
    if (c["stage"] == "connect" && c["rule"] == "mx.access" && c["verdict"] == "reject")
      found = c["count"] == 5 && c["enforced"] == true;
  CHECK(found);
}

TEST_CASE("replay: gzip logs and IPv6 clients", "[replay]") {
  TempDir dir;
  Tx t;
  t.client = "[2001:db8::7]:5000";
  dir.write("gw.log.1", t.line());
  const std::string gz = dir.gzip("gw.log.1");
  auto r = replay_files(*policy(R"(, "mx": { "access": { "deny": ["2001:db8::/32"] } })"), {gz});
  REQUIRE(r);
  CHECK(r->warnings.empty());
  CHECK(r->to_rejected == 1);
  auto missing = replay_files(*policy(), {dir.file("gw.log.1")});  // gzip removed it
  CHECK_FALSE(missing);
}
