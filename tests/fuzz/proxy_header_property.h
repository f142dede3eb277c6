// The properties of the inbound PROXY protocol header parser (proxy/smtp/proxy_header.h) for
// any bytes a connection may start with, shared by the libFuzzer target and the seeded replay
// in the unit tests (so CI checks them without clang):
//
// - incremental: parse_proxy_header is called with every byte read so far, so how the bytes
//   were cut into reads must not matter. Every prefix of the input is parsed: those shorter
//   than the first one that decides (Done or Invalid) are NeedMore, and that one and every
//   longer prefix give exactly the whole input's result (status, consumed, header, error).
//   That covers every split into chunks, whose calls see a subset of these prefixes.
// - a Done is decided at the header's last byte (the first deciding prefix is `consumed`
//   long), so the bytes after it, the client's first SMTP bytes, are never read as header.
// - bounds: consumed <= received.size() and <= kMaxProxyHeader; never NeedMore once
//   kMaxProxyHeader bytes are there (107 for a v1 line); an error is short printable ASCII.
// - it agrees with a reference reading (below) that looks at the whole input the plain way
//   (find the CRLF, split at spaces, inet_pton), wherever that reading can decide.
// - what it returns can be written again (v1 or v2, as the gateway's writers do toward the
//   backend) and parses back to the same endpoints.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/smtp/proxy_header.h"

namespace smtpgate::fuzz {

using smtp::kMaxProxyHeader;
using smtp::kMaxProxyV1Line;
using smtp::parse_proxy_header;
using smtp::ProxyHeader;
using smtp::ProxyParse;

// "" for Status::NeedMore etc., for messages.
inline const char* to_string(ProxyParse::Status s) {
  switch (s) {
    case ProxyParse::Status::NeedMore:
      return "NeedMore";
    case ProxyParse::Status::Done:
      return "Done";
    case ProxyParse::Status::Invalid:
      return "Invalid";
  }
  return "?";
}

// ---------------------------------------------------------------- the reference reading

// The reference's verdict: Done with consumed and header, Invalid, or nullopt when the input
// does not settle it by the plain reading (a v1 line without its CRLF yet, a v2 header
// shorter than 16 + length), where only NeedMore or Invalid may come.
struct Verdict {
  ProxyParse::Status status = ProxyParse::Status::Invalid;
  size_t consumed = 0;
  ProxyHeader header;
};

inline Verdict verdict_invalid() {
  return {};
}

inline bool reference_port(std::string_view t, uint16_t& out) {
  if (t.empty() || t.size() > 5) return false;
  for (char c : t) {
    if (c < '0' || c > '9') return false;
  }
  if (t.size() > 1 && t[0] == '0') return false;
  const unsigned long v = std::stoul(std::string(t));
  if (v > 65535) return false;
  out = static_cast<uint16_t>(v);
  return true;
}

// TCP4: what inet_pton(AF_INET) reads (glibc: exactly four numbers, no leading zeros), and no
// ':'; TCP6: what inet_pton(AF_INET6) reads, with a ':'.
inline std::optional<IpAddress> reference_address(std::string_view t, bool v6) {
  if ((t.find(':') != std::string_view::npos) != v6) return std::nullopt;
  return IpAddress::parse(t);
}

inline std::optional<Verdict> reference_v1(std::string_view in) {
  const std::string_view window = in.substr(0, kMaxProxyV1Line);
  const size_t crlf = window.find("\r\n");
  if (crlf == std::string_view::npos) {
    if (in.size() >= kMaxProxyV1Line) return verdict_invalid();
    return std::nullopt;
  }
  const std::string_view line = window.substr(0, crlf);
  if (line.find_first_of("\r\n") != std::string_view::npos) return verdict_invalid();
  if (line.substr(0, 6) != "PROXY ") return verdict_invalid();
  Verdict v;
  v.status = ProxyParse::Status::Done;
  v.consumed = crlf + 2;
  v.header.version = 1;
  if (line == "PROXY UNKNOWN" || line.substr(0, 14) == "PROXY UNKNOWN ") {
    v.header.kind = ProxyHeader::Kind::Local;
    return v;
  }
  std::vector<std::string_view> fields;
  std::string_view rest = line.substr(6);
  for (;;) {
    const size_t sp = rest.find(' ');
    fields.push_back(rest.substr(0, sp));
    if (sp == std::string_view::npos) break;
    rest.remove_prefix(sp + 1);
  }
  if (fields.size() != 5 || (fields[0] != "TCP4" && fields[0] != "TCP6")) {
    return verdict_invalid();
  }
  const bool v6 = fields[0] == "TCP6";
  const auto src = reference_address(fields[1], v6);
  const auto dst = reference_address(fields[2], v6);
  if (!src || !dst) return verdict_invalid();
  if (!reference_port(fields[3], v.header.source_port) ||
      !reference_port(fields[4], v.header.destination_port)) {
    return verdict_invalid();
  }
  v.header.kind = ProxyHeader::Kind::Proxied;
  v.header.source = *src;
  v.header.destination = *dst;
  return v;
}

inline std::optional<Verdict> reference_v2(std::string_view in) {
  static constexpr char kSig[] = "\r\n\r\n\0\r\nQUIT\n";
  const std::string_view sig(kSig, 12);
  if (in.substr(0, 12) != sig.substr(0, in.size() < 12 ? in.size() : 12)) return verdict_invalid();
  if (in.size() < 16) return std::nullopt;
  const auto u = [&](size_t i) { return static_cast<unsigned>(static_cast<uint8_t>(in[i])); };
  if ((u(12) & 0xf0) != 0x20 || (u(12) & 0x0f) > 1) return verdict_invalid();
  const bool local = (u(12) & 0x0f) == 0;
  const size_t length = u(14) * 256 + u(15);
  if (16 + length > kMaxProxyHeader) return verdict_invalid();
  Verdict v;
  v.status = ProxyParse::Status::Done;
  v.consumed = 16 + length;
  v.header.version = 2;
  v.header.kind = ProxyHeader::Kind::Local;
  if (!local && u(13) != 0x00) {
    if (u(13) != 0x11 && u(13) != 0x21) return verdict_invalid();
    const size_t n = u(13) == 0x11 ? 4 : 16;
    if (length < 2 * n + 4) return verdict_invalid();
    if (in.size() < v.consumed) return std::nullopt;
    std::array<uint8_t, 16> a{}, b{};
    for (size_t k = 0; k < n; ++k) {
      a[k] = static_cast<uint8_t>(u(16 + k));
      b[k] = static_cast<uint8_t>(u(16 + n + k));
    }
    if (n == 4) {
      v.header.source =
          IpAddress::v4(static_cast<uint32_t>(a[0]) << 24 | a[1] << 16 | a[2] << 8 | a[3]);
      v.header.destination =
          IpAddress::v4(static_cast<uint32_t>(b[0]) << 24 | b[1] << 16 | b[2] << 8 | b[3]);
    } else {
      v.header.source = IpAddress::v6(a);
      v.header.destination = IpAddress::v6(b);
    }
    v.header.source_port = static_cast<uint16_t>(u(16 + 2 * n) * 256 + u(17 + 2 * n));
    v.header.destination_port = static_cast<uint16_t>(u(18 + 2 * n) * 256 + u(19 + 2 * n));
    v.header.kind = ProxyHeader::Kind::Proxied;
  }
  if (in.size() < v.consumed) return std::nullopt;
  return v;
}

inline std::optional<Verdict> reference_proxy_header(std::string_view in) {
  if (in.empty()) return std::nullopt;
  if (in[0] == 'P') return reference_v1(in);
  if (in[0] == '\r') return reference_v2(in);
  return verdict_invalid();
}

// ---------------------------------------------------------------- writing it again

inline void put16(std::string& out, uint16_t v) {
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v & 0xff);
}

// The header as the gateway's writers (proxy/proxy_protocol.cpp) would put it, in the
// version it came in; "" when the two addresses differ in family (TCP6 with an IPv4-mapped
// address), which one header of the writers cannot say.
inline std::string rewrite(const ProxyHeader& h) {
  if (h.kind == ProxyHeader::Kind::Local) {
    if (h.version == 1) return "PROXY UNKNOWN\r\n";
    return std::string("\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", 16);
  }
  if (h.source.is_v4() != h.destination.is_v4()) return {};
  const bool v4 = h.source.is_v4();
  if (h.version == 1) {
    return std::string("PROXY ") + (v4 ? "TCP4 " : "TCP6 ") + h.source.to_string() + " " +
           h.destination.to_string() + " " + std::to_string(h.source_port) + " " +
           std::to_string(h.destination_port) + "\r\n";
  }
  std::string out("\r\n\r\n\0\r\nQUIT\n\x21", 13);
  out += static_cast<char>(v4 ? 0x11 : 0x21);
  put16(out, v4 ? 12 : 36);
  const size_t n = v4 ? 4 : 16;
  out.append(reinterpret_cast<const char*>(h.source.bytes().data()), n);
  out.append(reinterpret_cast<const char*>(h.destination.bytes().data()), n);
  put16(out, h.source_port);
  put16(out, h.destination_port);
  return out;
}

// ---------------------------------------------------------------- the property

inline std::string describe(const ProxyParse& r) {
  std::string s = to_string(r.status);
  s += " consumed=" + std::to_string(r.consumed);
  if (r.status == ProxyParse::Status::Done) {
    s += r.header.kind == ProxyHeader::Kind::Proxied ? " proxied " : " local ";
    s += r.header.source.to_string() + ":" + std::to_string(r.header.source_port) + " -> " +
         r.header.destination.to_string() + ":" + std::to_string(r.header.destination_port) + " v" +
         std::to_string(r.header.version);
  }
  if (!r.error.empty()) s += " error=" + r.error;
  return s;
}

// The checks on one result, without reference to other prefixes; "" when fine.
inline std::string check_one(std::string_view in, const ProxyParse& r) {
  using S = ProxyParse::Status;
  if (r.consumed > in.size()) return "consumed beyond the bytes received";
  if ((r.status == S::Done) != (r.consumed > 0)) return "consumed set without Done, or Done empty";
  if (r.consumed > kMaxProxyHeader) return "header longer than kMaxProxyHeader";
  if (r.status == S::NeedMore && in.size() >= kMaxProxyHeader) {
    return "NeedMore with kMaxProxyHeader bytes";
  }
  if (r.status == S::NeedMore && !in.empty() && in[0] == 'P' && in.size() >= kMaxProxyV1Line) {
    return "NeedMore with a 107-byte v1 line";
  }
  if ((r.status == S::Invalid) == r.error.empty()) return "error set without Invalid, or missing";
  if (r.error.size() > 80) return "error longer than 80 characters";
  for (char c : r.error) {
    if (c < 0x20 || c > 0x7e) return "error not printable ASCII";
  }
  if (r.status != S::Done && !(r.header == ProxyHeader{})) return "header set without Done";
  if (r.status == S::Done) {
    const ProxyHeader& h = r.header;
    if (h.version != (in[0] == 'P' ? 1 : 2)) return "wrong version";
    if (h.kind == ProxyHeader::Kind::Local &&
        !(h.source == IpAddress{} && h.destination == IpAddress{} && h.source_port == 0 &&
          h.destination_port == 0)) {
      return "addresses set on a Local header";
    }
    if (h.version == 1 && in.substr(r.consumed - 2, 2) != "\r\n") return "v1 not ended at CRLF";
  }
  return {};
}

// The whole property for one input; "" when it holds.
inline std::string check_proxy_header(std::string_view input) {
  using S = ProxyParse::Status;
  const ProxyParse whole = parse_proxy_header(input);
  if (std::string why = check_one(input, whole); !why.empty()) {
    return why + " (" + describe(whole) + ")";
  }

  // Every prefix: NeedMore, then from the first decided one on, the whole input's result.
  std::optional<size_t> decided_at;
  const size_t last = input.size() < kMaxProxyHeader + 2 ? input.size() : kMaxProxyHeader + 2;
  for (size_t n = 0; n <= last; ++n) {
    const std::string_view prefix = input.substr(0, n);
    const ProxyParse r = parse_proxy_header(prefix);
    if (std::string why = check_one(prefix, r); !why.empty()) {
      return why + " at prefix " + std::to_string(n) + " (" + describe(r) + ")";
    }
    if (!decided_at) {
      if (r.status == S::NeedMore) continue;
      decided_at = n;
    }
    if (!(r == whole)) {
      return "prefix " + std::to_string(n) + " gives " + describe(r) + ", the whole input " +
             describe(whole);
    }
  }
  if (whole.status == S::NeedMore && decided_at) return "decided on a prefix, NeedMore whole";
  if (whole.status == S::Done && decided_at != whole.consumed) {
    return "Done decided before or after the header's last byte";
  }
  if (whole.status != S::NeedMore && !decided_at) return "undecided on the whole input";

  // The reference reading.
  if (const auto ref = reference_proxy_header(input)) {
    if (ref->status != whole.status) {
      return std::string("reference says ") + to_string(ref->status) + ", parser " +
             describe(whole);
    }
    if (ref->status == S::Done &&
        (ref->consumed != whole.consumed || !(ref->header == whole.header))) {
      return "reference reads another header than " + describe(whole);
    }
  } else if (whole.status == S::Done) {
    return "Done where the reference cannot decide: " + describe(whole);
  }

  // Written again, it parses to the same.
  if (whole.status == S::Done) {
    const std::string again = rewrite(whole.header);
    if (!again.empty()) {
      const ProxyParse r = parse_proxy_header(again);
      if (r.status != S::Done || r.consumed != again.size() || !(r.header == whole.header)) {
        return "rewritten header parses as " + describe(r) + ", not as " + describe(whole);
      }
    }
  }
  return {};
}

inline std::string check_proxy_header_bytes(const uint8_t* data, size_t size) {
  return check_proxy_header(std::string_view(reinterpret_cast<const char*>(data), size));
}

}  // namespace smtpgate::fuzz
