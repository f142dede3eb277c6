// `smtpgate bans` and `smtpgate logins`: the admin endpoint's lists as tables (or their JSON),
// manual bans, releases.
#pragma once

#include <string>

namespace smtpgate {

// GET /bans, printed as a table (IP, until, time left, offense, reason), or the JSON as given.
int bans_list(const std::string& admin, bool json);
// POST /bans/IP?for=DURATION&reason=TEXT (duration "" = brute_force.ban).
int bans_add(const std::string& admin, const std::string& ip, const std::string& duration,
             const std::string& reason);

}  // namespace smtpgate

namespace smtpgate {

// GET /logins as a table (login, until, failures, trigger), or its JSON.
int logins_list(const std::string& admin, bool json);
// DELETE /logins/LOGIN: lifts the login's lock.
int logins_release(const std::string& admin, const std::string& login);

}  // namespace smtpgate
