#include "policy/ip_address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include "policy/text.h"

namespace smtpgate {

namespace {

// Longer than any valid textual address (INET6_ADDRSTRLEN is 46); bounds the copy below.
constexpr size_t kMaxAddressText = 64;

bool is_v4_mapped(const std::array<uint8_t, 16>& b) {
  for (int i = 0; i < 10; ++i) {
    if (b[i] != 0) return false;
  }
  return b[10] == 0xff && b[11] == 0xff;
}

// inet_pton needs a NUL-terminated string; an embedded NUL would silently cut the text
// short, so it is rejected here.
std::optional<std::array<uint8_t, 16>> pton(int family, std::string_view text) {
  if (text.empty() || text.size() > kMaxAddressText) return std::nullopt;
  if (text.find('\0') != std::string_view::npos) return std::nullopt;
  char buf[kMaxAddressText + 1];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  std::array<uint8_t, 16> bytes{};
  if (inet_pton(family, buf, bytes.data()) != 1) return std::nullopt;
  return bytes;
}

void clear_host_bits(std::array<uint8_t, 16>& bytes, unsigned prefix, unsigned width) {
  for (unsigned bit = prefix; bit < width; ++bit) {
    bytes[bit / 8] = static_cast<uint8_t>(bytes[bit / 8] & ~(0x80u >> (bit % 8)));
  }
}

std::string format_v6(const std::array<uint8_t, 16>& b);

Result<Cidr> host_bits_set(std::string_view text, std::string_view addr_text,
                           const std::array<uint8_t, 16>& masked, unsigned prefix, unsigned width) {
  std::string network;
  if (width == 32) {
    network = IpAddress::v4(static_cast<uint32_t>(masked[0]) << 24 |
                            static_cast<uint32_t>(masked[1]) << 16 |
                            static_cast<uint32_t>(masked[2]) << 8 | masked[3])
                  .to_string();
  } else {
    network = format_v6(masked);
  }
  return Result<Cidr>::fail(quoted(text) + " has host bits set; did you mean " +
                            quoted(network + "/" + std::to_string(prefix)) + " or " +
                            quoted(std::string(addr_text) + "/" + std::to_string(width)) + "?");
}

// RFC 5952: lower-case hex, no leading zeros, the longest run (first on a tie) of two or
// more zero groups becomes "::". No mixed IPv4 notation: mapped addresses are stored as IPv4.
std::string format_v6(const std::array<uint8_t, 16>& b) {
  uint16_t groups[8];
  for (int i = 0; i < 8; ++i) groups[i] = static_cast<uint16_t>(b[2 * i] << 8 | b[2 * i + 1]);
  int best_start = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (groups[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && groups[j] == 0) ++j;
    if (j - i > best_len) {
      best_start = i;
      best_len = j - i;
    }
    i = j;
  }
  if (best_len < 2) best_start = -1;

  std::string out;
  out.reserve(40);
  char hex[8];
  for (int i = 0; i < 8; ++i) {
    if (i == best_start) {
      out += "::";
      i += best_len - 1;
      continue;
    }
    if (!out.empty() && out.back() != ':') out += ':';
    auto [end, ec] = std::to_chars(hex, hex + sizeof hex, groups[i], 16);
    out.append(hex, end);
  }
  return out;
}

Result<Cidr> prefix_out_of_range(std::string_view text, unsigned prefix, const char* family) {
  std::string msg = quoted(text);
  msg += ": prefix /";
  msg += std::to_string(prefix);
  msg += " is out of range for ";
  msg += family;
  return Result<Cidr>::fail(std::move(msg));
}

}  // namespace

IpAddress IpAddress::v4(uint32_t host_order) {
  IpAddress ip;
  ip.is_v6_ = false;
  ip.bytes_[0] = static_cast<uint8_t>(host_order >> 24);
  ip.bytes_[1] = static_cast<uint8_t>(host_order >> 16);
  ip.bytes_[2] = static_cast<uint8_t>(host_order >> 8);
  ip.bytes_[3] = static_cast<uint8_t>(host_order);
  return ip;
}

IpAddress IpAddress::v6(const std::array<uint8_t, 16>& bytes) {
  if (is_v4_mapped(bytes)) {
    return v4(static_cast<uint32_t>(bytes[12]) << 24 | static_cast<uint32_t>(bytes[13]) << 16 |
              static_cast<uint32_t>(bytes[14]) << 8 | bytes[15]);
  }
  IpAddress ip;
  ip.is_v6_ = true;
  ip.bytes_ = bytes;
  return ip;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (auto b = pton(AF_INET, text)) {
    IpAddress ip;
    std::memcpy(ip.bytes_.data(), b->data(), 4);
    return ip;
  }
  if (auto b = pton(AF_INET6, text)) return v6(*b);
  return std::nullopt;
}

uint32_t IpAddress::v4_host_order() const {
  return static_cast<uint32_t>(bytes_[0]) << 24 | static_cast<uint32_t>(bytes_[1]) << 16 |
         static_cast<uint32_t>(bytes_[2]) << 8 | bytes_[3];
}

bool IpAddress::is_loopback() const {
  if (!is_v6_) return bytes_[0] == 127;
  for (int i = 0; i < 15; ++i) {
    if (bytes_[i] != 0) return false;
  }
  return bytes_[15] == 1;
}

std::string IpAddress::to_string() const {
  if (is_v6_) return format_v6(bytes_);
  std::string out;
  out.reserve(15);
  char dec[4];
  for (int i = 0; i < 4; ++i) {
    if (i) out += '.';
    auto [end, ec] = std::to_chars(dec, dec + sizeof dec, bytes_[i]);
    out.append(dec, end);
  }
  return out;
}

Result<Cidr> Cidr::parse(std::string_view text, bool mask_host_bits) {
  auto not_an_address = [&] {
    return Result<Cidr>::fail(quoted(text) + " is not an IP address or CIDR");
  };
  std::string_view addr_text = text;
  std::optional<unsigned> prefix;
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    addr_text = text.substr(0, slash);
    std::string_view digits = text.substr(slash + 1);
    // Digits only: from_chars alone would accept a trailing remainder or a sign.
    if (digits.empty() || digits.size() > 3) return not_an_address();
    unsigned value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec != std::errc() || end != digits.data() + digits.size()) return not_an_address();
    prefix = value;
  }

  if (auto b = pton(AF_INET, addr_text)) {
    unsigned p = prefix.value_or(32);
    if (p > 32) {
      return prefix_out_of_range(text, p, "IPv4");
    }
    const auto given = *b;
    clear_host_bits(*b, p, 32);
    if (*b != given && !mask_host_bits) return host_bits_set(text, addr_text, *b, p, 32);
    const auto& v = *b;
    Cidr c;
    c.address =
        IpAddress::v4(static_cast<uint32_t>(v[0]) << 24 | static_cast<uint32_t>(v[1]) << 16 |
                      static_cast<uint32_t>(v[2]) << 8 | v[3]);
    c.prefix = static_cast<uint8_t>(p);
    return Result<Cidr>::ok(c);
  }

  auto b = pton(AF_INET6, addr_text);
  if (!b) return not_an_address();
  unsigned p = prefix.value_or(128);
  if (p > 128) {
    return prefix_out_of_range(text, p, "IPv6");
  }
  const auto given = *b;
  clear_host_bits(*b, p, 128);
  if (*b != given && !mask_host_bits) return host_bits_set(text, addr_text, *b, p, 128);
  Cidr c;
  c.address = IpAddress::v6(*b);
  if (c.address.is_v4()) {
    // Within ::ffff:0:0/96 the prefix counts IPv4 bits. A shorter prefix reaches outside the
    // mapped range; with host bits cleared it is no longer a mapped address, so it stays IPv6.
    c.prefix = static_cast<uint8_t>(p - 96);
  } else {
    c.prefix = static_cast<uint8_t>(p);
  }
  return Result<Cidr>::ok(c);
}

bool Cidr::contains(const IpAddress& ip) const {
  if (ip.is_v6() != address.is_v6()) return false;
  const auto& a = address.bytes();
  const auto& b = ip.bytes();
  unsigned full = prefix / 8;
  for (unsigned i = 0; i < full; ++i) {
    if (a[i] != b[i]) return false;
  }
  unsigned rest = prefix % 8;
  if (rest == 0) return true;
  auto mask = static_cast<uint8_t>(0xffu << (8 - rest));
  return (a[full] & mask) == (b[full] & mask);
}

IpAddress IpAddress::masked(unsigned prefix) const {
  IpAddress out = *this;
  const unsigned width = is_v6_ ? 128 : 32;
  if (prefix >= width) return out;
  clear_host_bits(out.bytes_, prefix, width);
  return out;
}

std::string Cidr::to_string() const {
  return address.to_string() + "/" + std::to_string(prefix);
}

}  // namespace smtpgate
