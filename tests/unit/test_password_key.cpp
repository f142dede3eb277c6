// The keyed hash of login attempts (brute_force.distinct_passwords): stable for one keyer on
// every thread, different between keyers (each draws its own key), sensitive to every part.
#include <catch2/catch.hpp>

#include <thread>

#include "proxy/password_key.h"

using smtpgate::IpAddress;
using smtpgate::PasswordKeyer;

TEST_CASE("PasswordKeyer: one key per keyer, the same on every thread", "[password_key]") {
  const IpAddress ip = *IpAddress::parse("192.0.2.7");
  PasswordKeyer a, b;
  const uint64_t ka = a.key(ip, "user@example.com", "old-saved");
  CHECK(ka != 0);
  CHECK(a.key(ip, "user@example.com", "old-saved") == ka);
  // Another keyer in between (a thread's cached context is re-keyed, then back).
  const uint64_t kb = b.key(ip, "user@example.com", "old-saved");
  CHECK(kb != ka);
  CHECK(a.key(ip, "user@example.com", "old-saved") == ka);
  CHECK(b.key(ip, "user@example.com", "old-saved") == kb);
  // Every part counts.
  CHECK(a.key(ip, "user@example.com", "old-saved2") != ka);
  CHECK(a.key(ip, "user@example.co", "mold-saved") != ka);
  CHECK(a.key(*IpAddress::parse("192.0.2.8"), "user@example.com", "old-saved") != ka);
  // Another thread (a worker loop) computes the same.
  uint64_t other = 0;
  std::thread t([&] { other = a.key(ip, "user@example.com", "old-saved"); });
  t.join();
  CHECK(other == ka);
}
