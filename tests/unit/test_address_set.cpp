#include <catch2/catch.hpp>

#include <map>
#include <random>

#include "policy/address_set.h"

using smtpgate::Access;
using smtpgate::AddressSet;
using smtpgate::Cidr;
using smtpgate::IpAddress;

namespace {

Cidr C(const char* text) {
  auto c = Cidr::parse(text, true);
  INFO(text << ": " << c.error());
  REQUIRE(c);
  return *c;
}

IpAddress A(const char* text) {
  auto ip = IpAddress::parse(text);
  INFO(text);
  REQUIRE(ip);
  return *ip;
}

// "allow 10.0.0.0/8", "deny 10.1.2.3/32", or "-" when nothing matches.
std::string verdict(const AddressSet& set, const char* ip) {
  auto m = set.lookup(A(ip));
  if (!m) return "-";
  return std::string(m->access == Access::Allow ? "allow " : "deny ") + m->entry.to_string();
}

AddressSet make(std::initializer_list<std::pair<const char*, Access>> entries) {
  AddressSet set;
  for (const auto& [text, access] : entries) set.add(C(text), access);
  set.build();
  return set;
}

constexpr Access kAllow = Access::Allow;
constexpr Access kDeny = Access::Deny;

}  // namespace

TEST_CASE("AddressSet: empty and unbuilt sets", "[address_set]") {
  AddressSet empty;
  CHECK(empty.empty());
  CHECK(empty.size() == 0);
  CHECK_FALSE(empty.lookup(A("1.2.3.4")));
  empty.build();
  CHECK_FALSE(empty.lookup(A("::1")));

  // Forgetting build() must not turn a deny list into "matches nothing".
  AddressSet unbuilt;
  unbuilt.add(C("10.0.0.0/8"), kDeny);
  unbuilt.add(C("10.1.0.0/16"), kAllow);
  unbuilt.add(C("10.1.0.0/16"), kDeny);
  REQUIRE(unbuilt.lookup(A("10.1.2.3")));
  CHECK(unbuilt.lookup(A("10.1.2.3"))->access == kDeny);
  CHECK(unbuilt.lookup(A("10.1.2.3"))->entry == C("10.1.0.0/16"));
  CHECK(unbuilt.lookup(A("10.2.0.0"))->entry == C("10.0.0.0/8"));
  CHECK_FALSE(unbuilt.lookup(A("11.0.0.0")));
}

TEST_CASE("AddressSet: /0, /32 and /128", "[address_set]") {
  auto set = make(
      {{"0.0.0.0/0", kDeny}, {"203.0.113.10", kAllow}, {"::/0", kDeny}, {"2001:db8::10", kAllow}});
  CHECK(verdict(set, "203.0.113.10") == "allow 203.0.113.10/32");
  CHECK(verdict(set, "203.0.113.11") == "deny 0.0.0.0/0");
  CHECK(verdict(set, "203.0.113.9") == "deny 0.0.0.0/0");
  CHECK(verdict(set, "0.0.0.0") == "deny 0.0.0.0/0");
  CHECK(verdict(set, "255.255.255.255") == "deny 0.0.0.0/0");
  CHECK(verdict(set, "2001:db8::10") == "allow 2001:db8::10/128");
  CHECK(verdict(set, "2001:db8::11") == "deny ::/0");
  CHECK(verdict(set, "2001:db8::f") == "deny ::/0");
  CHECK(verdict(set, "::") == "deny ::/0");
  CHECK(verdict(set, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == "deny ::/0");
  CHECK(set.size() == 4);
}

TEST_CASE("AddressSet: entries at the ends of the address space", "[address_set]") {
  auto set = make({{"255.255.255.255", kDeny},
                   {"0.0.0.0", kDeny},
                   {"255.255.255.0/24", kAllow},
                   {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", kDeny},
                   {"ffff::/16", kAllow},
                   {"::", kAllow}});
  CHECK(verdict(set, "255.255.255.255") == "deny 255.255.255.255/32");
  CHECK(verdict(set, "255.255.255.254") == "allow 255.255.255.0/24");
  CHECK(verdict(set, "255.255.254.255") == "-");
  CHECK(verdict(set, "0.0.0.0") == "deny 0.0.0.0/32");
  CHECK(verdict(set, "0.0.0.1") == "-");
  CHECK(verdict(set, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") ==
        "deny ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
  CHECK(verdict(set, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe") == "allow ffff::/16");
  CHECK(verdict(set, "fffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == "-");
  CHECK(verdict(set, "::") == "allow ::/128");
  CHECK(verdict(set, "::1") == "-");
}

TEST_CASE("AddressSet: IPv4 and IPv6 are separate tables", "[address_set]") {
  auto v6_only = make({{"::/0", kDeny}});
  CHECK(verdict(v6_only, "1.2.3.4") == "-");
  CHECK(verdict(v6_only, "::ffff:1.2.3.4") == "-");  // mapped clients are IPv4
  CHECK(verdict(v6_only, "::1.2.3.4") == "deny ::/0");

  auto v4_only = make({{"0.0.0.0/0", kDeny}});
  CHECK(verdict(v4_only, "::") == "-");
  CHECK(verdict(v4_only, "::1") == "-");
  CHECK(verdict(v4_only, "2001:db8::1") == "-");
  CHECK(verdict(v4_only, "::1.2.3.4") == "-");  // IPv4-compatible is not mapped
  CHECK(verdict(v4_only, "::ffff:1.2.3.4") == "deny 0.0.0.0/0");
}

TEST_CASE("AddressSet: IPv4-mapped clients and entries", "[address_set]") {
  auto set = make({{"192.0.2.0/24", kDeny}, {"::ffff:198.51.100.0/120", kAllow}});
  CHECK(verdict(set, "::ffff:192.0.2.1") == "deny 192.0.2.0/24");
  CHECK(verdict(set, "::ffff:c000:0201") == "deny 192.0.2.0/24");
  CHECK(verdict(set, "198.51.100.200") == "allow 198.51.100.0/24");
  CHECK(verdict(set, "::ffff:198.51.101.0") == "-");
  auto m = set.lookup(A("::ffff:192.0.2.1"));
  REQUIRE(m);
  CHECK(m->entry.address.is_v4());
  CHECK(m->entry.prefix == 24);
}

TEST_CASE("AddressSet: equal prefixes, deny wins and duplicates dedupe", "[address_set]") {
  AddressSet set;
  set.add(C("192.0.2.0/24"), kAllow, 1);
  set.add(C("192.0.2.0/24"), kDeny, 2);
  set.add(C("192.0.2.99/24"), kDeny, 3);  // same CIDR after clearing host bits
  set.add(C("198.51.100.0/24"), kDeny, 4);
  set.add(C("198.51.100.0/24"), kAllow, 5);
  set.add(C("203.0.113.0/24"), kAllow, 6);
  set.add(C("203.0.113.0/24"), kAllow, 7);
  set.add(C("2001:db8::/32"), kAllow, 8);
  set.add(C("2001:db8::/32"), kDeny, 9);
  set.build();
  CHECK(set.size() == 4);

  auto m = set.lookup(A("192.0.2.1"));
  REQUIRE(m);
  CHECK(m->access == kDeny);
  CHECK(m->origin == 2);  // the first Deny added
  m = set.lookup(A("198.51.100.1"));
  REQUIRE(m);
  CHECK(m->access == kDeny);
  CHECK(m->origin == 4);
  m = set.lookup(A("203.0.113.1"));
  REQUIRE(m);
  CHECK(m->access == kAllow);
  CHECK(m->origin == 6);  // same access: the first added tags the match
  m = set.lookup(A("2001:db8:1::1"));
  REQUIRE(m);
  CHECK(m->access == kDeny);
  CHECK(m->origin == 9);
}

TEST_CASE("AddressSet: nested allow in deny in allow", "[address_set]") {
  auto set = make({{"10.0.0.0/8", kAllow},
                   {"10.1.0.0/16", kDeny},
                   {"10.1.2.0/24", kAllow},
                   {"10.1.2.128/25", kDeny},
                   {"10.1.2.200", kAllow},
                   {"2001:db8::/32", kAllow},
                   {"2001:db8:1::/48", kDeny},
                   {"2001:db8:1:2::/64", kAllow}});
  CHECK(verdict(set, "9.255.255.255") == "-");
  CHECK(verdict(set, "10.0.0.0") == "allow 10.0.0.0/8");
  CHECK(verdict(set, "10.0.255.255") == "allow 10.0.0.0/8");
  CHECK(verdict(set, "10.1.0.0") == "deny 10.1.0.0/16");
  CHECK(verdict(set, "10.1.1.255") == "deny 10.1.0.0/16");
  CHECK(verdict(set, "10.1.2.0") == "allow 10.1.2.0/24");
  CHECK(verdict(set, "10.1.2.127") == "allow 10.1.2.0/24");
  CHECK(verdict(set, "10.1.2.128") == "deny 10.1.2.128/25");
  CHECK(verdict(set, "10.1.2.199") == "deny 10.1.2.128/25");
  CHECK(verdict(set, "10.1.2.200") == "allow 10.1.2.200/32");
  CHECK(verdict(set, "10.1.2.201") == "deny 10.1.2.128/25");
  CHECK(verdict(set, "10.1.2.255") == "deny 10.1.2.128/25");
  CHECK(verdict(set, "10.1.3.0") == "deny 10.1.0.0/16");
  CHECK(verdict(set, "10.2.0.0") == "allow 10.0.0.0/8");
  CHECK(verdict(set, "10.255.255.255") == "allow 10.0.0.0/8");
  CHECK(verdict(set, "11.0.0.0") == "-");
  CHECK(verdict(set, "2001:db8::1") == "allow 2001:db8::/32");
  CHECK(verdict(set, "2001:db8:1::1") == "deny 2001:db8:1::/48");
  CHECK(verdict(set, "2001:db8:1:2::1") == "allow 2001:db8:1:2::/64");
  CHECK(verdict(set, "2001:db8:1:3::") == "deny 2001:db8:1::/48");
  CHECK(verdict(set, "2001:db8:2::") == "allow 2001:db8::/32");
  CHECK(verdict(set, "2001:db9::") == "-");
}

TEST_CASE("AddressSet: adjacent ranges and gaps", "[address_set]") {
  auto set = make({{"192.0.2.0/25", kAllow},
                   {"192.0.2.128/25", kDeny},
                   {"192.0.3.0/24", kAllow},
                   {"192.0.5.0/24", kAllow},
                   {"192.0.2.0/23", kDeny}});
  CHECK(verdict(set, "192.0.1.255") == "-");
  CHECK(verdict(set, "192.0.2.0") == "allow 192.0.2.0/25");
  CHECK(verdict(set, "192.0.2.127") == "allow 192.0.2.0/25");
  CHECK(verdict(set, "192.0.2.128") == "deny 192.0.2.128/25");
  CHECK(verdict(set, "192.0.2.255") == "deny 192.0.2.128/25");
  CHECK(verdict(set, "192.0.3.0") == "allow 192.0.3.0/24");
  CHECK(verdict(set, "192.0.3.255") == "allow 192.0.3.0/24");
  CHECK(verdict(set, "192.0.4.0") == "-");
  CHECK(verdict(set, "192.0.4.255") == "-");
  CHECK(verdict(set, "192.0.5.0") == "allow 192.0.5.0/24");
  CHECK(verdict(set, "192.0.6.0") == "-");
}

TEST_CASE("AddressSet: the SPEC example admits exactly one host", "[address_set]") {
  auto set = make({{"0.0.0.0/0", kDeny}, {"::/0", kDeny}, {"203.0.113.10", kAllow}});
  for (const char* ip : {"203.0.113.9", "203.0.113.11", "10.0.0.1", "::1", "2001:db8::1"}) {
    INFO(ip);
    CHECK(set.lookup(A(ip))->access == kDeny);
  }
  CHECK(set.lookup(A("203.0.113.10"))->access == kAllow);
  CHECK(set.lookup(A("::ffff:203.0.113.10"))->access == kAllow);
}

TEST_CASE("AddressSet: copies are snapshots", "[address_set]") {
  AddressSet a = make({{"10.0.0.0/8", kDeny}});
  AddressSet b = a;
  b.add(C("10.1.0.0/16"), kAllow);
  b.build();
  CHECK(verdict(a, "10.1.0.1") == "deny 10.0.0.0/8");
  CHECK(verdict(b, "10.1.0.1") == "allow 10.1.0.0/16");
  CHECK(a.size() == 1);
  CHECK(b.size() == 2);
}

namespace {

// The reference: for each prefix length from the longest down, look the masked address up
// in a map. Independent of the sweep and binary search it checks.
struct Reference {
  using Key = std::pair<int, std::array<uint8_t, 17>>;  // prefix, family byte + address
  std::map<Key, std::pair<Access, Cidr>> entries;

  static std::array<uint8_t, 17> masked(const IpAddress& ip, int prefix) {
    std::array<uint8_t, 17> k{};
    k[0] = ip.is_v6() ? 6 : 4;
    for (int bit = 0; bit < prefix; ++bit) {
      if (ip.bytes()[bit / 8] & (0x80 >> (bit % 8))) k[1 + bit / 8] |= 0x80 >> (bit % 8);
    }
    return k;
  }

  void add(const Cidr& c, Access access) {
    Key key{c.prefix, masked(c.address, c.prefix)};
    auto [it, inserted] = entries.emplace(key, std::make_pair(access, c));
    if (!inserted && access == Access::Deny) it->second.first = Access::Deny;
  }

  std::optional<std::pair<Access, Cidr>> lookup(const IpAddress& ip) const {
    for (int p = ip.is_v6() ? 128 : 32; p >= 0; --p) {
      auto it = entries.find({p, masked(ip, p)});
      if (it != entries.end()) return it->second;
    }
    return std::nullopt;
  }
};

IpAddress offset(const IpAddress& ip, int delta) {
  std::array<uint8_t, 16> b = ip.bytes();
  int width = ip.is_v6() ? 16 : 4;
  for (int i = width - 1; i >= 0 && delta != 0; --i) {
    int v = b[i] + delta;
    b[i] = static_cast<uint8_t>(v & 0xff);
    delta = v < 0 ? -1 : (v > 255 ? 1 : 0);
  }
  if (!ip.is_v6()) {
    return IpAddress::v4(static_cast<uint32_t>(b[0]) << 24 | static_cast<uint32_t>(b[1]) << 16 |
                         static_cast<uint32_t>(b[2]) << 8 | b[3]);
  }
  return IpAddress::v6(b);
}

IpAddress last_of(const Cidr& c) {
  std::array<uint8_t, 16> b = c.address.bytes();
  int width = c.address.is_v6() ? 128 : 32;
  for (int bit = c.prefix; bit < width; ++bit)
    b[bit / 8] |= static_cast<uint8_t>(0x80 >> (bit % 8));
  if (!c.address.is_v6()) {
    return IpAddress::v4(static_cast<uint32_t>(b[0]) << 24 | static_cast<uint32_t>(b[1]) << 16 |
                         static_cast<uint32_t>(b[2]) << 8 | b[3]);
  }
  return IpAddress::v6(b);
}

}  // namespace

TEST_CASE("AddressSet: randomized cross-check against a brute-force reference", "[address_set]") {
  std::mt19937_64 rng(GENERATE(1u, 2u, 3u));
  auto uniform = [&](uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
  };
  // Entries crowd into a few small regions so that nesting, shared starts, adjacency and
  // duplicates all occur often.
  auto random_v4 = [&] {
    uint32_t base = uniform(0, 3) == 0 ? static_cast<uint32_t>(uniform(0, 0xffffffff))
                                       : 0x0a000000u | static_cast<uint32_t>(uniform(0, 0xffff));
    return IpAddress::v4(base);
  };
  auto random_v6 = [&] {
    std::array<uint8_t, 16> b{};
    b[0] = 0x20;
    b[1] = 0x01;
    b[2] = 0x0d;
    b[3] = 0xb8;
    if (uniform(0, 3) == 0) {
      for (auto& x : b) x = static_cast<uint8_t>(uniform(0, 255));
    } else {
      b[4] = static_cast<uint8_t>(uniform(0, 3));
      b[15] = static_cast<uint8_t>(uniform(0, 255));
      b[7] = static_cast<uint8_t>(uniform(0, 255));
    }
    return IpAddress::v6(b);
  };
  auto random_prefix = [&](bool v6) -> uint8_t {
    uint64_t r = uniform(0, 99);
    if (r == 0) return 0;
    if (v6) return static_cast<uint8_t>(r < 50 ? uniform(100, 128) : uniform(1, 128));
    return static_cast<uint8_t>(r < 70 ? uniform(16, 32) : uniform(1, 32));
  };

  constexpr int kEntries = 20000;
  AddressSet set;
  Reference ref;
  std::vector<Cidr> added;
  for (int i = 0; i < kEntries; ++i) {
    bool v6 = uniform(0, 4) == 0;
    IpAddress ip = v6 ? random_v6() : random_v4();
    auto c = Cidr::parse(ip.to_string() + "/" + std::to_string(random_prefix(v6)), true);
    REQUIRE(c);
    if (c->address.is_v6() != v6) continue;  // a random IPv6 prefix that landed in ::ffff:0:0/96
    Access access = uniform(0, 1) ? Access::Allow : Access::Deny;
    set.add(*c, access);
    ref.add(*c, access);
    added.push_back(*c);
  }
  set.build();
  CHECK(set.size() == ref.entries.size());

  std::vector<IpAddress> probes;
  for (const Cidr& c : added) {
    IpAddress last = last_of(c);
    for (const IpAddress& ip : {c.address, offset(c.address, -1), last, offset(last, 1)}) {
      if (uniform(0, 3) == 0) probes.push_back(ip);
    }
  }
  for (int i = 0; i < 5000; ++i) probes.push_back(uniform(0, 4) ? random_v4() : random_v6());

  int mismatches = 0;
  for (const IpAddress& ip : probes) {
    auto got = set.lookup(ip);
    auto want = ref.lookup(ip);
    bool same = got.has_value() == want.has_value() &&
                (!got || (got->access == want->first && got->entry == want->second));
    if (!same && ++mismatches <= 5) {
      INFO("probe " << ip.to_string() << ": got "
                    << (got ? got->entry.to_string() : std::string("none")) << ", want "
                    << (want ? want->second.to_string() : std::string("none")));
      CHECK(same);
    }
  }
  CHECK(mismatches == 0);
  CHECK(probes.size() > 20000);
}
