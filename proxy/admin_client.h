// The client side of the admin endpoint, for `smtpgate bans` (a CLI, so blocking I/O is fine).
#pragma once

#include <string>

namespace smtpgate {

// Sends one HTTP/1.0 request to host:port ("127.0.0.1:9025" or "[::1]:9025"), prints the
// body on stdout (stderr for errors). Returns 0 for a 2xx answer, 1 otherwise.
int admin_request(const std::string& address, const std::string& method, const std::string& path);

}  // namespace smtpgate
