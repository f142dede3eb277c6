#include "policy/replies.h"

#include <string>
#include <utility>

namespace smtpgate::replies {
namespace {

Reply make(int code, std::string text, bool close = false) {
  return Reply{code, std::move(text), close};
}

FixedReply fixed(int code, std::string text, bool close = false) {
  FixedReply f{make(code, std::move(text), close), {}};
  f.wire = wire(f.reply);
  return f;
}

}  // namespace

std::string wire(const Reply& r) {
  return r.line() + "\r\n";
}

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

Reply greeting(std::string_view hostname) {
  return make(220, std::string(hostname) + " ESMTP");
}
Reply syntax_error(std::string_view why) {
  return make(501, "5.5.4 Syntax error: " + std::string(why));
}
const FixedReply& backend_unavailable() {
  static const FixedReply r = fixed(421, "4.4.1 backend unavailable, try later", true);
  return r;
}
const FixedReply& auth_backend_unavailable() {
  static const FixedReply r = fixed(454, "4.7.0 Temporary authentication failure");
  return r;
}
const FixedReply& account_suspended() {
  static const FixedReply r = fixed(451, "4.7.1 Account suspended, contact the administrator");
  return r;
}
const FixedReply& account_suspended_auth() {
  static const FixedReply r = fixed(454, "4.7.0 Account suspended, contact the administrator");
  return r;
}
const FixedReply& backend_protocol_error() {
  static const FixedReply r = fixed(451, "4.3.0 Error: backend protocol error");
  return r;
}
const FixedReply& ok() {
  static const FixedReply r = fixed(250, "2.0.0 Ok");
  return r;
}
const FixedReply& bye() {
  static const FixedReply r = fixed(221, "2.0.0 Bye", true);
  return r;
}
const FixedReply& help() {
  static const FixedReply r = fixed(214, "2.0.0 See RFC 5321");
  return r;
}
const FixedReply& vrfy() {
  static const FixedReply r = fixed(252, "2.0.0 Cannot VRFY user, but will accept message");
  return r;
}
const FixedReply& unknown_command() {
  static const FixedReply r = fixed(500, "5.5.1 Error: command not recognized");
  return r;
}
const FixedReply& not_implemented() {
  static const FixedReply r = fixed(502, "5.5.1 Error: command not implemented");
  return r;
}
const FixedReply& bad_sender() {
  static const FixedReply r = fixed(501, "5.1.7 Bad sender address syntax");
  return r;
}
const FixedReply& bad_recipient() {
  static const FixedReply r = fixed(501, "5.1.3 Bad recipient address syntax");
  return r;
}
const FixedReply& need_helo() {
  static const FixedReply r = fixed(503, "5.5.1 Error: send HELO/EHLO first");
  return r;
}
const FixedReply& need_mail() {
  static const FixedReply r = fixed(503, "5.5.1 Error: need MAIL command");
  return r;
}
const FixedReply& need_rcpt() {
  static const FixedReply r = fixed(503, "5.5.1 Error: need RCPT command");
  return r;
}
const FixedReply& nested_mail() {
  static const FixedReply r = fixed(503, "5.5.1 Error: nested MAIL command");
  return r;
}
const FixedReply& no_valid_recipients() {
  static const FixedReply r = fixed(554, "5.5.1 Error: no valid recipients");
  return r;
}
const FixedReply& in_transaction() {
  static const FixedReply r = fixed(503, "5.5.1 Error: MAIL transaction in progress");
  return r;
}
const FixedReply& already_authenticated() {
  static const FixedReply r = fixed(503, "5.5.1 Error: already authenticated");
  return r;
}
const FixedReply& auth_mechanism_unknown() {
  static const FixedReply r = fixed(504, "5.5.4 Unrecognized authentication type");
  return r;
}
const FixedReply& auth_aborted() {
  static const FixedReply r = fixed(501, "5.7.0 Authentication aborted");
  return r;
}
const FixedReply& auth_bad_base64() {
  static const FixedReply r = fixed(501, "5.5.2 Cannot decode response");
  return r;
}
const FixedReply& auth_malformed() {
  static const FixedReply r = fixed(501, "5.5.4 Malformed credentials");
  return r;
}
const FixedReply& auth_ok() {
  static const FixedReply r = fixed(235, "2.7.0 Authentication successful");
  return r;
}
const FixedReply& auth_plain_prompt() {
  static const FixedReply r = fixed(334, "");
  return r;
}
const FixedReply& auth_login_user_prompt() {
  static const FixedReply r = fixed(334, "VXNlcm5hbWU6");
  return r;
}
const FixedReply& auth_login_pass_prompt() {
  static const FixedReply r = fixed(334, "UGFzc3dvcmQ6");
  return r;
}
const FixedReply& tls_ready() {
  static const FixedReply r = fixed(220, "2.0.0 Ready to start TLS");
  return r;
}
const FixedReply& tls_unavailable() {
  static const FixedReply r = fixed(454, "4.7.0 TLS not available");
  return r;
}
const FixedReply& tls_active() {
  static const FixedReply r = fixed(503, "5.5.1 Error: TLS already active");
  return r;
}
const FixedReply& too_many_errors() {
  static const FixedReply r = fixed(421, "4.7.0 Error: too many errors", true);
  return r;
}
const FixedReply& shutting_down() {
  static const FixedReply r = fixed(421, "4.3.2 Service shutting down, closing connection", true);
  return r;
}

}  // namespace smtpgate::replies
