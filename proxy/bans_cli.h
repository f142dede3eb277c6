// `smtpgate bans`: the admin endpoint's ban list as a table (or its JSON), manual bans.
#pragma once

#include <string>

namespace smtpgate {

// GET /bans, printed as a table (IP, until, time left, offense, reason), or the JSON as given.
int bans_list(const std::string& admin, bool json);
// POST /bans/IP?for=DURATION&reason=TEXT (duration "" = brute_force.ban).
int bans_add(const std::string& admin, const std::string& ip, const std::string& duration,
             const std::string& reason);

}  // namespace smtpgate
