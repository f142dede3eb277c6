// IPv4/IPv6 addresses and CIDR prefixes as the policy sees them.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "policy/result.h"

namespace smtpgate {

// An IPv4 or IPv6 address. IPv4-mapped IPv6 (::ffff:a.b.c.d) is always stored as IPv4,
// so a dual-stack listener judges, logs and forwards such clients as plain IPv4.
class IpAddress {
 public:
  IpAddress() = default;
  static IpAddress v4(uint32_t host_order);
  static IpAddress v6(const std::array<uint8_t, 16>& bytes);  // unmaps ::ffff:0:0/96
  // Strict textual parse (inet_pton rules); no brackets, no port, no zone id.
  static std::optional<IpAddress> parse(std::string_view text);

  bool is_v4() const { return !is_v6_; }
  bool is_v6() const { return is_v6_; }
  // Network byte order. For IPv4 only the first 4 bytes are used.
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  uint32_t v4_host_order() const;
  bool is_loopback() const;
  std::string to_string() const;  // canonical text (RFC 5952 for IPv6)
  // The first `prefix` bits kept, the rest cleared (IPv4: of 32 bits, IPv6: of 128).
  IpAddress masked(unsigned prefix) const;

  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;

 private:
  bool is_v6_ = false;
  std::array<uint8_t, 16> bytes_{};
};

// An address with a prefix length.
struct Cidr {
  IpAddress address;
  uint8_t prefix = 0;  // 0..32 for IPv4, 0..128 for IPv6

  // "192.0.2.0/24", "2001:db8::/32", or a bare address (full-length prefix).
  // An IPv4-mapped IPv6 prefix (::ffff:0:0/96 or longer) becomes the IPv4 prefix.
  // Host bits set ("127.0.0.10/24") are an error naming both readings, so a typo cannot
  // widen a list; `mask_host_bits` clears them instead.
  static Result<Cidr> parse(std::string_view text, bool mask_host_bits = false);
  bool contains(const IpAddress& ip) const;
  std::string to_string() const;

  friend bool operator==(const Cidr&, const Cidr&) = default;
};

}  // namespace smtpgate
