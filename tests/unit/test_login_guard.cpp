// brute_force.per_login bookkeeping, with an injected clock.
#include <catch2/catch.hpp>

#include "policy/login_guard.h"

using smtpgate::IpAddress;
using smtpgate::LoginGuard;
using smtpgate::PerLoginPolicy;
using smtpgate::Seconds;
using smtpgate::UnixMillis;

namespace {

constexpr UnixMillis kT0 = 1'700'000'000'000;
constexpr UnixMillis kMin = 60'000;

PerLoginPolicy policy() {
  PerLoginPolicy p;
  p.max_failures = 3;
  p.window = Seconds(3600);
  p.lock = Seconds(3600);
  p.known_good = Seconds(30 * 86400);
  return p;
}

IpAddress ip(const char* text) {
  return *IpAddress::parse(text);
}

}  // namespace

TEST_CASE("LoginGuard: failures from every address lock the login for strangers", "[login_guard]") {
  LoginGuard g;
  const auto p = policy();
  g.record_success("user@example.com", ip("192.0.2.1"), kT0);  // the owner's phone
  CHECK(g.record_failure("user@example.com", kT0 + 1 * kMin, p).failures == 1);
  CHECK_FALSE(g.record_failure("USER@example.com", kT0 + 2 * kMin, p).locked_now);
  const auto third = g.record_failure("user@example.com", kT0 + 3 * kMin, p);
  CHECK(third.locked_now);
  CHECK(third.failures == 3);
  CHECK(third.until == kT0 + 3 * kMin + 3600'000);
  CHECK(g.locked_for("user@example.com", ip("198.51.100.7"), kT0 + 4 * kMin, p));
  CHECK_FALSE(g.locked_for("user@example.com", ip("192.0.2.1"), kT0 + 4 * kMin, p));
  CHECK_FALSE(g.locked_for("other@example.com", ip("198.51.100.7"), kT0 + 4 * kMin, p));
  // The lock ends.
  CHECK_FALSE(g.locked_for("user@example.com", ip("198.51.100.7"), third.until, p));
  CHECK(g.locked_until("user@example.com", third.until) == 0);
}

TEST_CASE("LoginGuard: failures outside the window do not count; known-good expires",
          "[login_guard]") {
  LoginGuard g;
  const auto p = policy();
  g.record_failure("u", kT0, p);
  g.record_failure("u", kT0 + 10 * kMin, p);
  CHECK(g.record_failure("u", kT0 + 61 * kMin, p).failures == 2);  // the first left the window
  g.record_success("u", ip("192.0.2.1"), kT0);
  const auto lock = g.record_failure("u", kT0 + 62 * kMin, p);
  REQUIRE(lock.locked_now);
  // A success 30 days ago or more no longer vouches for the address.
  PerLoginPolicy shortgood = p;
  shortgood.known_good = Seconds(30 * 60);
  CHECK(g.locked_for("u", ip("192.0.2.1"), kT0 + 63 * kMin, shortgood));
  CHECK_FALSE(g.locked_for("u", ip("192.0.2.1"), kT0 + 63 * kMin, p));
  CHECK(g.release("u"));
  CHECK_FALSE(g.locked_for("u", ip("198.51.100.7"), kT0 + 64 * kMin, p));
  CHECK_FALSE(g.release("u"));
}

TEST_CASE("LoginGuard: memory is bounded", "[login_guard]") {
  LoginGuard g;
  const auto p = policy();
  for (size_t i = 0; i < LoginGuard::kMaxLogins + 50; ++i)
    g.record_failure("login" + std::to_string(i), kT0 + static_cast<UnixMillis>(i), p);
  CHECK(g.logins() <= LoginGuard::kMaxLogins);
  for (int i = 0; i < 40; ++i)
    g.record_success("one", ip(("10.0.0." + std::to_string(i)).c_str()), kT0 + i);
  // Only the newest kMaxKnownGood addresses vouch: the oldest was dropped.
  g.record_failure("one", kT0 + 100, p);
  g.record_failure("one", kT0 + 101, p);
  REQUIRE(g.record_failure("one", kT0 + 102, p).locked_now);
  CHECK(g.locked_for("one", ip("10.0.0.0"), kT0 + 103, p));
  CHECK_FALSE(g.locked_for("one", ip("10.0.0.39"), kT0 + 103, p));
}
