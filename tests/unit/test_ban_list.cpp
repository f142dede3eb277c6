#include <catch2/catch.hpp>

#include "policy/ban_list.h"

using smtpgate::BanEntry;
using smtpgate::BanList;
using smtpgate::BruteForcePolicy;
using smtpgate::IpAddress;
using smtpgate::UnixMillis;

namespace {

constexpr UnixMillis kSec = 1000;  // BanList counts milliseconds
constexpr UnixMillis kHour = 3600 * kSec;
constexpr UnixMillis kDay = 24 * kHour;
constexpr UnixMillis kT0 = 1700000000 * kSec;  // an arbitrary "now"

IpAddress ip(const char* text) {
  auto a = IpAddress::parse(text);
  REQUIRE(a);
  return *a;
}

// The documented defaults: 5 failures in 10m, ban 1h, multiplier 4, max 30d.
BruteForcePolicy defaults() {
  return BruteForcePolicy{};
}

nlohmann::json parse(const char* text) {
  return nlohmann::json::parse(text);
}

}  // namespace

TEST_CASE("BanList: failures within the window are counted", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  auto a = ip("192.0.2.1");
  CHECK(b.record_failure(a, kT0, bf) == 1);
  CHECK(b.record_failure(a, kT0 + 100 * kSec, bf) == 2);
  CHECK(b.record_failure(a, kT0 + 200 * kSec, bf) == 3);
  // Other addresses have their own counts.
  CHECK(b.record_failure(ip("192.0.2.2"), kT0 + 200 * kSec, bf) == 1);
  CHECK(b.record_failure(ip("2001:db8::1"), kT0 + 200 * kSec, bf) == 1);
  CHECK(b.tracked_failures() == 3);
}

TEST_CASE("BanList: failures older than the window do not count", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  auto a = ip("192.0.2.1");
  REQUIRE(b.record_failure(a, kT0, bf) == 1);
  REQUIRE(b.record_failure(a, kT0 + 100 * kSec, bf) == 2);
  REQUIRE(b.record_failure(a, kT0 + 200 * kSec, bf) == 3);
  // The first failure is exactly one window old at kT0+600: it no longer counts.
  CHECK(b.record_failure(a, kT0 + 599 * kSec, bf) == 4);
  CHECK(b.record_failure(a, kT0 + 600 * kSec, bf) == 4);
  // All of them out of the window.
  CHECK(b.record_failure(a, kT0 + 1200 * kSec, bf) == 1);
}

TEST_CASE("BanList: the count reaches max_failures and stays there", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  bf.max_failures = 3;
  auto a = ip("192.0.2.1");
  CHECK(b.record_failure(a, kT0, bf) == 1);
  CHECK(b.record_failure(a, kT0 + 1 * kSec, bf) == 2);
  CHECK(b.record_failure(a, kT0 + 2 * kSec, bf) == 3);  // the caller bans here
  // Only the last max_failures failures are kept, so the count is capped.
  CHECK(b.record_failure(a, kT0 + 3 * kSec, bf) == 3);
  // The window slides over the kept ones: kT0+1 and kT0+2 have left at kT0+602.
  CHECK(b.record_failure(a, kT0 + 602 * kSec, bf) == 2);
}

TEST_CASE("BanList: a ban resets the failure count", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  auto a = ip("192.0.2.1");
  for (int i = 0; i < 5; ++i) b.record_failure(a, kT0 + i, bf);
  BanEntry e = b.ban(a, kT0 + 5 * kSec, bf, "5 AUTH failures");
  CHECK(e.ip == a);
  CHECK(e.since == kT0 + 5 * kSec);
  CHECK(e.until == kT0 + 5 * kSec + kHour);
  CHECK(e.offense == 1);
  CHECK(e.reason == "5 AUTH failures");
  CHECK(b.tracked_failures() == 0);
  CHECK(b.record_failure(a, kT0 + 6 * kSec, bf) == 1);
}

TEST_CASE("BanList: bans and expiry", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  auto a = ip("192.0.2.1");
  CHECK_FALSE(b.banned(a, kT0));
  b.ban(a, kT0, bf, "r");
  CHECK(b.banned(a, kT0));
  CHECK(b.banned(a, kT0 + kHour - 1));
  CHECK_FALSE(b.banned(a, kT0 + kHour));  // `until` is the first free second
  REQUIRE(b.find(a, kT0 + 10 * kSec));
  CHECK(b.find(a, kT0 + 10 * kSec)->until == kT0 + kHour);
  CHECK_FALSE(b.find(a, kT0 + kHour));
  CHECK(b.active(kT0 + 10 * kSec).size() == 1);
  CHECK(b.active(kT0 + kHour).empty());
  CHECK_FALSE(b.banned(ip("192.0.2.2"), kT0));

  CHECK_FALSE(b.expire(kT0 + kHour - 1, bf));
  CHECK(b.ban_count() == 1);
  CHECK(b.expire(kT0 + kHour, bf));
  CHECK(b.ban_count() == 0);
  CHECK_FALSE(b.expire(kT0 + kHour, bf));
  // The offense is remembered after the ban itself is gone.
  CHECK(b.history_count() == 1);
}

TEST_CASE("BanList: an IPv4-mapped client is the same IPv4 address", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  b.ban(ip("::ffff:192.0.2.1"), kT0, bf, "r");
  CHECK(b.banned(ip("192.0.2.1"), kT0));
}

TEST_CASE("BanList: repeat offenders escalate 1h, 4h, 16h ... capped at max_ban", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  auto a = ip("192.0.2.1");
  const UnixMillis expected[] = {1 * kHour,   4 * kHour, 16 * kHour, 64 * kHour,
                                 256 * kHour, 30 * kDay, 30 * kDay};  // 1024h > 30d
  UnixMillis now = kT0;
  uint32_t offense = 0;
  for (UnixMillis duration : expected) {
    BanEntry e = b.ban(a, now, bf, "r");
    ++offense;
    INFO("offense " << offense);
    CHECK(e.offense == offense);
    CHECK(e.until - e.since == duration);
    // Offend again one hour after the ban ended, expiring it in between.
    now = e.until + kHour;
    b.expire(now, bf);
    CHECK_FALSE(b.banned(a, now));
  }
}

TEST_CASE("BanList: the multiplier and the cap come from the policy", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  bf.ban = smtpgate::Seconds(600);
  bf.ban_multiplier = 2;
  bf.max_ban = smtpgate::Seconds(2000);
  auto a = ip("2001:db8::7");
  CHECK(b.ban(a, kT0, bf, "r").until == kT0 + 600 * kSec);
  CHECK(b.ban(a, kT0 + 600 * kSec, bf, "r").until == kT0 + 1800 * kSec);
  CHECK(b.ban(a, kT0 + 1800 * kSec, bf, "r").until == kT0 + 3800 * kSec);
}

TEST_CASE("BanList: offense history is forgotten max_ban after the last ban ended", "[ban_list]") {
  auto bf = defaults();
  const UnixMillis max_ban = bf.max_ban.count() * kSec;
  auto a = ip("192.0.2.1");
  SECTION("still remembered at exactly max_ban") {
    BanList b;
    BanEntry first = b.ban(a, kT0, bf, "r");
    BanEntry second = b.ban(a, first.until + max_ban, bf, "r");
    CHECK(second.offense == 2);
    CHECK(second.until - second.since == 4 * kHour);
  }
  SECTION("forgotten one second later") {
    BanList b;
    BanEntry first = b.ban(a, kT0, bf, "r");
    BanEntry second = b.ban(a, first.until + max_ban + 1 * kSec, bf, "r");
    CHECK(second.offense == 1);
    CHECK(second.until - second.since == kHour);
  }
  SECTION("expire() drops the history at the same moment") {
    BanList b;
    BanEntry first = b.ban(a, kT0, bf, "r");
    b.expire(first.until + max_ban, bf);
    CHECK(b.history_count() == 1);
    b.expire(first.until + max_ban + 1 * kSec, bf);
    CHECK(b.history_count() == 0);
    CHECK(b.ban(a, first.until + max_ban + 2 * kSec, bf, "r").offense == 1);
  }
}

TEST_CASE("BanList: unban", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  auto a = ip("192.0.2.1");
  CHECK_FALSE(b.unban(a));
  b.ban(a, kT0, bf, "r");
  b.record_failure(a, kT0 + 1 * kSec, bf);  // a session still in flight
  CHECK(b.unban(a));
  CHECK_FALSE(b.banned(a, kT0 + 2 * kSec));
  CHECK(b.active(kT0 + 2 * kSec).empty());
  CHECK(b.tracked_failures() == 0);
  CHECK_FALSE(b.unban(a));
  // Unbanning keeps the offense history: the next ban escalates.
  CHECK(b.ban(a, kT0 + 10 * kSec, bf, "r").offense == 2);
}

TEST_CASE("BanList: idle failure records are dropped once out of the window", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  b.record_failure(ip("192.0.2.1"), kT0, bf);
  b.record_failure(ip("192.0.2.2"), kT0, bf);
  b.record_failure(ip("192.0.2.3"), kT0 + 300 * kSec, bf);
  CHECK(b.tracked_failures() == 3);
  b.record_failure(ip("192.0.2.4"), kT0 + 600 * kSec, bf);
  CHECK(b.tracked_failures() == 2);
  // Failing again keeps an address: only its last failure decides.
  b.record_failure(ip("192.0.2.3"), kT0 + 800 * kSec, bf);
  b.record_failure(ip("192.0.2.5"), kT0 + 900 * kSec, bf);
  CHECK(b.tracked_failures() == 3);
  CHECK(b.record_failure(ip("192.0.2.3"), kT0 + 1000 * kSec, bf) == 2);
}

TEST_CASE("BanList: failure tracking is bounded and keeps live counts after a flood",
          "[ban_list][slow]") {
  BanList b;
  auto bf = defaults();
  // A flood of distinct addresses (an IPv6 /64 makes this cheap) fills the table.
  for (uint32_t i = 0; i < BanList::kMaxTrackedIps + 10; ++i) {
    b.record_failure(IpAddress::v4(0x0A000000u + i), kT0, bf);
  }
  CHECK(b.tracked_failures() <= BanList::kMaxTrackedIps);
  // Once the flood has left the window a guesser interleaved with other clients is
  // still counted (the flood's records must not crowd out live ones).
  auto guesser = ip("198.51.100.7");
  CHECK(b.record_failure(guesser, kT0 + 601 * kSec, bf) == 1);
  CHECK(b.tracked_failures() == 1);
  CHECK(b.record_failure(ip("198.51.100.8"), kT0 + 602 * kSec, bf) == 1);
  CHECK(b.record_failure(ip("198.51.100.9"), kT0 + 603 * kSec, bf) == 1);
  CHECK(b.record_failure(guesser, kT0 + 604 * kSec, bf) == 2);
}

TEST_CASE("BanList: a ban lasts its duration to the millisecond", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  bf.ban = smtpgate::Seconds(1);
  auto a = ip("192.0.2.1");
  const UnixMillis at = kT0 + 961;  // hh:mm:ss.961: the ban must not end at the next second
  BanEntry e = b.ban(a, at, bf, "r");
  CHECK(e.until == at + kSec);
  CHECK(b.banned(a, at + kSec - 1));
  CHECK_FALSE(b.banned(a, at + kSec));
}

TEST_CASE("BanList: restore puts back bans and history without escalating", "[ban_list]") {
  BanList b;
  auto bf = defaults();
  auto a = ip("192.0.2.1");
  BanEntry e;
  e.ip = a;
  e.since = kT0;
  e.until = kT0 + 4 * kHour;
  e.offense = 2;
  e.reason = "again";
  b.restore(e);
  b.restore_history(ip("192.0.2.9"), 3, kT0 - kHour);
  REQUIRE(b.find(a, kT0 + 1));
  CHECK(b.find(a, kT0 + 1)->reason == "again");
  CHECK(b.history_count() == 2);
  // The next offense after this ban is the third.
  CHECK(b.ban(a, kT0 + 5 * kHour, bf, "r").offense == 3);
  CHECK(b.ban(ip("192.0.2.9"), kT0, bf, "r").offense == 4);
  size_t bans = 0, histories = 0;
  b.visit([&](const BanEntry&) { ++bans; },
          [&](const IpAddress&, uint32_t, UnixMillis) { ++histories; });
  CHECK(bans == 2);
  CHECK(histories == 0);
}

TEST_CASE("BanList: an old document without history loads", "[ban_list]") {
  BanList b;
  REQUIRE(b.from_json(parse(R"({"version": 1, "bans": [
      {"ip": "192.0.2.1", "since": 100, "until": 200, "offense": 1}]})")) == "");
  // Version 1 counted seconds.
  REQUIRE(b.find(ip("192.0.2.1"), 150 * kSec));
  CHECK(b.find(ip("192.0.2.1"), 150 * kSec)->reason == "");
  CHECK_FALSE(b.find(ip("192.0.2.1"), 200 * kSec));
}

TEST_CASE("BanList: corrupt documents are rejected and nothing is loaded", "[ban_list]") {
  const char* bad[] = {
      R"([])",
      R"("bans")",
      R"({})",
      R"({"version": 2, "bans": []})",
      R"({"version": "1", "bans": []})",
      R"({"version": 1.5, "bans": []})",
      R"({"version": 1})",
      R"({"version": 1, "bans": [{"ip": "192.0.2.300", "since": 1, "until": 2, "offense": 1}]})",
      R"({"version": 1, "bans": [{"ip": 17, "since": 1, "until": 2, "offense": 1}]})",
      R"({"version": 1, "bans": [{"since": 1, "until": 2, "offense": 1}]})",
      R"({"version": 1, "bans": [{"ip": "192.0.2.1", "since": "x", "until": 2, "offense": 1}]})",
      R"({"version": 1, "bans": [{"ip": "192.0.2.1", "since": 1, "until": 2}]})",
      R"({"version": 1, "bans": [{"ip": "192.0.2.1", "since": 1, "until": 2, "offense": 1,
          "reason": 5}]})",
      R"({"version": 1, "bans": [], "history": [{"ip": "::1", "offenses": 1}]})",
      R"({"version": 1, "bans": [], "history": [{"ip": "nope", "offenses": 1, "last_until": 2}]})",
      R"({"version": 1, "bans": [7]})",
  };
  for (const char* text : bad) {
    INFO(text);
    BanList b;
    auto bf = defaults();
    auto kept = ip("198.51.100.1");
    b.ban(kept, kT0, bf, "kept");
    std::string err;
    REQUIRE_NOTHROW(err = b.from_json(parse(text)));
    CHECK_FALSE(err.empty());
    // The earlier state is untouched.
    CHECK(b.banned(kept, kT0 + 1 * kSec));
    CHECK(b.active(kT0 + 1 * kSec).size() == 1);
  }
}

TEST_CASE("BanList: an operator's ban lasts as given and counts as an offense", "[ban_list]") {
  BanList list;
  const auto bf = defaults();
  const IpAddress ip = *IpAddress::parse("192.0.2.9");
  const BanEntry e = list.ban_for(ip, 1000, 7'200'000, "admin: firewall log");
  CHECK(e.since == 1000);
  CHECK(e.until == 7'201'000);
  CHECK(e.offense == 1);
  CHECK(e.reason == "admin: firewall log");
  CHECK(list.banned(ip, 7'200'999));
  CHECK_FALSE(list.banned(ip, 7'201'000));
  // An automatic ban later escalates from it.
  const BanEntry next = list.ban(ip, 8'000'000, bf, "brute force");
  CHECK(next.offense == 2);
  CHECK(next.until - next.since == bf.ban.count() * 1000 * 4);
}

TEST_CASE("BanList: a failure key counts once within the window", "[ban_list]") {
  BanList list;
  const smtpgate::Seconds window{600};
  CHECK_FALSE(list.repeated_failure(42, kT0, window));       // counted
  CHECK(list.repeated_failure(42, kT0 + 1 * kSec, window));  // the same password again
  CHECK(list.repeated_failure(42, kT0 + 599 * kSec, window));
  CHECK_FALSE(list.repeated_failure(43, kT0 + 2 * kSec, window));    // another password
  CHECK_FALSE(list.repeated_failure(42, kT0 + 600 * kSec, window));  // the window has passed
  CHECK(list.repeated_failure(42, kT0 + 601 * kSec, window));
}

TEST_CASE("BanList: failure keys are bounded, the oldest dropped first", "[ban_list]") {
  BanList list;
  const smtpgate::Seconds window{86400};
  for (uint64_t k = 1; k <= BanList::kMaxTrackedKeys + 10; ++k)
    CHECK_FALSE(list.repeated_failure(k, kT0 + static_cast<UnixMillis>(k), window));
  CHECK_FALSE(list.repeated_failure(1, kT0 + 2 * kDay / 4, window));  // forgotten: counts
  CHECK(list.repeated_failure(BanList::kMaxTrackedKeys + 10, kT0 + 2 * kDay / 4, window));
}
