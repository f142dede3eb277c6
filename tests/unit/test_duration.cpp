#include <catch2/catch.hpp>

#include "policy/duration.h"

using smtpgate::format_duration;
using smtpgate::parse_duration;
using smtpgate::parse_rate;
using smtpgate::Seconds;

namespace {

long long secs(const char* text, bool allow_zero = false) {
  auto d = parse_duration(text, allow_zero);
  INFO(text << ": " << d.error());
  REQUIRE(d);
  return d->count();
}

std::string error_of(const char* text, bool allow_zero = false) {
  auto d = parse_duration(text, allow_zero);
  REQUIRE_FALSE(d);
  return d.error();
}

}  // namespace

TEST_CASE("parse_duration: single units", "[duration]") {
  CHECK(secs("90s") == 90);
  CHECK(secs("10m") == 600);
  CHECK(secs("1h") == 3600);
  CHECK(secs("30d") == 30 * 86400);
  CHECK(secs("1w") == 7 * 86400);
  CHECK(secs("1s") == 1);
  CHECK(secs("120m") == 7200);  // no carry rule: larger numbers than the next unit are fine
  CHECK(secs("007s") == 7);
}

TEST_CASE("parse_duration: compound forms", "[duration]") {
  CHECK(secs("1h30m") == 5400);
  CHECK(secs("1d12h") == 129600);
  CHECK(secs("1w2d3h4m5s") == 7 * 86400 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5);
  CHECK(secs("2h5s") == 7205);
  CHECK(secs("1m0s") == 60);
}

TEST_CASE("parse_duration: zero", "[duration]") {
  CHECK(error_of("0s") == "\"0s\" must be longer than zero");
  CHECK(error_of("0h0m").find("longer than zero") != std::string::npos);
  CHECK(secs("0s", true) == 0);
  CHECK(secs("0m", true) == 0);
}

TEST_CASE("parse_duration: rejects malformed text", "[duration]") {
  CHECK(error_of("10x") ==
        "\"10x\" is not a duration (use e.g. \"90s\", \"10m\", \"1h\", \"30d\")");
  for (const char* bad : {"",     "10",   "0",    "s",    "h1",  "1.5h",  "-1h",  "+1h",
                          "1 h",  " 1h",  "1h ",  "1H",   "10M", "1hour", "1h1h", "30m1h",
                          "1s1m", "1m1m", "1d1w", "1h30", "1hm", "1ms",   "1y",   "1h\n"}) {
    INFO('"' << bad << '"');
    auto d = parse_duration(bad);
    CHECK_FALSE(d);
    CHECK(d.error().find("is not a duration") != std::string::npos);
  }
}

TEST_CASE("parse_duration: overflow is guarded", "[duration]") {
  CHECK(secs("36500d") == 36500LL * 86400);
  CHECK(error_of("36501d").find("is too long") != std::string::npos);
  CHECK(error_of("99999999999999999999999s").find("is too long") != std::string::npos);
  CHECK(error_of("5215w").find("is too long") != std::string::npos);
  CHECK(error_of("36500d1s").find("is too long") != std::string::npos);
  CHECK(error_of("9223372036854775807s").find("is too long") != std::string::npos);
}

TEST_CASE("format_duration", "[duration]") {
  CHECK(format_duration(Seconds(0)) == "0s");
  CHECK(format_duration(Seconds(45)) == "45s");
  CHECK(format_duration(Seconds(60)) == "1m");
  CHECK(format_duration(Seconds(5400)) == "1h30m");
  CHECK(format_duration(Seconds(3601)) == "1h1s");
  CHECK(format_duration(Seconds(30 * 86400)) == "30d");
  CHECK(format_duration(Seconds(7 * 86400)) == "7d");
  CHECK(format_duration(Seconds(90061)) == "1d1h1m1s");
  CHECK(format_duration(Seconds(-90)) == "-1m30s");
  for (long long s : {1LL, 59LL, 61LL, 3599LL, 86399LL, 86401LL, 1234567LL}) {
    INFO(s);
    auto back = parse_duration(format_duration(Seconds(s)));
    REQUIRE(back);
    CHECK(back->count() == s);
  }
}

TEST_CASE("parse_rate", "[duration][rate]") {
  auto r = parse_rate("60/m");
  REQUIRE(r);
  CHECK(r->count == 60);
  CHECK(r->per == Seconds(60));
  r = parse_rate("5/s");
  REQUIRE(r);
  CHECK(r->count == 5);
  CHECK(r->per == Seconds(1));
  r = parse_rate("1000/h");
  REQUIRE(r);
  CHECK(r->count == 1000);
  CHECK(r->per == Seconds(3600));
  r = parse_rate("4294967295/h");
  REQUIRE(r);
  CHECK(r->count == 4294967295u);

  CHECK(parse_rate("0/m").error() == "\"0/m\": count must be greater than zero");
  CHECK(parse_rate("4294967296/s").error().find("too large") != std::string::npos);
  CHECK(parse_rate("60/x").error() ==
        "\"60/x\" is not a rate (use e.g. \"60/m\", \"10/s\", \"1000/h\")");
  for (const char* bad : {"", "60", "/m", "60/", "60/min", "60/M", "-1/m", "+1/m", "1.5/m", " 60/m",
                          "60/m ", "60 /m", "60//m", "60/d", "a/m"}) {
    INFO('"' << bad << '"');
    CHECK_FALSE(parse_rate(bad));
  }
}
