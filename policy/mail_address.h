// Reverse-/forward-paths of MAIL FROM and RCPT TO, as far as policy needs them.
#pragma once

#include <string>
#include <string_view>

#include "policy/result.h"

namespace smtpgate {

struct MailPath {
  bool null = false;   // "<>" (only valid as a sender)
  std::string local;   // local part as written (quoted form kept, quotes removed for tests)
  std::string domain;  // as written; compare case-insensitively
  bool has_source_route = false;  // "<@a,@b:user@dom>": judged by user@dom

  std::string address() const;  // "local@domain", or "" for the null path
};

// Parses the text between '<' and '>' (brackets excluded): "", "user@dom",
// "\"quoted local\"@dom", "@a,@b:user@dom". A path without '@' (e.g. "postmaster")
// is accepted with an empty domain.
Result<MailPath> parse_mail_path(std::string_view inner);

}  // namespace smtpgate
