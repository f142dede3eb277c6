// submission.breaker in the dialogue (SPEC §9): a hijacked login is suspended from the command
// that crossed a threshold on; its MAIL, RCPT and DATA get 451 4.7.1, its AUTH 454 4.7.0 after
// the backend accepted the password, and nothing more of it reaches the backend.
#include "dialogue_harness.h"

using namespace smtpgate;
using namespace smtpgate::smtp;
using namespace smtpgate::smtp::testing;

namespace {

const std::string kSuspended = "451 4.7.1 Account suspended, contact the administrator\r\n";
const std::string kSuspendedAuth = "454 4.7.0 Account suspended, contact the administrator\r\n";
constexpr const char* kLogin = "cms@example.com";

Options breaker_options(const std::string& breaker, const std::string& mode = "enforce") {
  Options o("submission");
  o.parts.submission = R"({ "require_tls": false, "mode": ")" + mode + R"(",
                            "access": { "default": "allow" }, "breaker": )" +
                       breaker + " }";
  return o;
}

void login(Harness& h) {
  h.connect();
  h.ehlo();
  REQUIRE(auth_plain(h, kLogin, "pw", kAuthOk) == kAuthOk);
}

size_t sent(const Harness& h, BackendCommand cmd) {
  size_t n = 0;
  for (const auto& s : h.io.backend)
    if (s.cmd == cmd) ++n;
  return n;
}

}  // namespace

TEST_CASE("breaker: the recipient domain one too many suspends the login at that RCPT",
          "[dialogue][breaker]") {
  Harness h(breaker_options(R"({ "max_rcpt_domains_per_hour": 2 })"));
  login(h);
  start_transaction(h, kLogin, {"a@one.example", "b@two.example", "c@ONE.example"});
  const size_t rcpts = sent(h, BackendCommand::Rcpt);
  CHECK(h.send("RCPT TO:<d@three.example>\r\n") == kSuspended);
  CHECK(sent(h, BackendCommand::Rcpt) == rcpts);  // never forwarded
  REQUIRE(h.services.suspended.size() == 1);
  CHECK(h.services.suspended[0].login == kLogin);
  CHECK(h.services.suspended[0].trip.trigger == "max_rcpt_domains_per_hour");
  CHECK(h.services.suspended[0].trip.value == 3);
  const Decision* d = h.services.find(rules::kSubmissionBreaker);
  REQUIRE(d);
  CHECK(d->verdict == Verdict::Tempfail);
  CHECK(d->enforced);
  CHECK(d->stage == Stage::Rcpt);
  // From now on: RCPT and DATA of this login are refused, and a new MAIL too.
  CHECK(h.send("RCPT TO:<a@one.example>\r\n") == kSuspended);
  CHECK(h.send("DATA\r\n") == kSuspended);
  CHECK(sent(h, BackendCommand::Data) == 0);
  CHECK(h.send("RSET\r\n") == kOk);
  CHECK(h.send("MAIL FROM:<cms@example.com>\r\n") == kSuspended);
  CHECK(sent(h, BackendCommand::Mail) == 1);
  CHECK(h.services.transactions.back().rule == rules::kSubmissionBreaker);
  CHECK_FALSE(h.io.closed);  // a 4xx: the client may QUIT and retry later
}

TEST_CASE("breaker: recipients the backend refused suspend the login after the one too many",
          "[dialogue][breaker]") {
  Harness h(breaker_options(R"({ "max_rejected_rcpts_per_hour": 2 })"));
  login(h);
  CHECK(h.send("MAIL FROM:<cms@example.com>\r\n") == "");
  CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
  for (int i = 0; i < 3; ++i) {
    CHECK(h.send("RCPT TO:<nobody" + std::to_string(i) + "@example.com>\r\n") == "");
    // The refused recipient gets the backend's own reply.
    CHECK(h.backend(BackendCommand::Rcpt, kRcptUnknown) == kRcptUnknown);
  }
  REQUIRE(h.services.suspended.size() == 1);
  CHECK(h.services.suspended[0].trip.trigger == "max_rejected_rcpts_per_hour");
  CHECK(h.services.suspended[0].trip.value == 3);
  // The decision names the reply the client got (the backend's 550) and the transaction.
  REQUIRE(h.services.decisions.size() == 1);
  CHECK(h.services.decisions[0].rule == rules::kSubmissionBreaker);
  CHECK(h.services.decisions[0].reply.code == 550);
  CHECK(h.services.decision_facts[0].from == kLogin);
  CHECK(h.services.decision_facts[0].rcpt == "nobody2@example.com");
  CHECK(h.send("RCPT TO:<user@example.com>\r\n") == kSuspended);
  CHECK(sent(h, BackendCommand::Rcpt) == 3);
}

TEST_CASE(
    "breaker: a suspended login's AUTH gets 454 after the backend's 235; the backend "
    "session is dropped",
    "[dialogue][breaker]") {
  Harness h(breaker_options(R"({ "max_ips_per_hour": 5 })"));
  h.services.breaker.suspend(kLogin, BreakerTrip{"max_ips_per_hour", 6, 5}, h.services.now);
  h.connect();
  h.ehlo();
  CHECK(auth_plain(h, kLogin, "pw", kAuthOk) == kSuspendedAuth);
  CHECK_FALSE(h.d->facts().authenticated);
  CHECK(h.io.backend_aborts >= 1);
  REQUIRE(h.services.auths.size() == 1);
  CHECK(h.services.auths[0].outcome == AuthOutcome::Refused);
  CHECK(h.services.auths[0].reply.starts_with("454 4.7.0"));
  // Unauthenticated now: submission needs AUTH for MAIL.
  CHECK(h.send("MAIL FROM:<cms@example.com>\r\n") == "530 5.7.0 Authentication required\r\n");
  // Another login is not affected.
  CHECK(auth_plain(h, "other@example.com", "pw", kAuthOk) == kAuthOk);
}

TEST_CASE("breaker: the address one too many suspends at AUTH", "[dialogue][breaker]") {
  Options o = breaker_options(R"({ "max_ips_per_hour": 1 })");
  {
    Harness first(o);
    login(first);
    first.services.breaker.login(kLogin, *IpAddress::parse("192.0.2.99"), first.services.now,
                                 *first.policy->submission.breaker);
    // (the harness's breaker now knows another address; a new session from kClient trips it)
    Harness h(o);
    h.services.breaker = first.services.breaker;
    h.connect();
    h.ehlo();
    CHECK(auth_plain(h, kLogin, "pw", kAuthOk) == kSuspendedAuth);
    REQUIRE(h.services.suspended.size() == 1);
    CHECK(h.services.suspended[0].trip.trigger == "max_ips_per_hour");
    CHECK(h.services.suspended[0].trip.value == 2);
    const Decision* d = h.services.find(rules::kSubmissionBreaker);
    REQUIRE(d);
    CHECK(d->stage == Stage::Auth);
  }
}

TEST_CASE("breaker: a suspension while the body streams stops the message before the dot",
          "[dialogue][breaker]") {
  Harness h(breaker_options(R"({ "max_ips_per_hour": 5 })"));
  login(h);
  start_body(h, kLogin, {"user@example.com"});
  // Another session tripped the breaker meanwhile.
  h.services.breaker.suspend(kLogin, BreakerTrip{"max_ips_per_hour", 6, 5}, h.services.now);
  CHECK(h.body_end(BodyFilter::Status::End, 100) == kSuspended);
  CHECK(sent(h, BackendCommand::DataEnd) == 0);  // closed before the final dot
  CHECK(h.io.backend_aborts >= 1);
  CHECK(h.services.transactions.back().outcome == "rejected");
  CHECK(h.services.transactions.back().rule == rules::kSubmissionBreaker);
}

TEST_CASE("breaker: dry-run reports would_suspend and lets everything through",
          "[dialogue][breaker]") {
  Harness h(breaker_options(R"({ "max_rcpt_domains_per_hour": 1 })", "dry-run"));
  login(h);
  start_transaction(h, kLogin, {"a@one.example", "b@two.example", "c@three.example"});
  CHECK(h.services.suspended.empty());
  CHECK(h.services.would_suspend_calls.size() == 2);  // the fake logs each; the gateway hourly
  const Decision* d = h.services.find(rules::kSubmissionBreaker);
  REQUIRE(d);
  CHECK_FALSE(d->enforced);
  CHECK(sent(h, BackendCommand::Rcpt) == 3);
}

TEST_CASE("breaker: unauthenticated sessions are never counted", "[dialogue][breaker]") {
  Options o("mx");
  o.parts.submission = R"({ "require_tls": false, "access": { "default": "allow" },
                            "breaker": { "max_rcpt_domains_per_hour": 1 } })";
  Harness h(o);
  h.connect();
  h.ehlo();
  start_transaction(h, "a@other.example", {"u1@example.com"});
  CHECK(h.services.breaker.tracked() == 0);
  CHECK(h.services.suspended.empty());
}
