#include <catch2/catch.hpp>

#include "policy/rate_limiter.h"

using smtpgate::ConnectionRateLimiter;
using smtpgate::IpAddress;
using smtpgate::Rate;
using smtpgate::Seconds;
using smtpgate::SendingLimiter;
using smtpgate::SteadyMillis;
using smtpgate::TokenBucket;

namespace {

constexpr SteadyMillis kSecond = 1000;
constexpr SteadyMillis kMinute = 60 * kSecond;
constexpr SteadyMillis kHour = 60 * kMinute;

IpAddress ip(const char* text) {
  auto a = IpAddress::parse(text);
  REQUIRE(a);
  return *a;
}

IpAddress nth_v4(uint32_t n) {
  return IpAddress::v4(0x0A000000u + n);
}  // 10.0.0.0 + n

// Takes tokens until refused; returns how many were granted.
int drain(TokenBucket& b, SteadyMillis now) {
  int n = 0;
  while (b.try_take(now)) ++n;
  return n;
}

int drain(ConnectionRateLimiter& l, const IpAddress& a, SteadyMillis now) {
  int n = 0;
  while (l.allow(a, now) && n < 1000000) ++n;
  return n;
}

}  // namespace

TEST_CASE("TokenBucket: starts full and allows a burst of count", "[rate_limiter]") {
  TokenBucket b(Rate{60, Seconds(60)}, 0);
  CHECK(b.full(0));
  CHECK(b.available(0) == 60);
  CHECK(drain(b, 0) == 60);
  CHECK(b.available(0) == 0);
  CHECK_FALSE(b.try_take(0));
  CHECK_FALSE(b.full(0));
}

TEST_CASE("TokenBucket: refills one token per period/count, exactly", "[rate_limiter]") {
  TokenBucket b(Rate{60, Seconds(60)}, 0);  // 60/m: one token a second
  REQUIRE(drain(b, 0) == 60);
  CHECK_FALSE(b.try_take(999));
  CHECK(b.try_take(1000));
  CHECK_FALSE(b.try_take(1000));
  CHECK_FALSE(b.try_take(1999));
  CHECK(b.try_take(2000));
  // Ten seconds later: ten tokens, not more.
  CHECK(drain(b, 12000) == 10);
  // A whole period refills the bucket and it does not overfill.
  CHECK(b.full(12000 + kMinute));
  CHECK(drain(b, 10 * kHour) == 60);
}

TEST_CASE("TokenBucket: rates that do not divide the period do not drift", "[rate_limiter]") {
  TokenBucket b(Rate{7, Seconds(60)}, 0);  // one token every 8571.43 ms
  REQUIRE(drain(b, 0) == 7);
  CHECK_FALSE(b.try_take(8571));
  CHECK(b.try_take(8572));
  // Over a whole minute exactly 7 tokens come back, not 6 and not 8.
  TokenBucket c(Rate{7, Seconds(60)}, 0);
  REQUIRE(drain(c, 0) == 7);
  int granted = 0;
  for (SteadyMillis t = 1; t <= kMinute; ++t) granted += c.try_take(t) ? 1 : 0;
  CHECK(granted == 7);
}

TEST_CASE("TokenBucket: per second and per hour rates", "[rate_limiter]") {
  TokenBucket s(Rate{5, Seconds(1)}, 0);
  REQUIRE(drain(s, 0) == 5);
  CHECK_FALSE(s.try_take(199));
  CHECK(s.try_take(200));
  TokenBucket h(Rate{2, Seconds(3600)}, 0);
  REQUIRE(drain(h, 0) == 2);
  CHECK_FALSE(h.try_take(30 * kMinute - 1));
  CHECK(h.try_take(30 * kMinute));
}

TEST_CASE("TokenBucket: a clock stepping back neither refills nor drains", "[rate_limiter]") {
  TokenBucket b(Rate{2, Seconds(1)}, 10000);
  REQUIRE(b.try_take(10000));
  CHECK(b.available(5000) == 1);
  CHECK(b.try_take(5000));
  CHECK_FALSE(b.try_take(5000));
  CHECK_FALSE(b.try_take(10499));  // time kept at 10000: half a second refills one token
  CHECK(b.try_take(10500));
}

TEST_CASE("ConnectionRateLimiter: disabled when the rate is off", "[rate_limiter]") {
  ConnectionRateLimiter l;
  CHECK_FALSE(l.enabled());
  for (int i = 0; i < 1000; ++i) REQUIRE(l.allow(ip("192.0.2.1"), 0));
  CHECK(l.tracked() == 0);
}

TEST_CASE("ConnectionRateLimiter: one bucket per IP", "[rate_limiter]") {
  ConnectionRateLimiter l(Rate{3, Seconds(60)});
  auto a = ip("192.0.2.1");
  auto b = ip("2001:db8::1");
  CHECK(drain(l, a, 0) == 3);
  CHECK(drain(l, b, 0) == 3);
  CHECK(l.tracked() == 2);
  CHECK_FALSE(l.allow(a, 19999));
  CHECK(l.allow(a, 20000));
  CHECK_FALSE(l.allow(a, 20000));
  // IPv4-mapped IPv6 is the same client as plain IPv4.
  CHECK_FALSE(l.allow(ip("::ffff:192.0.2.1"), 20000));
}

TEST_CASE("ConnectionRateLimiter: refilled buckets are forgotten", "[rate_limiter]") {
  ConnectionRateLimiter l(Rate{2, Seconds(10)});
  for (uint32_t i = 0; i < 100; ++i) REQUIRE(l.allow(nth_v4(i), 0));
  CHECK(l.tracked() == 100);
  // One token taken: full again after 5 s. Any later call sweeps them out.
  REQUIRE(l.allow(ip("192.0.2.1"), 4999));
  CHECK(l.tracked() == 101);
  REQUIRE(l.allow(ip("192.0.2.2"), 5000));
  CHECK(l.tracked() == 2);
}

TEST_CASE("ConnectionRateLimiter: the table never exceeds its cap; LRU goes first",
          "[rate_limiter]") {
  ConnectionRateLimiter l(Rate{1, Seconds(3600)}, 50);
  for (uint32_t i = 0; i < 50; ++i) REQUIRE(l.allow(nth_v4(i), i));
  CHECK(l.tracked() == 50);
  // Touch IP 0 so that IP 1 is the least recently used.
  CHECK_FALSE(l.allow(nth_v4(0), 100));
  for (uint32_t i = 50; i < 1000; ++i) {
    REQUIRE(l.allow(nth_v4(i), 100 + i));
    REQUIRE(l.tracked() <= 50);
  }
  CHECK(l.tracked() == 50);
  CHECK(l.max_tracked() == 50);
  // The most recent IPs are still limited; long-evicted ones got a fresh bucket.
  CHECK_FALSE(l.allow(nth_v4(999), 2000));
  CHECK(l.allow(nth_v4(1), 2000));
}

TEST_CASE("ConnectionRateLimiter: a changed rate starts every client afresh", "[rate_limiter]") {
  ConnectionRateLimiter l(Rate{1, Seconds(60)});
  auto a = ip("192.0.2.1");
  REQUIRE(l.allow(a, 0));
  REQUIRE_FALSE(l.allow(a, 0));
  l.set_rate(Rate{1, Seconds(60)});  // unchanged: state kept
  CHECK_FALSE(l.allow(a, 0));
  l.set_rate(Rate{2, Seconds(60)});
  CHECK(l.tracked() == 0);
  CHECK(drain(l, a, 0) == 2);
  l.set_rate(Rate{});
  CHECK_FALSE(l.enabled());
  CHECK(l.allow(a, 0));
}

TEST_CASE("SendingLimiter: counts messages and recipients per login", "[rate_limiter]") {
  SendingLimiter s;
  CHECK(s.messages_last_hour("cms@example.com", 0) == 0);
  s.record_message("cms@example.com", 3, 0);
  s.record_message("CMS@Example.COM", 2, 10 * kSecond);
  s.record_message("other@example.com", 7, 20 * kSecond);
  CHECK(s.messages_last_hour("cms@example.com", 30 * kSecond) == 2);
  CHECK(s.recipients_last_hour("Cms@example.com", 30 * kSecond) == 5);
  CHECK(s.messages_last_hour("other@example.com", 30 * kSecond) == 1);
  CHECK(s.recipients_last_hour("other@example.com", 30 * kSecond) == 7);
  CHECK(s.tracked() == 2);
}

TEST_CASE("SendingLimiter: a message slides out after 60 whole minutes", "[rate_limiter]") {
  SendingLimiter s;
  // Recorded at 00:30 (minute 0): counted until minute 60 begins.
  s.record_message("u", 4, 30 * kSecond);
  CHECK(s.messages_last_hour("u", 59 * kMinute + 59 * kSecond + 999) == 1);
  CHECK(s.recipients_last_hour("u", 59 * kMinute + 59 * kSecond + 999) == 4);
  CHECK(s.messages_last_hour("u", 60 * kMinute) == 0);
  CHECK(s.recipients_last_hour("u", 60 * kMinute) == 0);
}

TEST_CASE("SendingLimiter: the window slides minute by minute", "[rate_limiter]") {
  SendingLimiter s;
  for (int m = 0; m < 90; ++m) s.record_message("u", 2, m * kMinute);
  // At minute 89 the window holds minutes 30..89.
  CHECK(s.messages_last_hour("u", 89 * kMinute) == 60);
  CHECK(s.recipients_last_hour("u", 89 * kMinute) == 120);
  CHECK(s.messages_last_hour("u", 100 * kMinute) == 49);  // minutes 41..89
  CHECK(s.messages_last_hour("u", 149 * kMinute) == 0);
  CHECK(s.messages_last_hour("u", 148 * kMinute) == 1);
  // Recording after a long gap clears the stale buckets.
  s.record_message("u", 1, 200 * kMinute);
  CHECK(s.messages_last_hour("u", 200 * kMinute) == 1);
  s.record_message("u", 1, 230 * kMinute);
  CHECK(s.messages_last_hour("u", 230 * kMinute) == 2);
  CHECK(s.messages_last_hour("u", 260 * kMinute) == 1);
}

TEST_CASE("SendingLimiter: a gap shorter than the window keeps older minutes", "[rate_limiter]") {
  SendingLimiter s;
  s.record_message("u", 1, 0);
  s.record_message("u", 1, 10 * kMinute);
  s.record_message("u", 1, 59 * kMinute);
  CHECK(s.messages_last_hour("u", 59 * kMinute) == 3);
  s.record_message("u", 1, 65 * kMinute);  // minutes 0 falls out, 10 and 59 stay
  CHECK(s.messages_last_hour("u", 65 * kMinute) == 3);
  CHECK(s.messages_last_hour("u", 70 * kMinute) == 2);
}

TEST_CASE("SendingLimiter: idle logins are dropped and the table is capped", "[rate_limiter]") {
  SendingLimiter s(10);
  for (int i = 0; i < 10; ++i) s.record_message("user" + std::to_string(i), 1, 0);
  CHECK(s.tracked() == 10);
  s.record_message("user0", 1, kMinute);  // user1 is now the least recently recorded
  s.record_message("new", 1, kMinute);
  CHECK(s.tracked() == 10);
  CHECK(s.messages_last_hour("user1", kMinute) == 0);
  CHECK(s.messages_last_hour("user0", kMinute) == 2);
  CHECK(s.messages_last_hour("user2", kMinute) == 1);
  for (int i = 0; i < 1000; ++i) {
    s.record_message("flood" + std::to_string(i), 1, 2 * kMinute);
    REQUIRE(s.tracked() <= 10);
  }
  // An hour after their last message every login is idle and swept out.
  s.record_message("late", 1, 2 * kMinute + kHour);
  CHECK(s.tracked() == 1);
}

TEST_CASE("SendingLimiter: counters saturate instead of wrapping", "[rate_limiter]") {
  SendingLimiter s;
  s.record_message("u", 0xFFFFFFFFu, 0);
  s.record_message("u", 0xFFFFFFFFu, 0);
  CHECK(s.recipients_last_hour("u", 0) == 0xFFFFFFFFu);
  CHECK(s.messages_last_hour("u", 0) == 2);
}
