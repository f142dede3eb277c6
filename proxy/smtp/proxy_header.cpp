#include "proxy/smtp/proxy_header.h"

#include <array>
#include <optional>

namespace smtpgate::smtp {
namespace {

using Status = ProxyParse::Status;

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr std::array<unsigned char, 12> kV2Signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                        0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static_assert(kProxyV2Fixed == kV2Signature.size() + 4);
// The largest v2 length field accepted: the whole header within kMaxProxyHeader.
constexpr size_t kMaxV2Length = kMaxProxyHeader - kProxyV2Fixed;
// Longest IPv6 text inet_pton reads: eight groups, or six and a dotted quad (45 bytes).
constexpr size_t kMaxV6Text = 45;

// The messages (constant: they go to a log, and never carry the peer's bytes).
constexpr const char* kNotProxy = "neither a PROXY v1 line nor a v2 signature";
constexpr const char* kBareLf = "v1: bare LF (the line must end in CRLF)";
constexpr const char* kCrWithoutLf = "v1: CR not followed by LF";
constexpr const char* kNoCrlf = "v1: no CRLF within 107 bytes";
static_assert(kMaxProxyV1Line == 107, "kNoCrlf names the limit");
constexpr const char* kProtocol = "v1: the protocol is not TCP4, TCP6 or UNKNOWN";
constexpr const char* kOneSpace = "v1: more than one space between fields";
constexpr const char* kTooLong = "v2: header longer than 4096 bytes";
static_assert(kMaxProxyHeader == 4096, "kTooLong names the limit");

ProxyParse invalid(const char* why) {
  ProxyParse r;
  r.status = Status::Invalid;
  r.error = why;
  return r;
}

ProxyParse done(size_t consumed, const ProxyHeader& h) {
  ProxyParse r;
  r.status = Status::Done;
  r.consumed = consumed;
  r.header = h;
  return r;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// True when `token` can still become one of the v1 protocol names.
bool protocol_prefix(std::string_view token) {
  for (std::string_view name : {"TCP4", "TCP6", "UNKNOWN"}) {
    if (name.substr(0, token.size()) == token) return true;
  }
  return false;
}

// A TCP4 address read byte by byte: four decimal numbers 0..255 separated by single dots,
// no leading zeros. add() judges one byte; finish() the whole at the space that ends it.
class DottedQuad {
 public:
  // nullptr when the byte may continue the address, else why not.
  const char* add(char c) {
    if (c == '.') {
      if (digits_ == 0 || dots_ == 3) return kNotQuad;
      value_ = (value_ << 8) | part_;
      ++dots_;
      part_ = 0;
      digits_ = 0;
      return nullptr;
    }
    if (!is_digit(c)) return kNotQuad;
    if (digits_ > 0 && part_ == 0) return "v1: a TCP4 address has a number with a leading zero";
    part_ = part_ * 10 + static_cast<uint32_t>(c - '0');
    if (part_ > 255) return "v1: a TCP4 address has a number above 255";
    ++digits_;
    return nullptr;
  }
  std::optional<IpAddress> finish() const {
    if (dots_ != 3 || digits_ == 0) return std::nullopt;
    return IpAddress::v4((value_ << 8) | part_);
  }

  static constexpr const char* kNotQuad = "v1: a TCP4 address is not a dotted quad";

 private:
  uint32_t value_ = 0;  // the numbers before the last dot
  uint32_t part_ = 0;   // the number being read
  unsigned dots_ = 0;
  unsigned digits_ = 0;  // of the number being read
};

// A port read byte by byte: decimal 0..65535, no sign, no leading zeros.
class Port {
 public:
  const char* add(char c) {
    if (!is_digit(c)) return "v1: a port is not a decimal number";
    if (digits_ > 0 && value_ == 0) return "v1: a port has a leading zero";
    value_ = value_ * 10 + static_cast<uint32_t>(c - '0');
    if (value_ > 65535) return "v1: a port is above 65535";
    ++digits_;
    return nullptr;
  }
  uint16_t value() const { return static_cast<uint16_t>(value_); }

 private:
  uint32_t value_ = 0;
  unsigned digits_ = 0;
};

// The v1 line. Every byte is judged as it arrives; only an IPv6 address is judged as a whole,
// at the space that ends it. Running out of bytes is NeedMore, or Invalid once the 107 bytes
// a line may have are all there.
ProxyParse parse_v1(std::string_view received) {
  const std::string_view in = received.substr(0, kMaxProxyV1Line);
  const auto ran_out = [&in] {
    return in.size() == kMaxProxyV1Line ? invalid(kNoCrlf) : ProxyParse{};
  };
  // At the CR that ends the line.
  const auto end_of_line = [&](size_t cr, const ProxyHeader& h) {
    if (cr + 1 == in.size()) return ran_out();
    if (in[cr + 1] != '\n') return invalid(kCrWithoutLf);
    return done(cr + 2, h);
  };

  size_t i = 0;
  for (; i < kV1Prefix.size(); ++i) {
    if (i == in.size()) return ran_out();
    if (in[i] != kV1Prefix[i]) return invalid(kNotProxy);
  }

  const size_t proto_start = i;
  for (;; ++i) {
    if (i == in.size()) return ran_out();
    const char c = in[i];
    if (c == ' ' || c == '\r' || c == '\n') break;
    if (!protocol_prefix(in.substr(proto_start, i + 1 - proto_start))) return invalid(kProtocol);
  }
  const std::string_view proto = in.substr(proto_start, i - proto_start);
  if (in[i] == '\n') return invalid(kBareLf);
  if (proto.empty() && in[i] == ' ') return invalid(kOneSpace);

  ProxyHeader h;
  h.version = 1;
  if (proto == "UNKNOWN") {
    if (in[i] == ' ') {
      // Whatever follows is ignored, up to the CRLF.
      for (++i;; ++i) {
        if (i == in.size()) return ran_out();
        if (in[i] == '\n') return invalid(kBareLf);
        if (in[i] == '\r') break;
      }
    }
    h.kind = ProxyHeader::Kind::Local;
    return end_of_line(i, h);
  }
  if (proto != "TCP4" && proto != "TCP6") return invalid(kProtocol);
  if (in[i] == '\r') return invalid("v1: TCP4/TCP6 without addresses and ports");
  ++i;

  const bool v6 = proto == "TCP6";
  h.kind = ProxyHeader::Kind::Proxied;
  for (int field = 0; field < 4; ++field) {
    const bool address = field < 2;
    const size_t start = i;
    DottedQuad quad;
    Port port;
    for (;; ++i) {
      if (i == in.size()) return ran_out();
      const char c = in[i];
      if (c == ' ' || c == '\r' || c == '\n') break;
      const char* why = nullptr;
      if (!address) {
        why = port.add(c);
      } else if (!v6) {
        why = quad.add(c);
      } else if (!is_hex(c) && c != ':' && c != '.') {
        why = "v1: a TCP6 address is not IPv6 text";
      } else if (i - start + 1 > kMaxV6Text) {
        why = "v1: a TCP6 address is too long";
      }
      if (why != nullptr) return invalid(why);
    }
    const char end = in[i];
    if (end == '\n') return invalid(kBareLf);
    if (i == start) {
      if (end == ' ') return invalid(kOneSpace);
      return invalid(field == 0 ? "v1: TCP4/TCP6 without addresses and ports"
                                : "v1: a space before the CRLF");
    }
    if (field < 3 && end == '\r') return invalid("v1: too few fields (two addresses, two ports)");
    if (field == 3 && end == ' ') return invalid("v1: more than two addresses and two ports");

    if (address) {
      std::optional<IpAddress> ip;
      if (!v6) {
        ip = quad.finish();
        if (!ip) return invalid(DottedQuad::kNotQuad);
      } else {
        const std::string_view text = in.substr(start, i - start);
        // Hex digits and dots alone would be IPv4 (or nothing): TCP6 wants IPv6 text.
        if (text.find(':') != std::string_view::npos) ip = IpAddress::parse(text);
        if (!ip) return invalid("v1: a TCP6 address is not an IPv6 address");
      }
      (field == 0 ? h.source : h.destination) = *ip;
    } else {
      (field == 2 ? h.source_port : h.destination_port) = port.value();
    }
    if (field < 3) ++i;  // the space; the CR stays for end_of_line
  }
  return end_of_line(i, h);
}

uint8_t byte_at(std::string_view in, size_t i) {
  return static_cast<uint8_t>(in[i]);
}

std::array<uint8_t, 16> v6_bytes(std::string_view in, size_t at) {
  std::array<uint8_t, 16> b{};
  for (size_t k = 0; k < b.size(); ++k) b[k] = byte_at(in, at + k);
  return b;
}

uint16_t u16_at(std::string_view in, size_t at) {
  return static_cast<uint16_t>(byte_at(in, at) << 8 | byte_at(in, at + 1));
}

uint32_t u32_at(std::string_view in, size_t at) {
  return static_cast<uint32_t>(u16_at(in, at)) << 16 | u16_at(in, at + 2);
}

// The v2 binary header; `in` holds at most kMaxProxyHeader bytes.
ProxyParse parse_v2(std::string_view in) {
  for (size_t i = 0; i < kV2Signature.size(); ++i) {
    if (i == in.size()) return {};
    if (byte_at(in, i) != kV2Signature[i]) return invalid(kNotProxy);
  }

  if (in.size() < 13) return {};
  const uint8_t ver_cmd = byte_at(in, 12);
  if (ver_cmd >> 4 != 2) return invalid("v2: the version is not 2");
  const unsigned command = ver_cmd & 0x0f;
  if (command > 1) return invalid("v2: the command is neither LOCAL nor PROXY");
  const bool proxy = command == 1;

  if (in.size() < 14) return {};
  const uint8_t family = byte_at(in, 13);
  size_t block = 0;  // the address block the length must cover
  if (proxy) {
    switch (family) {
      case 0x00:  // UNSPEC: addresses (if any) ignored
        break;
      case 0x11:  // TCP over IPv4
        block = 12;
        break;
      case 0x21:  // TCP over IPv6
        block = 36;
        break;
      case 0x12:
      case 0x22:
        return invalid("v2: a UDP client (SMTP is TCP)");
      case 0x31:
      case 0x32:
        return invalid("v2: an AF_UNIX client (SMTP over TCP expected)");
      default:
        return invalid("v2: unknown address family or protocol");
    }
  }

  if (in.size() < kProxyV2Fixed) return {};
  const size_t length = u16_at(in, 14);
  if (length > kMaxV2Length) return invalid(kTooLong);
  if (length < block) {
    return invalid(block == 12 ? "v2: length too short for an IPv4 address block"
                               : "v2: length too short for an IPv6 address block");
  }
  const size_t total = kProxyV2Fixed + length;
  if (in.size() < total) return {};

  ProxyHeader h;
  h.version = 2;
  if (block == 0) {
    h.kind = ProxyHeader::Kind::Local;  // LOCAL, or PROXY with UNSPEC
    return done(total, h);
  }
  h.kind = ProxyHeader::Kind::Proxied;
  const size_t a = kProxyV2Fixed;
  if (block == 12) {
    h.source = IpAddress::v4(u32_at(in, a));
    h.destination = IpAddress::v4(u32_at(in, a + 4));
    h.source_port = u16_at(in, a + 8);
    h.destination_port = u16_at(in, a + 10);
  } else {
    h.source = IpAddress::v6(v6_bytes(in, a));
    h.destination = IpAddress::v6(v6_bytes(in, a + 16));
    h.source_port = u16_at(in, a + 32);
    h.destination_port = u16_at(in, a + 34);
  }
  return done(total, h);
}

}  // namespace

ProxyParse parse_proxy_header(std::string_view received) {
  if (received.empty()) return {};
  if (received[0] == kV1Prefix[0]) return parse_v1(received);
  if (static_cast<uint8_t>(received[0]) == kV2Signature[0]) {
    return parse_v2(received.substr(0, kMaxProxyHeader));
  }
  return invalid(kNotProxy);
}

}  // namespace smtpgate::smtp
