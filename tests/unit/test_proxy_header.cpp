// The inbound PROXY protocol header parser (proxy/smtp/proxy_header.h): v1 and v2 as the
// spec has them, strictly; decided at the earliest byte, the same however the bytes arrive;
// and what the gateway's own writers (proxy/proxy_protocol.h) send parses back.
#include <catch2/catch.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/proxy_header_property.h"
#include "proxy/proxy_protocol.h"
#include "proxy/smtp/proxy_header.h"

using smtpgate::Endpoint;
using smtpgate::IpAddress;
using smtpgate::proxy_v1_header;
using smtpgate::proxy_v2_header;
using smtpgate::fuzz::check_proxy_header;
using smtpgate::smtp::kMaxProxyHeader;
using smtpgate::smtp::kMaxProxyV1Line;
using smtpgate::smtp::parse_proxy_header;
using smtpgate::smtp::ProxyHeader;
using smtpgate::smtp::ProxyParse;

namespace {

using namespace std::string_literals;
using Status = ProxyParse::Status;
using Kind = ProxyHeader::Kind;

std::string show(std::string_view s) {
  std::string o;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\r') {
      o += "\\r";
    } else if (c == '\n') {
      o += "\\n";
    } else if (u < 0x20 || u > 0x7e) {
      o += "\\x";
      o += "0123456789abcdef"[u >> 4];
      o += "0123456789abcdef"[u & 15];
    } else {
      o += c;
    }
  }
  return o;
}

IpAddress ip(std::string_view text) {
  const auto a = IpAddress::parse(text);
  REQUIRE(a);
  return *a;
}

const std::string kSig("\r\n\r\n\0\r\nQUIT\n", 12);

// A v2 header: signature, version/command, family/protocol, `length` (the body's size unless
// given), body.
std::string v2(uint8_t ver_cmd, uint8_t family, std::string_view body,
               std::optional<uint16_t> length = std::nullopt) {
  const uint16_t n = length ? *length : static_cast<uint16_t>(body.size());
  std::string h = kSig;
  h += static_cast<char>(ver_cmd);
  h += static_cast<char>(family);
  h += static_cast<char>(n >> 8);
  h += static_cast<char>(n & 0xff);
  h += body;
  return h;
}

std::string bytes(std::initializer_list<int> list) {
  std::string s;
  for (int b : list) s += static_cast<char>(b);
  return s;
}

// 192.0.2.1:56324 -> 198.51.100.2:25
const std::string kV4Block = bytes({192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0, 25});
// 2001:db8::1:56324 -> 2001:db8::2:587
const std::string kV6Block =
    bytes({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,    1,    0x20, 0x01,
           0x0d, 0xb8, 0,    0,    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0xdc, 0x04, 0x02, 0x4b});
// TLVs as haproxy sends them: ALPN "smtp", AUTHORITY "mx.example", a unique id, an SSL TLV
// (client flags, verify, a version sub-TLV), a NOOP.
const std::string kTlvs = bytes({0x01, 0, 4}) + "smtp" + bytes({0x02, 0, 10}) + "mx.example" +
                          bytes({0x05, 0, 3, 0xaa, 0xbb, 0xcc}) +
                          bytes({0x20, 0, 13, 0x01, 0, 0, 0, 0, 0x21, 0, 5}) + "TLSv1" +
                          bytes({0x04, 0, 2, 0, 0});

ProxyHeader proxied(int version, std::string_view src, uint16_t sport, std::string_view dst,
                    uint16_t dport) {
  ProxyHeader h;
  h.kind = Kind::Proxied;
  h.source = ip(src);
  h.source_port = sport;
  h.destination = ip(dst);
  h.destination_port = dport;
  h.version = static_cast<uint8_t>(version);
  return h;
}

ProxyHeader local(int version) {
  ProxyHeader h;
  h.version = static_cast<uint8_t>(version);
  return h;
}

// Every prefix of `input` parsed: NeedMore up to `at` bytes (exclusive), then `expected`.
void expect_decided_at(std::string_view input, size_t at, const ProxyParse& expected) {
  INFO("input: " << show(input));
  for (size_t n = 0; n <= input.size(); ++n) {
    const ProxyParse r = parse_proxy_header(input.substr(0, n));
    INFO("prefix " << n << ": " << smtpgate::fuzz::describe(r));
    if (n < at) {
      REQUIRE(r.status == Status::NeedMore);
    } else {
      REQUIRE(r.status == expected.status);
      REQUIRE(r.consumed == expected.consumed);
      REQUIRE(r.header == expected.header);
      REQUIRE(r.error == expected.error);
    }
  }
  CHECK(check_proxy_header(input) == "");
}

// `header` followed by pipelined SMTP bytes: Done at exactly header.size(), whatever follows.
void expect_done(std::string_view header, const ProxyHeader& h) {
  ProxyParse want;
  want.status = Status::Done;
  want.consumed = header.size();
  want.header = h;
  expect_decided_at(header, header.size(), want);
  const std::string pipelined = std::string(header) + "EHLO client.example\r\nMAIL FROM:<a@b>\r\n";
  expect_decided_at(pipelined, header.size(), want);
  // The bytes after the header, even another header, are left alone.
  expect_decided_at(std::string(header) + std::string(header), header.size(), want);
}

// Invalid once the first `at` bytes are there (NeedMore before); returns the error.
std::string expect_invalid_at(std::string_view input, size_t at) {
  const ProxyParse r = parse_proxy_header(input);
  INFO("input: " << show(input) << " -> " << smtpgate::fuzz::describe(r));
  REQUIRE(r.status == Status::Invalid);
  expect_decided_at(input, at, r);
  return r.error;
}

std::string expect_invalid(std::string_view input) {
  const ProxyParse r = parse_proxy_header(input);
  INFO("input: " << show(input) << " -> " << smtpgate::fuzz::describe(r));
  REQUIRE(r.status == Status::Invalid);
  CHECK(r.consumed == 0);
  CHECK(!r.error.empty());
  CHECK(check_proxy_header(input) == "");
  return r.error;
}

}  // namespace

// ---------------------------------------------------------------- v1

TEST_CASE("proxy header v1: TCP4", "[proxy_header]") {
  expect_done("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
              proxied(1, "192.0.2.1", 56324, "198.51.100.2", 25));
  expect_done("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
              proxied(1, "0.0.0.0", 0, "255.255.255.255", 65535));
  // The spec's longest TCP4 line, 56 bytes.
  const std::string longest = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
  CHECK(longest.size() == 56);
  expect_done(longest, proxied(1, "255.255.255.255", 65535, "255.255.255.255", 65535));
}

TEST_CASE("proxy header v1: TCP6", "[proxy_header]") {
  expect_done("PROXY TCP6 2001:db8::1 2001:db8::2 56324 587\r\n",
              proxied(1, "2001:db8::1", 56324, "2001:db8::2", 587));
  expect_done("PROXY TCP6 2001:DB8::A ::1 1 2\r\n", proxied(1, "2001:db8::a", 1, "::1", 2));
  // The spec's longest TCP6 line, 104 bytes.
  const std::string f8 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const std::string longest = "PROXY TCP6 " + f8 + " " + f8 + " 65535 65535\r\n";
  CHECK(longest.size() == 104);
  expect_done(longest, proxied(1, f8, 65535, f8, 65535));
  // IPv4-mapped (inet_ntop's mixed form, as haproxy writes it) is stored as IPv4, as
  // everywhere in the gateway; the destination stays IPv6.
  const ProxyParse r = parse_proxy_header("PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n");
  REQUIRE(r.status == Status::Done);
  CHECK(r.header.source.is_v4());
  CHECK(r.header.source.to_string() == "192.0.2.1");
  CHECK(r.header.destination.is_v6());
  CHECK(check_proxy_header("PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n") == "");
}

TEST_CASE("proxy header v1: UNKNOWN is Local, the rest of its line ignored", "[proxy_header]") {
  expect_done("PROXY UNKNOWN\r\n", local(1));
  expect_done("PROXY UNKNOWN 192.0.2.1 198.51.100.2 1 2\r\n", local(1));
  expect_done("PROXY UNKNOWN \x01\xff\0 anything  at all\r\n"s, local(1));
  expect_done("PROXY UNKNOWN \r\n", local(1));
  // The spec's worst case: 107 bytes, CRLF included, is still a line.
  const std::string f8 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const std::string worst = "PROXY UNKNOWN " + f8 + " " + f8 + " 65535 65535\r\n";
  CHECK(worst.size() == kMaxProxyV1Line);
  expect_done(worst, local(1));
}

TEST_CASE("proxy header v1: split byte by byte and followed by SMTP", "[proxy_header]") {
  // expect_done checks every prefix; here the caller's loop as the session would run it.
  const std::string header = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n";
  const std::string stream = header + "EHLO client.example\r\n";
  std::string received;
  ProxyParse r;
  size_t calls = 0;
  for (char c : stream) {
    received += c;
    r = parse_proxy_header(received);
    ++calls;
    if (r.status != Status::NeedMore) break;
  }
  REQUIRE(r.status == Status::Done);
  CHECK(calls == header.size());
  CHECK(r.consumed == header.size());
  CHECK(received.substr(r.consumed).empty());
  // All of it at once: the SMTP bytes are what follows `consumed`.
  r = parse_proxy_header(stream);
  REQUIRE(r.status == Status::Done);
  CHECK(stream.substr(r.consumed) == "EHLO client.example\r\n");
}

TEST_CASE("proxy header: not a PROXY header at all", "[proxy_header]") {
  CHECK(parse_proxy_header("").status == Status::NeedMore);
  // Decided at the first byte that no header can start with.
  const std::string e = expect_invalid_at("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1);
  CHECK(e == "neither a PROXY v1 line nor a v2 signature");
  expect_invalid_at("EHLO x\r\n", 1);
  expect_invalid_at("ehlo x\r\n", 1);
  expect_invalid_at("\x16\x03\x01\x02\x00"s, 1);  // a TLS ClientHello
  expect_invalid_at("POST / HTTP/1.1\r\n", 2);
  expect_invalid_at("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 1);
  expect_invalid_at("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", 6);
  expect_invalid_at("\r\n\r\nEHLO x\r\n", 5);  // a v2 signature's start, then not
  expect_invalid_at("\n", 1);
  expect_invalid_at(" PROXY UNKNOWN\r\n", 1);
}

TEST_CASE("proxy header v1: malformed lines", "[proxy_header]") {
  // Two spaces, wherever: decided at the second one.
  CHECK(expect_invalid_at("PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n", 22) ==
        "v1: more than one space between fields");
  expect_invalid_at("PROXY  TCP4 192.0.2.1 198.51.100.2 1 2\r\n", 7);
  expect_invalid_at("PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n", 12);
  expect_invalid_at("PROXY TCP4 192.0.2.1 198.51.100.2  1 2\r\n", 35);
  expect_invalid_at("PROXY TCP4 192.0.2.1 198.51.100.2 1  2\r\n", 37);
  // A trailing space, too many or too few fields.
  CHECK(expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n") ==
        "v1: more than two addresses and two ports");
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n");
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n");
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2\r\n");
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 \r\n");
  expect_invalid("PROXY TCP4\r\n");
  expect_invalid("PROXY TCP4 \r\n");
  expect_invalid("PROXY\r\n");
  expect_invalid("PROXY \r\n");
  // Protocols: only TCP4, TCP6, UNKNOWN, upper case, whole.
  CHECK(expect_invalid_at("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 10) ==
        "v1: the protocol is not TCP4, TCP6 or UNKNOWN");
  expect_invalid_at("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", 8);  // "U" may be UNKNOWN
  expect_invalid_at("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 7);
  expect_invalid_at("PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n", 11);
  expect_invalid_at("PROXY UNKNOWNX\r\n", 14);
  expect_invalid("PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n");
  expect_invalid("PROXY UNKNOW\r\n");
}

TEST_CASE("proxy header v1: addresses must be of the declared family", "[proxy_header]") {
  // An IPv6 address under TCP4: decided at the ':' (or the digit that makes a number > 255).
  CHECK(expect_invalid_at("PROXY TCP4 10::1 198.51.100.2 1 2\r\n", 14) ==
        "v1: a TCP4 address is not a dotted quad");
  expect_invalid_at("PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n", 15);  // 2001 > 255
  expect_invalid_at("PROXY TCP4 ::ffff:192.0.2.1 198.51.100.2 1 2\r\n", 12);
  // A dotted quad under TCP6: decided at the space after it.
  CHECK(expect_invalid_at("PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n", 21) ==
        "v1: a TCP6 address is not an IPv6 address");
  expect_invalid("PROXY TCP6 2001:db8::1 198.51.100.2 1 2\r\n");
  // Not addresses at all.
  expect_invalid("PROXY TCP4 192.0.2 198.51.100.2 1 2\r\n");
  expect_invalid("PROXY TCP4 192.0.2.1.5 198.51.100.2 1 2\r\n");
  expect_invalid("PROXY TCP4 192..2.1 198.51.100.2 1 2\r\n");
  expect_invalid("PROXY TCP4 .192.0.2 198.51.100.2 1 2\r\n");
  expect_invalid("PROXY TCP4 192.0.2. 198.51.100.2 1 2\r\n");
  CHECK(expect_invalid("PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n") ==
        "v1: a TCP4 address has a number above 255");
  CHECK(expect_invalid("PROXY TCP4 192.0.2.01 198.51.100.2 1 2\r\n") ==
        "v1: a TCP4 address has a number with a leading zero");
  expect_invalid("PROXY TCP4 localhost 198.51.100.2 1 2\r\n");
  expect_invalid("PROXY TCP6 2001:db8:::1 ::1 1 2\r\n");
  expect_invalid("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n");
  expect_invalid("PROXY TCP6 [2001:db8::1] ::1 1 2\r\n");
  expect_invalid("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n");
  expect_invalid("PROXY TCP6 12345::1 ::1 1 2\r\n");
  CHECK(expect_invalid("PROXY TCP6 " + std::string(46, ':') + " ::1 1 2\r\n") ==
        "v1: a TCP6 address is too long");
}

TEST_CASE("proxy header v1: ports", "[proxy_header]") {
  CHECK(expect_invalid_at("PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n", 39) ==
        "v1: a port is above 65535");
  expect_invalid_at("PROXY TCP4 192.0.2.1 198.51.100.2 25 65536\r\n", 42);
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 25 100000\r\n");
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 25 99999999999999999999\r\n");
  // No leading zeros (the spec forbids them); "0" itself is a port.
  CHECK(expect_invalid_at("PROXY TCP4 192.0.2.1 198.51.100.2 025 25\r\n", 36) ==
        "v1: a port has a leading zero");
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 00 25\r\n");
  expect_done("PROXY TCP4 192.0.2.1 198.51.100.2 0 0\r\n",
              proxied(1, "192.0.2.1", 0, "198.51.100.2", 0));
  // Digits only.
  CHECK(expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 +25 25\r\n") ==
        "v1: a port is not a decimal number");
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n");
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 0x19 25\r\n");
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 25 smtp\r\n");
  expect_invalid("PROXY TCP4 192.0.2.1 198.51.100.2 25\t25\r\n");
}

TEST_CASE("proxy header v1: the line ends in CRLF within 107 bytes", "[proxy_header]") {
  // A bare LF, anywhere: decided at the LF.
  CHECK(expect_invalid_at("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\nEHLO x\r\n", 43) ==
        "v1: bare LF (the line must end in CRLF)");
  expect_invalid_at("PROXY UNKNOWN\n", 14);
  expect_invalid_at("PROXY UNKNOWN foo\nbar\r\n", 18);
  expect_invalid_at("PROXY TCP4\n", 11);
  expect_invalid_at("PROXY TCP4 192.0.2.1\n", 21);
  // A CR not followed by LF.
  CHECK(expect_invalid_at("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\r\n", 44) ==
        "v1: CR not followed by LF");
  expect_invalid_at("PROXY UNKNOWN\rx\r\n", 15);
  expect_invalid_at("PROXY UNKNOWN foo\rbar\r\n", 19);
  // No CRLF within 107 bytes: NeedMore up to 106 bytes, Invalid at 107.
  const std::string longline = "PROXY UNKNOWN " + std::string(200, 'x') + "\r\n";
  CHECK(expect_invalid_at(longline, kMaxProxyV1Line) == "v1: no CRLF within 107 bytes");
  // The CR as the 107th byte: its LF would be the 108th.
  const std::string cr107 = "PROXY UNKNOWN " + std::string(92, 'x') + "\r\n";
  CHECK(cr107.size() == kMaxProxyV1Line + 1);
  expect_invalid_at(cr107, kMaxProxyV1Line);
  // Mixed-notation TCP6 addresses may make a valid-looking line too long.
  const std::string m = "0000:0000:0000:0000:0000:ffff:192.168.100.200";
  CHECK(m.size() == 45);
  expect_invalid_at("PROXY TCP6 " + m + " " + m + " 65535 65535\r\n", kMaxProxyV1Line);
  // Undecided before: a complete-looking line without its CRLF.
  CHECK(parse_proxy_header("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25").status ==
        Status::NeedMore);
  CHECK(parse_proxy_header("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r").status ==
        Status::NeedMore);
  CHECK(parse_proxy_header("P").status == Status::NeedMore);
}

// ---------------------------------------------------------------- v2

TEST_CASE("proxy header v2: TCP4 and TCP6, with and without TLVs", "[proxy_header]") {
  const ProxyHeader h4 = proxied(2, "192.0.2.1", 56324, "198.51.100.2", 25);
  const ProxyHeader h6 = proxied(2, "2001:db8::1", 56324, "2001:db8::2", 587);
  expect_done(v2(0x21, 0x11, kV4Block), h4);
  expect_done(v2(0x21, 0x21, kV6Block), h6);
  // TLVs are skipped, not read, but belong to the header.
  expect_done(v2(0x21, 0x11, kV4Block + kTlvs), h4);
  expect_done(v2(0x21, 0x21, kV6Block + kTlvs), h6);
  // Even bytes that are no TLV at all: the length says where the header ends.
  expect_done(v2(0x21, 0x11, kV4Block + "\xff"), h4);
  // IPv4-mapped IPv6 addresses are stored as IPv4.
  std::string mapped = kV6Block;
  mapped.replace(0, 16, bytes({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1}));
  const ProxyParse r = parse_proxy_header(v2(0x21, 0x21, mapped));
  REQUIRE(r.status == Status::Done);
  CHECK(r.header.source == ip("192.0.2.1"));
  CHECK(r.header.destination == ip("2001:db8::2"));
}

TEST_CASE("proxy header v2: LOCAL and UNSPEC are Local", "[proxy_header]") {
  expect_done(v2(0x20, 0x00, ""), local(2));
  // LOCAL: the block is skipped whatever its family and length say.
  expect_done(v2(0x20, 0x11, kV4Block), local(2));
  expect_done(v2(0x20, 0x21, kV6Block + kTlvs), local(2));
  expect_done(v2(0x20, 0x12, "x"), local(2));
  expect_done(v2(0x20, 0xff, ""), local(2));
  expect_done(v2(0x20, 0x11, ""), local(2));  // LOCAL with an IPv4 family and no addresses
  // PROXY with AF_UNSPEC: the receiver must ignore the address information.
  expect_done(v2(0x21, 0x00, ""), local(2));
  expect_done(v2(0x21, 0x00, kV4Block + kTlvs), local(2));
}

TEST_CASE("proxy header v2: split byte by byte and followed by SMTP", "[proxy_header]") {
  const std::string header = v2(0x21, 0x21, kV6Block + kTlvs);
  const std::string stream = header + "EHLO client.example\r\n";
  std::string received;
  ProxyParse r;
  size_t calls = 0;
  for (char c : stream) {
    received += c;
    r = parse_proxy_header(received);
    ++calls;
    if (r.status != Status::NeedMore) break;
  }
  REQUIRE(r.status == Status::Done);
  CHECK(calls == header.size());
  CHECK(r.consumed == header.size());
  r = parse_proxy_header(stream);
  REQUIRE(r.status == Status::Done);
  CHECK(stream.substr(r.consumed) == "EHLO client.example\r\n");
}

TEST_CASE("proxy header v2: malformed headers", "[proxy_header]") {
  // The version nibble must be 2; decided at the 13th byte.
  CHECK(expect_invalid_at(v2(0x11, 0x11, kV4Block), 13) == "v2: the version is not 2");
  expect_invalid_at(v2(0x31, 0x11, kV4Block), 13);
  expect_invalid_at(v2(0x01, 0x11, kV4Block), 13);
  // Commands other than LOCAL and PROXY.
  CHECK(expect_invalid_at(v2(0x22, 0x11, kV4Block), 13) ==
        "v2: the command is neither LOCAL nor PROXY");
  expect_invalid_at(v2(0x2f, 0x11, kV4Block), 13);
  // UDP, AF_UNIX and unknown families: decided at the 14th byte.
  CHECK(expect_invalid_at(v2(0x21, 0x12, kV4Block), 14) == "v2: a UDP client (SMTP is TCP)");
  expect_invalid_at(v2(0x21, 0x22, kV6Block), 14);
  CHECK(expect_invalid_at(v2(0x21, 0x31, std::string(216, 'u')), 14) ==
        "v2: an AF_UNIX client (SMTP over TCP expected)");
  expect_invalid_at(v2(0x21, 0x32, std::string(216, 'u')), 14);
  for (int fam : {0x01, 0x02, 0x10, 0x13, 0x20, 0x30, 0x41, 0xff}) {
    CHECK(expect_invalid_at(v2(0x21, static_cast<uint8_t>(fam), kV4Block), 14) ==
          "v2: unknown address family or protocol");
  }
  // A length too short for the family's address block: decided at the 16th byte.
  CHECK(expect_invalid_at(v2(0x21, 0x11, kV4Block.substr(0, 11)), 16) ==
        "v2: length too short for an IPv4 address block");
  expect_invalid_at(v2(0x21, 0x11, ""), 16);
  CHECK(expect_invalid_at(v2(0x21, 0x21, kV6Block.substr(0, 35)), 16) ==
        "v2: length too short for an IPv6 address block");
  expect_invalid_at(v2(0x21, 0x21, kV4Block), 16);  // an IPv4 block under IPv6
  // A wrong signature byte, anywhere in the 12.
  for (size_t i = 1; i < 12; ++i) {
    std::string h = v2(0x21, 0x11, kV4Block);
    h[i] = 'X';
    expect_invalid_at(h, i + 1);
  }
}

TEST_CASE("proxy header v2: the length is capped at kMaxProxyHeader", "[proxy_header]") {
  const size_t max_length = kMaxProxyHeader - 16;
  // The longest accepted: NeedMore up to the last byte, Done at kMaxProxyHeader.
  const std::string longest = v2(0x21, 0x11, kV4Block + std::string(max_length - 12, 'T'));
  CHECK(longest.size() == kMaxProxyHeader);
  expect_done(longest, proxied(2, "192.0.2.1", 56324, "198.51.100.2", 25));
  expect_done(v2(0x20, 0x00, std::string(max_length, 'T')), local(2));
  // One more: Invalid as soon as the length is read, for every command and family.
  const auto too_long = static_cast<uint16_t>(max_length + 1);
  CHECK(expect_invalid_at(v2(0x21, 0x11, kV4Block, too_long), 16) ==
        "v2: header longer than 4096 bytes");
  expect_invalid_at(v2(0x21, 0x21, kV6Block, too_long), 16);
  expect_invalid_at(v2(0x20, 0x00, "", too_long), 16);
  expect_invalid_at(v2(0x21, 0x00, "", 0xffff), 16);
  // Incomplete: NeedMore while short of 16 + length, never at kMaxProxyHeader bytes.
  const std::string partial = longest.substr(0, kMaxProxyHeader - 1);
  CHECK(parse_proxy_header(partial).status == Status::NeedMore);
  CHECK(parse_proxy_header(kSig.substr(0, 5)).status == Status::NeedMore);
  CHECK(parse_proxy_header(v2(0x21, 0x11, kV4Block).substr(0, 15)).status == Status::NeedMore);
}

// ---------------------------------------------------------------- errors and round trips

TEST_CASE("proxy header: errors never carry the input's bytes", "[proxy_header]") {
  const std::vector<std::string> inputs = {
      "SECRET\x01\x1b[31m\r\n"s,
      "PROXY SECRET\x1b 1.2.3.4\r\n"s,
      "PROXY TCP4 1.2.3.4 5.6.7.8 SECRET\r\n"s,
      "PROXY TCP6 SECRET ::1 1 2\r\n"s,
      "PROXY UNKNOWN SECRET\x1b\x07" + std::string(200, 'S'),
      v2(0x21, 0x11, "SECRET\x1b"),
      v2(0x21, 0x99, "SECRET\x1b"),
  };
  for (const auto& in : inputs) {
    const ProxyParse r = parse_proxy_header(in);
    INFO(show(in) << " -> " << r.error);
    REQUIRE(r.status == Status::Invalid);
    CHECK(r.error.find("SECRET") == std::string::npos);
    for (char c : r.error) CHECK((c >= 0x20 && c <= 0x7e));
    CHECK(check_proxy_header(in) == "");
  }
}

TEST_CASE("proxy header: round trip with the gateway's own writers", "[proxy_header]") {
  struct Case {
    const char* src;
    uint16_t sport;
    const char* dst;
    uint16_t dport;
  };
  const Case cases[] = {
      {"192.0.2.1", 56324, "198.51.100.2", 25},
      {"0.0.0.0", 0, "255.255.255.255", 65535},
      {"2001:db8::1", 56324, "2001:db8::2", 587},
      {"::", 0, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535},
      {"2001:db8:0:1:1:1:1:1", 1, "::1", 465},
      {"fe80::1", 2, "2001:db8::", 3},
  };
  for (const Case& c : cases) {
    const Endpoint src{ip(c.src), c.sport};
    const Endpoint dst{ip(c.dst), c.dport};
    for (int version : {1, 2}) {
      const std::string wire = version == 1 ? proxy_v1_header(src, dst) : proxy_v2_header(src, dst);
      INFO("v" << version << " " << c.src << " -> " << c.dst << ": " << show(wire));
      expect_done(wire, proxied(version, c.src, c.sport, c.dst, c.dport));
    }
  }
  // Families differ (an IPv4 client on an IPv6 listener): the writers put the destination
  // as the unspecified address of the client's family; it parses back as that.
  for (int version : {1, 2}) {
    const Endpoint v4{ip("192.0.2.1"), 40000};
    const Endpoint v6{ip("2001:db8::2"), 25};
    std::string wire = version == 1 ? proxy_v1_header(v4, v6) : proxy_v2_header(v4, v6);
    expect_done(wire, proxied(version, "192.0.2.1", 40000, "0.0.0.0", 25));
    wire = version == 1 ? proxy_v1_header(v6, v4) : proxy_v2_header(v6, v4);
    expect_done(wire, proxied(version, "2001:db8::2", 25, "::", 40000));
  }
}
