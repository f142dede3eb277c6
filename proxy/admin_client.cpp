#include "proxy/admin_client.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

namespace smtpgate {

AdminReply admin_call(const std::string& address, const std::string& method,
                      const std::string& path) {
  AdminReply out;
  std::string host, port;
  if (!address.empty() && address.front() == '[') {
    auto close = address.find("]:");
    if (close == std::string::npos) {
      out.error = "bad admin address " + address;
      return out;
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) {
      out.error = "bad admin address " + address + " (want host:port)";
      return out;
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) {
    out.error = "bad admin address " + address;
    return out;
  }
  int fd = socket(res->ai_family, SOCK_STREAM, 0);
  timeval tv{10, 0};  // every wait is bounded
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    out.error = "cannot connect to admin endpoint " + address + ": " + std::strerror(errno);
    freeaddrinfo(res);
    if (fd >= 0) close(fd);
    return out;
  }
  freeaddrinfo(res);
  std::string req = method + " " + path + " HTTP/1.0\r\nHost: " + address + "\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    out.error = std::string("write to admin endpoint: ") + std::strerror(errno);
    close(fd);
    return out;
  }
  std::string resp;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
    if (resp.size() > (16u << 20)) break;
  }
  close(fd);
  auto sp = resp.find(' ');
  out.status = sp == std::string::npos ? 0 : std::atoi(resp.c_str() + sp + 1);
  auto body_at = resp.find("\r\n\r\n");
  out.body = body_at == std::string::npos ? std::string() : resp.substr(body_at + 4);
  return out;
}

int admin_request(const std::string& address, const std::string& method, const std::string& path) {
  const AdminReply r = admin_call(address, method, path);
  if (!r.error.empty()) {
    std::cerr << r.error << "\n";
    return 1;
  }
  if (r.status >= 200 && r.status < 300) {
    std::cout << r.body;
    if (!r.body.empty() && r.body.back() != '\n') std::cout << "\n";
    return 0;
  }
  std::cerr << "admin endpoint answered " << (r.status ? std::to_string(r.status) : "nothing")
            << ": " << r.body << "\n";
  return 1;
}

}  // namespace smtpgate
