// Longest-prefix match over allow/deny CIDR entries; built once, then read-only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policy/ip_address.h"

namespace smtpgate {

enum class Access : uint8_t { Allow, Deny };

// Build: add() entries, then build(). Lookup answers the most specific matching entry;
// on equal prefixes Deny wins. IPv4 and IPv6 are separate tables (an IPv6 entry never
// matches an IPv4 client, ::/0 included). Must handle 1,000,000 entries: build < 2 s,
// lookup < 1 us (tests/bench/bench_address_set.cpp).
class AddressSet {
 public:
  struct Match {
    Access access;
    Cidr entry;       // the entry that matched
    uint32_t origin;  // caller's tag given to add(), e.g. index of the list it came from
  };

  void add(const Cidr& entry, Access access, uint32_t origin = 0);
  void build();  // sorts and flattens; call once after the last add()
  std::optional<Match> lookup(const IpAddress& ip) const;  // requires build()
  size_t size() const;                                     // number of distinct entries after build
  bool empty() const { return size() == 0; }

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared and immutable after build(): snapshots copy cheaply
};

}  // namespace smtpgate
