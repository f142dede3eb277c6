// The reply table against SPEC §3, text for text.
#include <catch2/catch.hpp>

#include "policy/decision.h"
#include "policy/replies.h"

using namespace smtpgate;

namespace {

struct Row {
  Reply reply;
  const char* line;
  bool close;
};

}  // namespace

TEST_CASE("replies: SPEC section 3 table", "[replies]") {
  namespace r = replies;
  const Row table[] = {
      {r::access_denied("mail.example.com"), "554 5.7.1 mail.example.com access denied", true},
      {r::too_many_connections(), "421 4.7.0 too many connections, try later", true},
      {r::must_starttls(), "530 5.7.0 Must issue a STARTTLS command first", false},
      {r::auth_invalid(), "535 5.7.8 Authentication credentials invalid", false},
      {r::auth_not_available(), "502 5.5.1 AUTH not available", false},
      {r::auth_required(), "530 5.7.0 Authentication required", false},
      {r::sender_not_owned("cms@example.com"),
       "553 5.7.1 Sender address rejected: not owned by user cms@example.com", false},
      {r::local_sender_needs_auth(),
       "553 5.7.1 Sender address rejected: authentication required for local domains", false},
      {r::relay_denied(), "554 5.7.1 Relay access denied", false},
      {r::rate_limited(), "450 4.7.1 rate limit exceeded, try later", false},
      {r::connection_rate(), "421 4.7.0 too many connections, try later", true},
      {r::too_many_recipients(), "452 4.5.3 Too many recipients", false},
      {r::backend_unavailable(), "421 4.4.1 backend unavailable, try later", true},
      {r::auth_backend_unavailable(), "454 4.7.0 Temporary authentication failure", false},
      {r::message_too_big(), "552 5.3.4 Message size exceeds fixed limit", false},
      {r::line_too_long(), "500 5.5.2 Line too long", false},
      {r::bare_lf(), "521 5.5.2 bare <LF> received", true},
      {r::idle_timeout("mail.example.com"), "421 4.4.2 mail.example.com timeout", true},
  };
  for (const Row& row : table) {
    INFO(row.line);
    CHECK(row.reply.line() == row.line);
    CHECK(row.reply.close == row.close);
    // The enhanced status code leads the text and agrees with the reply code's class.
    REQUIRE(row.reply.text.size() > 6);
    CHECK(row.reply.text[0] == static_cast<char>('0' + row.reply.code / 100));
    CHECK(row.reply.text[1] == '.');
  }
}

TEST_CASE("replies: the protocol replies, as README's table writes them", "[replies]") {
  namespace r = replies;
  const Row table[] = {
      {r::greeting("mx.example.com"), "220 mx.example.com ESMTP", false},
      {r::ok(), "250 2.0.0 Ok", false},
      {r::bye(), "221 2.0.0 Bye", true},
      {r::help(), "214 2.0.0 See RFC 5321", false},
      {r::vrfy(), "252 2.0.0 Cannot VRFY user, but will accept message", false},
      {r::not_implemented(), "502 5.5.1 Error: command not implemented", false},
      {r::bdat_refused(), "502 5.5.1 Error: command not implemented", true},
      {r::unknown_command(), "500 5.5.1 Error: command not recognized", false},
      {r::syntax_error("hostname required"), "501 5.5.4 Syntax error: hostname required", false},
      {r::bad_sender(), "501 5.1.7 Bad sender address syntax", false},
      {r::bad_recipient(), "501 5.1.3 Bad recipient address syntax", false},
      {r::need_helo(), "503 5.5.1 Error: send HELO/EHLO first", false},
      {r::need_mail(), "503 5.5.1 Error: need MAIL command", false},
      {r::need_rcpt(), "503 5.5.1 Error: need RCPT command", false},
      {r::nested_mail(), "503 5.5.1 Error: nested MAIL command", false},
      {r::no_valid_recipients(), "554 5.5.1 Error: no valid recipients", false},
      {r::already_authenticated(), "503 5.5.1 Error: already authenticated", false},
      {r::in_transaction(), "503 5.5.1 Error: MAIL transaction in progress", false},
      {r::auth_mechanism_unknown(), "504 5.5.4 Unrecognized authentication type", false},
      {r::auth_aborted(), "501 5.7.0 Authentication aborted", false},
      {r::auth_bad_base64(), "501 5.5.2 Cannot decode response", false},
      {r::auth_malformed(), "501 5.5.4 Malformed credentials", false},
      {r::auth_ok(), "235 2.7.0 Authentication successful", false},
      {r::auth_plain_prompt(), "334 ", false},
      {r::auth_login_user_prompt(), "334 VXNlcm5hbWU6", false},
      {r::auth_login_pass_prompt(), "334 UGFzc3dvcmQ6", false},
      {r::tls_ready(), "220 2.0.0 Ready to start TLS", false},
      {r::tls_unavailable(), "454 4.7.0 TLS not available", false},
      {r::tls_active(), "503 5.5.1 Error: TLS already active", false},
      {r::backend_protocol_error(), "451 4.3.0 Error: backend protocol error", false},
      {r::too_many_errors(), "421 4.7.0 Error: too many errors", true},
      {r::too_many_junk(), "421 4.7.0 Error: too many junk commands", true},
      {r::sync_error(), "554 5.5.0 Error: SMTP protocol synchronization", true},
      {r::smtputf8_required(), "553 5.6.7 Must declare SMTPUTF8 to send unicode address", false},
      {r::shutting_down(), "421 4.3.2 Service shutting down, closing connection", true},
  };
  for (const Row& row : table) {
    INFO(row.line);
    CHECK(row.reply.line() == row.line);
    CHECK(row.reply.close == row.close);
  }
  // The wire form of a fixed reply is its line and CRLF.
  CHECK(r::ok().wire == "250 2.0.0 Ok\r\n");
  CHECK(r::auth_plain_prompt().wire == "334 \r\n");
}

TEST_CASE("replies: Reply::line without a reply", "[replies]") {
  CHECK(Reply{}.line().empty());
  CHECK(Reply{250, "2.0.0 Ok", false}.line() == "250 2.0.0 Ok");
}

TEST_CASE("decision: stage and verdict names", "[replies]") {
  CHECK(to_string(Stage::Connect) == "connect");
  CHECK(to_string(Stage::Helo) == "helo");
  CHECK(to_string(Stage::StartTls) == "starttls");
  CHECK(to_string(Stage::Auth) == "auth");
  CHECK(to_string(Stage::Mail) == "mail");
  CHECK(to_string(Stage::Rcpt) == "rcpt");
  CHECK(to_string(Stage::Data) == "data");
  CHECK(to_string(Stage::Rset) == "rset");
  CHECK(to_string(Stage::Quit) == "quit");
  CHECK(to_string(Verdict::Allow) == "allow");
  CHECK(to_string(Verdict::Reject) == "reject");
  CHECK(to_string(Verdict::Tempfail) == "tempfail");
  CHECK(to_string(Verdict::Ban) == "ban");
}
