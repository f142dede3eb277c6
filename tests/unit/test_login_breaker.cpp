// submission.breaker bookkeeping (policy/login_breaker.h), with an injected clock.
#include <catch2/catch.hpp>

#include <string>

#include "policy/login_breaker.h"

using smtpgate::BreakerPolicy;
using smtpgate::IpAddress;
using smtpgate::LoginBreaker;
using smtpgate::Suspension;
using smtpgate::UnixMillis;

namespace {

constexpr UnixMillis kT0 = 1'700'000'000'000;
constexpr UnixMillis kMin = 60'000;

IpAddress ip(const std::string& text) {
  return *IpAddress::parse(text);
}

}  // namespace

TEST_CASE("LoginBreaker: the address one too many within the hour trips it", "[breaker]") {
  LoginBreaker b;
  BreakerPolicy p;
  p.max_ips_per_hour = 5;
  for (int i = 1; i <= 5; ++i) {
    CHECK_FALSE(b.login("cms@example.com", ip("192.0.2." + std::to_string(i)), kT0 + i, p));
    // The same address again is not a new one.
    CHECK_FALSE(b.login("CMS@example.com", ip("192.0.2." + std::to_string(i)), kT0 + i, p));
  }
  auto trip = b.login("cms@example.com", ip("192.0.2.6"), kT0 + 10, p);
  REQUIRE(trip);
  CHECK(trip->trigger == "max_ips_per_hour");
  CHECK(trip->value == 6);
  CHECK(trip->threshold == 5);
  // Another login has its own count.
  CHECK_FALSE(b.login("other@example.com", ip("192.0.2.6"), kT0 + 10, p));
}

TEST_CASE("LoginBreaker: counts slide with the hour", "[breaker]") {
  LoginBreaker b;
  BreakerPolicy p;
  p.max_ips_per_hour = 2;
  p.max_rejected_rcpts_per_hour = 2;
  CHECK_FALSE(b.login("u@example.com", ip("192.0.2.1"), kT0, p));
  CHECK_FALSE(b.login("u@example.com", ip("192.0.2.2"), kT0 + 30 * kMin, p));
  // An hour after the first, it no longer counts: the third address is the second.
  CHECK_FALSE(b.login("u@example.com", ip("192.0.2.3"), kT0 + 60 * kMin, p));
  CHECK(b.login("u@example.com", ip("192.0.2.4"), kT0 + 61 * kMin, p));
  // Seeing an address again refreshes it.
  LoginBreaker c;
  CHECK_FALSE(c.login("u@example.com", ip("192.0.2.1"), kT0, p));
  CHECK_FALSE(c.login("u@example.com", ip("192.0.2.2"), kT0 + 10 * kMin, p));
  CHECK_FALSE(c.login("u@example.com", ip("192.0.2.1"), kT0 + 50 * kMin, p));
  CHECK_FALSE(c.login("u@example.com", ip("192.0.2.3"), kT0 + 75 * kMin, p));  // .2 expired
  CHECK(c.login("u@example.com", ip("192.0.2.4"), kT0 + 76 * kMin, p));
  // Refused recipients.
  CHECK_FALSE(b.refused_recipient("v@example.com", kT0, p));
  CHECK_FALSE(b.refused_recipient("v@example.com", kT0 + 1, p));
  CHECK_FALSE(b.refused_recipient("v@example.com", kT0 + 61 * kMin, p));
  CHECK_FALSE(b.refused_recipient("v@example.com", kT0 + 62 * kMin, p));
  auto trip = b.refused_recipient("v@example.com", kT0 + 63 * kMin, p);
  REQUIRE(trip);
  CHECK(trip->trigger == "max_rejected_rcpts_per_hour");
  CHECK(trip->value == 3);
}

TEST_CASE("LoginBreaker: recipient domains are counted once each, in any case", "[breaker]") {
  LoginBreaker b;
  BreakerPolicy p;
  p.max_rcpt_domains_per_hour = 3;
  for (const char* d : {"a.example", "b.example", "A.EXAMPLE", "c.example", "b.example"})
    CHECK_FALSE(b.recipient("cms@example.com", d, kT0, p));
  auto trip = b.recipient("cms@example.com", "d.example", kT0 + 1, p);
  REQUIRE(trip);
  CHECK(trip->trigger == "max_rcpt_domains_per_hour");
  CHECK(trip->value == 4);
  CHECK(trip->threshold == 3);
  // Thresholds left out are not counted at all.
  BreakerPolicy none;
  CHECK_FALSE(b.recipient("x@example.com", "e.example", kT0, none));
  CHECK_FALSE(b.login("x@example.com", ip("192.0.2.1"), kT0, none));
  CHECK_FALSE(b.refused_recipient("x@example.com", kT0, none));
  CHECK(b.tracked() == 1);
}

TEST_CASE("LoginBreaker: a suspension lasts until released, and release starts afresh",
          "[breaker]") {
  LoginBreaker b;
  BreakerPolicy p;
  p.max_ips_per_hour = 1;
  CHECK_FALSE(b.any_suspended());
  CHECK_FALSE(b.login("cms@example.com", ip("192.0.2.1"), kT0, p));
  auto trip = b.login("cms@example.com", ip("192.0.2.2"), kT0, p);
  REQUIRE(trip);
  CHECK(b.suspend("CMS@example.com", *trip, kT0));
  CHECK_FALSE(b.suspend("cms@example.com", *trip, kT0 + 1));  // already
  const Suspension* s = b.suspended("cms@EXAMPLE.com");
  REQUIRE(s);
  CHECK(s->login == "cms@example.com");
  CHECK(s->since == kT0);
  CHECK(s->trigger == "max_ips_per_hour");
  CHECK(s->value == 2);
  CHECK(s->threshold == 1);
  REQUIRE(b.suspensions().size() == 1);
  CHECK(b.release("cms@example.com"));
  CHECK_FALSE(b.release("cms@example.com"));
  CHECK(b.suspended("cms@example.com") == nullptr);
  // Counting starts over: one address is within the threshold again.
  CHECK_FALSE(b.login("cms@example.com", ip("192.0.2.2"), kT0 + 2, p));
  // From the state file.
  b.restore({"Old@Example.com", kT0 - 5, "max_rcpt_domains_per_hour", 301, 300});
  REQUIRE(b.suspended("old@example.com"));
  CHECK(b.suspended("old@example.com")->value == 301);
}

TEST_CASE("LoginBreaker: dry-run says would_suspend once an hour per login", "[breaker]") {
  LoginBreaker b;
  CHECK(b.would_suspend_due("u@example.com", kT0));
  CHECK_FALSE(b.would_suspend_due("u@example.com", kT0 + 59 * kMin));
  CHECK(b.would_suspend_due("other@example.com", kT0 + 59 * kMin));
  CHECK(b.would_suspend_due("u@example.com", kT0 + 60 * kMin));
}

TEST_CASE("LoginBreaker: memory is bounded; suspensions are never forgotten", "[breaker]") {
  LoginBreaker b;
  BreakerPolicy p;
  p.max_ips_per_hour = 1;
  p.max_rcpt_domains_per_hour = 3;
  CHECK_FALSE(b.login("first@example.com", ip("192.0.2.1"), kT0, p));
  auto trip = b.login("first@example.com", ip("192.0.2.2"), kT0, p);
  REQUIRE(trip);
  b.suspend("first@example.com", *trip, kT0);
  for (size_t i = 0; i < LoginBreaker::kMaxLogins + 100; ++i)
    b.login("user" + std::to_string(i) + "@example.com", ip("192.0.2.1"),
            kT0 + static_cast<UnixMillis>(i) + 1, p);
  CHECK(b.tracked() <= LoginBreaker::kMaxLogins);
  CHECK(b.suspended("first@example.com"));
  // Per login, no more entries than the threshold needs.
  for (int i = 0; i < 1000; ++i)
    b.recipient("bulk@example.com", "d" + std::to_string(i) + ".example", kT0 + kMin, p);
  auto again = b.recipient("bulk@example.com", "new.example", kT0 + kMin, p);
  REQUIRE(again);
  CHECK(again->value == 4);  // capped at threshold + 1
}
