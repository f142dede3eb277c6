#include "policy/replies.h"

#include <string>
#include <utility>

namespace smtpgate::replies {
namespace {

Reply make(int code, std::string text, bool close = false) {
  return Reply{code, std::move(text), close};
}

}  // namespace

// The texts are SPEC §3's table; placeholders (<hostname>, <login>) are substituted
// without the angle brackets, "<LF>" is literal.

Reply access_denied(std::string_view hostname) {
  return make(554, "5.7.1 " + std::string(hostname) + " access denied", true);
}
Reply too_many_connections() {
  return make(421, "4.7.0 too many connections, try later", true);
}
Reply must_starttls() {
  return make(530, "5.7.0 Must issue a STARTTLS command first");
}
Reply auth_invalid() {
  return make(535, "5.7.8 Authentication credentials invalid");
}
Reply auth_not_available() {
  return make(502, "5.5.1 AUTH not available");
}
Reply auth_required() {
  return make(530, "5.7.0 Authentication required");
}
Reply sender_not_owned(std::string_view login) {
  return make(553, "5.7.1 Sender address rejected: not owned by user " + std::string(login));
}
Reply local_sender_needs_auth() {
  return make(553, "5.7.1 Sender address rejected: authentication required for local domains");
}
Reply relay_denied() {
  return make(554, "5.7.1 Relay access denied");
}
Reply rate_limited() {
  return make(450, "4.7.1 rate limit exceeded, try later");
}
Reply connection_rate() {
  return make(421, "4.7.0 too many connections, try later", true);
}
Reply too_many_recipients() {
  return make(452, "4.5.3 Too many recipients");
}
Reply backend_unavailable() {
  return make(421, "4.4.1 backend unavailable, try later");
}
Reply auth_backend_unavailable() {
  return make(454, "4.7.0 Temporary authentication failure");
}
Reply message_too_big() {
  return make(552, "5.3.4 Message size exceeds fixed limit");
}
Reply line_too_long() {
  return make(500, "5.5.2 Line too long");
}
Reply bare_lf() {
  return make(521, "5.5.2 bare <LF> received", true);
}
Reply idle_timeout(std::string_view hostname) {
  return make(421, "4.4.2 " + std::string(hostname) + " timeout", true);
}

Reply sync_error() {
  return make(554, "5.5.0 Error: SMTP protocol synchronization", true);
}
Reply too_many_junk() {
  return make(421, "4.7.0 Error: too many junk commands", true);
}
Reply bdat_refused() {
  return make(502, "5.5.1 Error: command not implemented", true);
}
Reply smtputf8_required() {
  return make(553, "5.6.7 Must declare SMTPUTF8 to send unicode address");
}
Reply backend_protocol_error() {
  return make(451, "4.3.0 Error: backend protocol error");
}

}  // namespace smtpgate::replies
