// HAProxy PROXY protocol headers (v1 text, v2 binary) that tell the backend the client.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "policy/ip_address.h"

namespace smtpgate {

struct Endpoint {
  IpAddress ip;
  uint16_t port = 0;
};

// Source = the client, destination = the gateway address the client connected to. When the
// two families differ (IPv4 client on an IPv6 listener is already IPv4), both are written
// in the client's family.
std::string proxy_v1_header(const Endpoint& src, const Endpoint& dst);
std::string proxy_v2_header(const Endpoint& src, const Endpoint& dst);

// "1.2.3.4:25" or "[2001:db8::1]:25"
std::string format_endpoint(const Endpoint& e);
// A socket address (getpeername, getsockname); IPv4-mapped IPv6 becomes plain IPv4.
Endpoint endpoint_of(const sockaddr_storage& ss);

}  // namespace smtpgate
