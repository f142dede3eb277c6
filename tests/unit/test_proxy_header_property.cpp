// The PROXY header fuzz target's property (tests/fuzz/proxy_header_property.h) on its seeds
// and on seeded random mutations of real headers: every prefix NeedMore until the whole
// input's result, bounds, agreement with a plain reference reading, and headers that can be
// written again.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "fuzz/proxy_header_property.h"
#include "proxy/proxy_protocol.h"

using smtpgate::Endpoint;
using smtpgate::IpAddress;
using smtpgate::fuzz::check_proxy_header;
using smtpgate::fuzz::check_proxy_header_bytes;

namespace {

std::string hex(std::string_view s) {
  std::string out;
  for (char c : s) {
    const auto b = static_cast<uint8_t>(c);
    out += "0123456789abcdef"[b >> 4];
    out += "0123456789abcdef"[b & 15];
  }
  return out;
}

// Headers to start from: the gateway's writers on random endpoints, and hand-made lines.
std::string random_header(std::mt19937& rng) {
  static const char* const kFixed[] = {
      "PROXY UNKNOWN\r\n",
      "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ::1 65535 65535\r\n",
      "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n",
      "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
      "GET / HTTP/1.1\r\n",
      "EHLO client.example\r\n",
  };
  Endpoint src, dst;
  if (rng() % 2 == 0) {
    src.ip = IpAddress::v4(static_cast<uint32_t>(rng()));
    dst.ip = IpAddress::v4(static_cast<uint32_t>(rng()));
  } else {
    std::array<uint8_t, 16> a{}, b{};
    for (size_t i = 0; i < 16; ++i) {
      // Runs of zeros, so the text has "::" often.
      a[i] = rng() % 3 == 0 ? static_cast<uint8_t>(rng()) : 0;
      b[i] = rng() % 3 == 0 ? static_cast<uint8_t>(rng()) : 0;
    }
    src.ip = IpAddress::v6(a);
    dst.ip = IpAddress::v6(b);
  }
  src.port = static_cast<uint16_t>(rng() % 3 == 0 ? rng() % 10 : rng());
  dst.port = static_cast<uint16_t>(rng() % 3 == 0 ? 25 : rng());
  switch (rng() % 5) {
    case 0:
    case 1:
      return smtpgate::proxy_v1_header(src, dst);
    case 2:
    case 3: {
      std::string h = smtpgate::proxy_v2_header(src, dst);
      if (rng() % 2 == 0) {
        // TLVs: grow the length and append bytes.
        const size_t extra = rng() % 64;
        const size_t length =
            static_cast<uint8_t>(h[14]) * 256 + static_cast<uint8_t>(h[15]) + extra;
        h[14] = static_cast<char>(length >> 8);
        h[15] = static_cast<char>(length & 0xff);
        for (size_t i = 0; i < extra; ++i) h += static_cast<char>(rng());
      }
      return h;
    }
    default:
      return kFixed[rng() % std::size(kFixed)];
  }
}

// A few random edits: flip, insert, delete, truncate; the bytes that matter most to the
// parser come more often than others.
void mutate(std::string& s, std::mt19937& rng) {
  static const char kInteresting[] = {' ',    '\r',   '\n',   ':',    '.',    '0',
                                      '9',    'f',    '\0',   'P',    'U',    '\x11',
                                      '\x12', '\x20', '\x21', '\x22', '\x31', '\xff'};
  const auto pick = [&]() -> char {
    return rng() % 2 == 0 ? kInteresting[rng() % sizeof kInteresting] : static_cast<char>(rng());
  };
  const int edits = static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !s.empty(); ++e) {
    const size_t at = rng() % s.size();
    switch (rng() % 4) {
      case 0:
        s[at] = pick();
        break;
      case 1:
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(at), pick());
        break;
      case 2:
        s.erase(at, 1);
        break;
      default:
        s.resize(at);
        break;
    }
  }
}

}  // namespace

TEST_CASE("proxy header: fuzz property on seeded random mutations of real headers",
          "[proxy_header][property]") {
  std::mt19937 rng(20260611);
  for (int n = 0; n < 4000; ++n) {
    std::string in = random_header(rng);
    mutate(in, rng);
    if (rng() % 2 == 0) in += "EHLO client.example\r\n";
    const std::string why = check_proxy_header(in);
    if (!why.empty()) FAIL_CHECK(why << " on input " << hex(in));
  }
}

TEST_CASE("proxy header: fuzz property on random bytes", "[proxy_header][property]") {
  std::mt19937 rng(20260612);
  std::string in;
  for (int n = 0; n < 2000; ++n) {
    in.resize(rng() % 200);
    for (auto& c : in) c = static_cast<char>(rng());
    if (!in.empty() && rng() % 2 == 0) in[0] = rng() % 2 == 0 ? 'P' : '\r';
    const std::string why = check_proxy_header(in);
    if (!why.empty()) FAIL_CHECK(why << " on input " << hex(in));
  }
}

TEST_CASE("proxy header: the fuzz target's seeds hold the property", "[proxy_header][property]") {
  const std::filesystem::path dir =
      std::filesystem::path(SMTPGATE_SOURCE_DIR) / "tests/fuzz/seeds/fuzz_proxy_header";
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ifstream f(e.path(), std::ios::binary);
    const std::string in((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    INFO(e.path().filename().string());
    CHECK(check_proxy_header_bytes(reinterpret_cast<const uint8_t*>(in.data()), in.size()) == "");
    ++seen;
  }
  CHECK(seen > 0);
}
