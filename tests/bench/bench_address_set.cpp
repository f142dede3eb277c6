// AddressSet at scale: build time, lookup latency and memory for N random entries.
// Usage: bench_address_set [entries=1000000]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "policy/address_set.h"

using namespace smtpgate;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kLookups = 1'000'000;
constexpr size_t kBatch = 1'000;  // timing single lookups would mostly measure the clock

long rss_kb(const char* field = "VmRSS:") {
  std::ifstream status("/proc/self/status");
  std::string key;
  long value = 0;
  while (status >> key) {
    if (key == field) {
      status >> value;
      return value;
    }
    status.ignore(1 << 10, '\n');
  }
  return 0;
}

IpAddress random_v4(std::mt19937_64& rng) {
  return IpAddress::v4(static_cast<uint32_t>(rng()));
}

IpAddress random_v6(std::mt19937_64& rng) {
  std::array<uint8_t, 16> b{};
  uint64_t hi = rng(), lo = rng();
  for (int i = 0; i < 8; ++i) {
    b[i] = static_cast<uint8_t>(hi >> (56 - 8 * i));
    b[8 + i] = static_cast<uint8_t>(lo >> (56 - 8 * i));
  }
  b[0] = 0x20;  // stay in 2000::/4 so nothing lands in the IPv4-mapped range
  return IpAddress::v6(b);
}

// Mostly /24../32 like real block lists; some wide IPv4 ranges and 10 % IPv6.
Cidr random_entry(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> pct(0, 99);
  int kind = pct(rng);
  if (kind < 10) {
    static const int kV6Prefixes[] = {32, 48, 56, 64, 64, 64, 96, 128, 128};
    int p = kV6Prefixes[rng() % std::size(kV6Prefixes)];
    return *Cidr::parse(random_v6(rng).to_string() + "/" + std::to_string(p));
  }
  int p = kind < 85 ? std::uniform_int_distribution<int>(24, 32)(rng)
                    : std::uniform_int_distribution<int>(8, 23)(rng);
  return *Cidr::parse(random_v4(rng).to_string() + "/" + std::to_string(p));
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * static_cast<double>(v.size() - 1));
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  size_t n = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1'000'000;
  std::mt19937_64 rng(20240601);

  std::vector<Cidr> cidrs;
  std::vector<Access> access;
  cidrs.reserve(n);
  access.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    cidrs.push_back(random_entry(rng));
    access.push_back(rng() % 2 ? Access::Allow : Access::Deny);
  }
  std::vector<IpAddress> probes;
  probes.reserve(kLookups);
  for (size_t i = 0; i < kLookups; ++i) {
    probes.push_back(rng() % 10 == 0 ? random_v6(rng) : random_v4(rng));
  }

  long rss_before = rss_kb();
  auto t0 = Clock::now();
  AddressSet set;
  for (size_t i = 0; i < n; ++i) set.add(cidrs[i], access[i], static_cast<uint32_t>(i));
  set.build();
  auto t1 = Clock::now();
  long rss_after = rss_kb();
  double build_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();

  // Warm up once, then time batches.
  size_t matched = 0, denied = 0;
  for (size_t i = 0; i < kBatch; ++i) matched += set.lookup(probes[i]).has_value();
  matched = 0;
  std::vector<double> per_lookup_ns;
  per_lookup_ns.reserve(kLookups / kBatch);
  for (size_t start = 0; start < kLookups; start += kBatch) {
    auto b0 = Clock::now();
    for (size_t i = start; i < start + kBatch; ++i) {
      auto m = set.lookup(probes[i]);
      if (m) {
        ++matched;
        denied += m->access == Access::Deny;
      }
    }
    auto b1 = Clock::now();
    per_lookup_ns.push_back(std::chrono::duration<double, std::nano>(b1 - b0).count() /
                            static_cast<double>(kBatch));
  }

  std::printf(
      "entries=%zu distinct=%zu build_ms=%.1f lookups=%zu lookup_median_ns=%.1f "
      "lookup_p99_ns=%.1f rss_mb=%.1f peak_rss_mb=%.1f matched=%zu denied=%zu\n",
      n, set.size(), build_ms, kLookups, percentile(per_lookup_ns, 0.5),
      percentile(per_lookup_ns, 0.99), static_cast<double>(rss_after - rss_before) / 1024.0,
      static_cast<double>(rss_kb("VmHWM:")) / 1024.0, matched, denied);
  bool ok = build_ms < 2000 && percentile(per_lookup_ns, 0.5) < 1000;
  if (!ok) std::printf("FAIL: budget is build < 2000 ms and median lookup < 1000 ns\n");
  return ok ? 0 : 1;
}
