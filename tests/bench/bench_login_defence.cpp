// The login defences' cost per AUTH and their memory at the bounds (issue: < 5 µs extra CPU
// per AUTH with per_login + distinct_passwords; memory bounded as the README says).
// Usage: bench_login_defence [attempts=1000000]
// Per failed AUTH the gateway adds: the keyed hash of the attempt (PasswordKeyer), the
// repeated-failure lookup (BanList), the per-login failure record and, per AUTH, the lock
// check (LoginGuard). Measured here on the same code, without sockets.
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "policy/ban_list.h"
#include "policy/login_guard.h"
#include "proxy/password_key.h"

using namespace smtpgate;
using Clock = std::chrono::steady_clock;

namespace {

long rss_kb() {
  std::ifstream status("/proc/self/status");
  std::string key;
  long value = 0;
  while (status >> key) {
    if (key == "VmRSS:") {
      status >> value;
      return value;
    }
    status.ignore(1 << 10, '\n');
  }
  return 0;
}

// This thread's CPU time in µs: unlike the wall clock, not inflated when other processes take
// the CPU (a loaded 2-vCPU VM), though their cache pressure still counts.
double thread_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  std::mt19937_64 rng(7);
  PerLoginPolicy per;  // 10 failures / 1h, lock 1h, known_good 30d
  const Seconds window{600};
  std::vector<std::string> logins(n), passwords(16);
  for (size_t i = 0; i < n; ++i) logins[i] = "user" + std::to_string(i) + "@example.com";
  for (size_t i = 0; i < passwords.size(); ++i) passwords[i] = "guess-" + std::to_string(i);
  std::vector<IpAddress> ips(n);
  for (auto& ip : ips) ip = IpAddress::v4(static_cast<uint32_t>(rng()));

  const long rss0 = rss_kb();
  PasswordKeyer keyer;
  BanList bans;
  LoginGuard guard;
  UnixMillis now = 1'700'000'000'000;
  uint64_t sink = 0;
  const auto t0 = Clock::now();
  const double c0 = thread_cpu_us();
  for (size_t i = 0; i < n; ++i) {
    const std::string& login = logins[i];
    const IpAddress& ip = ips[i];
    now += 1;
    sink += guard.locked_for(login, ip, now, per);                               // every AUTH
    const uint64_t key = keyer.key(ip, login, passwords[i % passwords.size()]);  // every AUTH
    if (!bans.repeated_failure(key, now, window)) {                              // a failure
      sink += guard.record_failure(login, now, per).failures;
    }
  }
  const double per_auth_us =
      std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / static_cast<double>(n);
  const double per_auth_cpu_us = (thread_cpu_us() - c0) / static_cast<double>(n);
  const long rss1 = rss_kb();

  // The keyed hash alone (the part distinct_passwords adds to every AUTH).
  const auto t1 = Clock::now();
  const double c1 = thread_cpu_us();
  for (size_t i = 0; i < n; ++i) sink += keyer.key(ips[i], logins[i], passwords[i & 15]);
  const double hash_us =
      std::chrono::duration<double, std::micro>(Clock::now() - t1).count() / static_cast<double>(n);
  const double hash_cpu_us = (thread_cpu_us() - c1) / static_cast<double>(n);

  std::printf("attempts: %zu distinct logins and addresses\n", n);
  std::printf(
      "per failed AUTH (lock check + keyed hash + repeat lookup + login failure): %.2f us "
      "(thread CPU %.2f us)\n",
      per_auth_us, per_auth_cpu_us);
  std::printf("keyed hash alone (HMAC-SHA-256): %.2f us (thread CPU %.2f us)\n", hash_us,
              hash_cpu_us);
  std::printf("logins kept: %zu (bound %zu); repeat keys bound %zu\n", guard.logins(),
              LoginGuard::kMaxLogins, BanList::kMaxTrackedKeys);
  std::printf("memory at the bounds: %.1f MB (RSS %ld -> %ld kB)\n",
              static_cast<double>(rss1 - rss0) / 1024.0, rss0, rss1);
  return sink == 42 ? 1 : 0;  // keeps the work from being optimised away
}
