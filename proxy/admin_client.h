// The client side of the admin endpoint, for `smtpgate bans` (a CLI, so blocking I/O is fine).
#pragma once

#include <string>

namespace smtpgate {

struct AdminReply {
  int status = 0;  // the HTTP status, 0 when none came
  std::string body;
  std::string error;  // could not ask (bad address, connect or write failed)
};

// Sends one HTTP/1.0 request to host:port and returns the answer.
AdminReply admin_call(const std::string& address, const std::string& method,
                      const std::string& path);

// Sends one HTTP/1.0 request to host:port ("127.0.0.1:9025" or "[::1]:9025"), prints the
// body on stdout (stderr for errors). Returns 0 for a 2xx answer, 1 otherwise.
int admin_request(const std::string& address, const std::string& method, const std::string& path);

}  // namespace smtpgate
