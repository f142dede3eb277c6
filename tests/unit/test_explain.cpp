// `explain` on the motivating example: the four stories the issue names.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "policy/loader.h"
#include "proxy/smtp/explain.h"

using namespace smtpgate;

namespace {

std::shared_ptr<Policy> bulk() {
  LoadOptions o;
  o.check_files = false;
  auto r =
      load_policy_file(std::string(SMTPGATE_SOURCE_DIR) + "/examples/smartermail-bulk.json", o);
  for (const auto& e : r.errors) UNSCOPED_INFO(e.to_string());
  REQUIRE(r.ok());
  return r.policy;
}

ExplainResult run(const Policy& p, ExplainInput in) {
  auto r = explain(p, in);
  REQUIRE(r);
  return *r;
}

const Decision& last(const ExplainResult& r) {
  return r.decisions.back();
}

}  // namespace

TEST_CASE("explain: world relay rejected by mx.relay", "[explain]") {
  auto p = bulk();
  ExplainInput in;
  in.client = *IpAddress::parse("198.51.100.9");
  in.listener = "mx";
  in.mail_from = "spammer@elsewhere.test";
  in.rcpts = {"victim@gmail.example"};
  auto r = run(*p, in);
  CHECK_FALSE(r.accepted);
  CHECK(last(r).rule == "mx.relay");
  CHECK(last(r).verdict == Verdict::Reject);
}

TEST_CASE("explain: world bounce to a local domain allowed", "[explain]") {
  auto p = bulk();
  ExplainInput in;
  in.client = *IpAddress::parse("198.51.100.9");
  in.listener = "mx";
  in.mail_from = "<>";
  in.rcpts = {"<noreply@example.com>"};
  auto r = run(*p, in);
  CHECK(r.accepted);
  for (const auto& d : r.decisions) CHECK(d.allowed());
}

TEST_CASE("explain: world AUTH on submission rejected by submission.access", "[explain]") {
  auto p = bulk();
  ExplainInput in;
  in.client = *IpAddress::parse("198.51.100.9");
  in.listener = "submission";
  in.tls = true;
  in.auth_user = "cms@example.com";
  auto r = run(*p, in);
  CHECK_FALSE(r.accepted);
  REQUIRE(r.decisions.size() == 1);
  CHECK(r.decisions[0].rule == "submission.access");
  CHECK(r.decisions[0].stage == Stage::Connect);
}

TEST_CASE("explain: CMS sends as a listed address, not as an unlisted one", "[explain]") {
  auto p = bulk();
  ExplainInput in;
  in.client = *IpAddress::parse("203.0.113.10");
  in.listener = "submission";
  in.tls = true;
  in.auth_user = "cms@example.com";
  in.mail_from = "noreply@example.com";
  in.rcpts = {"customer@gmail.example"};
  auto ok = run(*p, in);
  CHECK(ok.accepted);
  in.mail_from = "ceo@example.com";
  auto no = run(*p, in);
  CHECK_FALSE(no.accepted);
  CHECK(last(no).rule == "submission.auth_match");
  CHECK(last(no).reply.code == 553);
}

TEST_CASE("explain: AUTH on port 25 bans, JSON output shape", "[explain]") {
  auto p = bulk();
  ExplainInput in;
  in.client = *IpAddress::parse("198.51.100.9");
  in.listener = "mx";
  in.auth_user = "admin";
  auto r = run(*p, in);
  CHECK_FALSE(r.accepted);
  CHECK(last(r).rule == "mx.auth");
  CHECK(last(r).verdict == Verdict::Ban);
  auto doc = nlohmann::json::parse(explain_json(r));
  CHECK(doc["outcome"] == "rejected");
  REQUIRE(doc["decisions"].is_array());
  auto d = doc["decisions"].back();
  CHECK(d["stage"] == "auth");
  CHECK(d["rule"] == "mx.auth");
  CHECK(d["verdict"] == "ban");
  CHECK(d["enforced"] == true);
  CHECK(d["reply"] == "502 5.5.1 AUTH not available");
  CHECK(doc["decisions"][0]["verdict"] == "allow");
}

TEST_CASE("explain: bad arguments are errors, not verdicts", "[explain]") {
  auto p = bulk();
  ExplainInput in;
  in.client = *IpAddress::parse("198.51.100.9");
  in.listener = "nope";
  CHECK_FALSE(explain(*p, in));
  in.listener = "mx";
  in.mail_from = "not an address";
  CHECK_FALSE(explain(*p, in));
  // A recipient without a sender was once dropped silently with "accepted".
  in.mail_from.reset();
  in.rcpts = {"x@gmail.example"};
  auto r = explain(*p, in);
  REQUIRE_FALSE(r);
  CHECK(r.error() ==
        "--rcpt needs --mail-from (a session names its sender first; \"<>\" for a bounce)");
}

TEST_CASE("explain: a login the gateway remembers as locked or suspended", "[explain]") {
  LoadOptions o;
  o.check_files = false;
  auto loaded = load_policy_text(R"({
    "version": 1, "hostname": "mx.example.com", "local_domains": ["example.com"],
    "listeners": [ { "name": "submission", "listen": "127.0.0.1:587", "class": "submission" } ],
    "backend": { "address": "127.0.0.1:10025" },
    "submission": { "require_tls": false, "access": { "default": "allow" },
                    "breaker": { "max_ips_per_hour": 5 } },
    "brute_force": { "per_login": { "max_failures": 3 } } })",
                                 "explain.json", o);
  REQUIRE(loaded.ok());
  const Policy& p = *loaded.policy;
  const UnixMillis now = 1'800'000'000'000;
  LoginGuard logins;
  LoginBreaker breaker;
  logins.record_success("user@example.com", *IpAddress::parse("192.0.2.1"), now - 60'000);
  for (int i = 0; i < 3; ++i)
    logins.record_failure("user@example.com", now - 1000, *p.brute_force.per_login);
  breaker.suspend("cms@example.com", BreakerTrip{"max_ips_per_hour", 6, 5}, now - 5000);

  ExplainInput in;
  in.listener = "submission";
  in.client = *IpAddress::parse("198.51.100.7");
  in.auth_user = "user@example.com";
  in.mail_from = "user@example.com";
  in.rcpts = {"friend@elsewhere.example"};
  in.logins = &logins;
  in.breaker = &breaker;
  in.now = now;
  SECTION("locked for an address it never logged in from") {
    auto r = run(p, in);
    CHECK_FALSE(r.accepted);
    const Decision* lock = nullptr;
    for (const auto& d : r.decisions)
      if (d.rule == "brute_force.login") lock = &d;
    REQUIRE(lock);
    CHECK(lock->reply.code == 535);
    CHECK(lock->reason.find("locked until 2027-01-15T") != std::string::npos);
    CHECK(last(r).rule == "brute_force");  // and it counts against the address
  }
  SECTION("the owner's address still gets in") {
    in.client = *IpAddress::parse("192.0.2.1");
    CHECK(run(p, in).accepted);
  }
  SECTION("without the state, nothing is remembered") {
    in.logins = nullptr;
    CHECK(run(p, in).accepted);
  }
  SECTION("a suspended login: 454 at AUTH") {
    in.auth_user = "cms@example.com";
    in.mail_from = "cms@example.com";
    auto r = run(p, in);
    CHECK_FALSE(r.accepted);
    CHECK(last(r).rule == "submission.breaker");
    CHECK(last(r).stage == Stage::Auth);
    CHECK(last(r).reply.code == 454);
    CHECK(explain_text(r).find("454 4.7.0 Account suspended") != std::string::npos);
  }
}
