// Reverse-/forward-paths of MAIL FROM and RCPT TO, as far as policy needs them.
#pragma once

#include <string>
#include <string_view>

#include "policy/result.h"

namespace smtpgate {

struct MailPath {
  bool null = false;              // "<>" (only valid as a sender)
  std::string local;              // local part, unquoted: "\"a b\"@x" gives `a b`; '%', '!' kept
  std::string domain;             // as written; compare case-insensitively
  bool has_source_route = false;  // "<@a,@b:user@dom>": judged by user@dom

  // "local@domain" (local re-quoted when it needs it), "postmaster", or "" for the null path.
  std::string address() const;
  void append_address(std::string& out) const;  // address() appended to `out`
};

// Parses the text between '<' and '>' (brackets excluded): "", "user@dom",
// "\"quoted local\"@dom", "@a,@b:user@dom". Of the paths without '@', only "postmaster"
// (any case, RFC 5321 4.1.1.3) is accepted, with an empty domain. Errors never echo the input.
Result<MailPath> parse_mail_path(std::string_view inner);

}  // namespace smtpgate
