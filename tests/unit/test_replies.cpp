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
      {r::backend_unavailable(), "421 4.4.1 backend unavailable, try later", false},
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
