#include "proxy/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <array>
#include <cstring>

namespace smtpgate {
namespace {

// A destination of the other family cannot be expressed in one header: use the unspecified
// address of the client's family, which backends accept.
Endpoint same_family(const Endpoint& dst, const Endpoint& src) {
  if (dst.ip.is_v4() == src.ip.is_v4()) return dst;
  Endpoint e;
  e.ip = src.ip.is_v4() ? IpAddress::v4(0) : IpAddress::v6({});
  e.port = dst.port;
  return e;
}

}  // namespace

std::string format_endpoint(const Endpoint& e) {
  if (e.ip.is_v4()) return e.ip.to_string() + ":" + std::to_string(e.port);
  return "[" + e.ip.to_string() + "]:" + std::to_string(e.port);
}

std::string proxy_v1_header(const Endpoint& src, const Endpoint& dst_in) {
  Endpoint dst = same_family(dst_in, src);
  return std::string("PROXY ") + (src.ip.is_v4() ? "TCP4 " : "TCP6 ") + src.ip.to_string() + " " +
         dst.ip.to_string() + " " + std::to_string(src.port) + " " + std::to_string(dst.port) +
         "\r\n";
}

std::string proxy_v2_header(const Endpoint& src, const Endpoint& dst_in) {
  Endpoint dst = same_family(dst_in, src);
  static const char sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};
  std::string h(sig, sizeof sig);
  h += static_cast<char>(0x21);  // version 2, PROXY command
  bool v4 = src.ip.is_v4();
  h += static_cast<char>(v4 ? 0x11 : 0x21);  // TCP over IPv4 / IPv6
  uint16_t len = v4 ? 12 : 36;
  h += static_cast<char>(len >> 8);
  h += static_cast<char>(len & 0xff);
  size_t n = v4 ? 4 : 16;
  h.append(reinterpret_cast<const char*>(src.ip.bytes().data()), n);
  h.append(reinterpret_cast<const char*>(dst.ip.bytes().data()), n);
  h += static_cast<char>(src.port >> 8);
  h += static_cast<char>(src.port & 0xff);
  h += static_cast<char>(dst.port >> 8);
  h += static_cast<char>(dst.port & 0xff);
  return h;
}

Endpoint endpoint_of(const sockaddr_storage& ss) {
  Endpoint e;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    e.ip = IpAddress::v4(ntohl(a->sin_addr.s_addr));
    e.port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    std::array<uint8_t, 16> b{};
    std::memcpy(b.data(), &a->sin6_addr, 16);
    e.ip = IpAddress::v6(b);  // IPv4-mapped clients become plain IPv4
    e.port = ntohs(a->sin6_port);
  }
  return e;
}

}  // namespace smtpgate
