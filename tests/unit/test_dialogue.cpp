// How one SMTP session behaves, told through smtp::Dialogue with no sockets: the client's lines
// and the backend's replies go in, and every test compares the whole reply lines the client
// gets (the text of SPEC §3 and the README's "Protocol replies" table, written out literally
// here so that a change to a reply's wording shows up as a failing test).
//
// The harness plays the session shell (proxy/session.cpp): it calls on_client_input() for
// each read, hands the dialogue one line at a time while it reads commands (holding the rest,
// as the shell holds input while a reply is awaited), drops what was pipelined after
// STARTTLS, and stands in for the body filter by calling on_body_end() itself.
#include "dialogue_harness.h"

using namespace smtpgate;
using namespace smtpgate::smtp;
using namespace smtpgate::smtp::testing;
using namespace std::chrono_literals;

// ================================================================ connect

TEST_CASE("dialogue: the greeting, and the command deadline armed", "[dialogue]") {
  Harness h;
  CHECK(h.connect() == "220 mx.example.com ESMTP\r\n");
  CHECK(h.io.deadline == std::chrono::milliseconds(300s));
  CHECK_FALSE(h.io.closed);
  CHECK(h.services.decisions.empty());  // allow decisions are not reported
  CHECK(h.io.backend_opens == 0);       // the backend is opened lazily
}

TEST_CASE("dialogue: with report_allows the allow decisions are reported too, with reasons",
          "[dialogue]") {
  Options o;
  o.report_allows = true;
  Harness h(o);
  CHECK(h.connect() == "220 mx.example.com ESMTP\r\n");
  REQUIRE(h.services.decisions.size() == 1);
  CHECK(h.services.decisions[0].allowed());
  CHECK(h.services.decisions[0].rule == rules::kMxAccess);
  CHECK_THAT(h.services.decisions[0].reason, Catch::Contains("192.0.2.10"));
  h.ehlo();
  start_transaction(h);
  const Decision* rcpt = h.services.find(rules::kMxRelay);
  REQUIRE(rcpt);
  CHECK(rcpt->allowed());
  CHECK_FALSE(rcpt->reason.empty());
  CHECK(h.services.refused.empty());
}

TEST_CASE("dialogue: an IP denied at connect gets 554 and the close", "[dialogue]") {
  Harness h(Options{"mx", kDenied});
  CHECK(h.connect() == "554 5.7.1 mx.example.com access denied\r\n");
  CHECK(h.io.closed == "refused");
  REQUIRE(h.services.decisions.size() == 1);
  CHECK(h.services.decisions[0].rule == rules::kMxAccess);
  REQUIRE(h.services.refused.size() == 1);
  CHECK(h.services.refused[0].rule == rules::kMxAccess);
  CHECK(h.io.backend_opens == 0);
}

TEST_CASE("dialogue: a banned IP is refused at connect like a denied one", "[dialogue]") {
  Options o;
  o.banned = true;
  Harness h(o);
  CHECK(h.connect() == "554 5.7.1 mx.example.com access denied\r\n");
  CHECK(h.io.closed == "refused");
  REQUIRE(h.services.decisions.size() == 1);
  CHECK(h.services.decisions[0].rule == rules::kBan);
}

TEST_CASE("dialogue: an auto listener refuses only a client both access lists deny", "[dialogue]") {
  SECTION("denied by both") {
    Harness h(Options{"legacy", kDenied});
    CHECK(h.connect() == "554 5.7.1 mx.example.com access denied\r\n");
    CHECK(h.io.closed == "refused");
  }
  SECTION("denied by submission.access only") {
    Harness h(Options{"legacy", kOutsider});
    CHECK(h.connect() == "220 mx.example.com ESMTP\r\n");
    CHECK_FALSE(h.io.closed);
  }
}

TEST_CASE("dialogue: implicit TLS greets after the handshake", "[dialogue]") {
  Harness h("submissions");
  h.io.client_waiting =
      std::string("\x16\x03\x01\x02\x00\x01", 6);  // a ClientHello, not early talk
  CHECK(h.connect() == "");
  CHECK_FALSE(h.io.closed);
  CHECK(h.io.tls_starts == 1);
  h.d->on_tls_ready("TLSv1.3", "TLS_AES_256_GCM_SHA384");
  CHECK(h.io.take() == "220 mx.example.com ESMTP\r\n");
  CHECK(h.d->facts().tls);
  CHECK(h.d->tls_version() == "TLSv1.3");
  // After TLS: AUTH is offered, STARTTLS is not.
  CHECK(h.ehlo() ==
        "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
        "250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n250 SMTPUTF8\r\n");
}

TEST_CASE("dialogue: an implicit-TLS listener refuses after the handshake", "[dialogue]") {
  Harness h(Options{"submissions", kDenied});
  // RFC 8314: a plaintext refusal would reach the client as a TLS error.
  CHECK(h.connect() == "");
  CHECK(h.io.tls_starts == 1);
  CHECK_FALSE(h.io.closed);
  CHECK(h.io.deadline == std::chrono::milliseconds(10s));  // the handshake gets 10 s
  REQUIRE(h.services.refused.size() == 1);
  h.d->on_tls_ready("TLSv1.3", "TLS_AES_256_GCM_SHA384");
  CHECK(h.io.take() == "554 5.7.1 mx.example.com access denied\r\n");
  CHECK(h.io.closed == "refused");
}

TEST_CASE("dialogue: the gateway's connection caps refuse with 421 and close", "[dialogue]") {
  // What Gateway::admit hands over when connections.max_total or max_per_ip is reached.
  Decision admission;
  admission.stage = Stage::Connect;
  admission.rule = rules::kLimitsConnections;
  admission.verdict = Verdict::Reject;
  admission.reason = "50 sessions open from 192.0.2.10; connections.max_per_ip is 50";
  admission.reply = replies::too_many_connections();
  Harness h;
  CHECK(h.connect(&admission) == "421 4.7.0 too many connections, try later\r\n");
  CHECK(h.io.closed == "refused");
  REQUIRE(h.services.decisions.size() == 1);
  CHECK(h.services.decisions[0].rule == rules::kLimitsConnections);
  REQUIRE(h.services.refused.size() == 1);
  CHECK(h.services.refused[0].rule == rules::kLimitsConnections);
}

TEST_CASE("dialogue: input before the greeting is a synchronisation error", "[dialogue]") {
  SECTION("an SMTP command: 554 and close") {
    Harness h;
    h.io.client_waiting = "EHLO bot.example\r\n";
    CHECK(h.connect() == kSyncError);
    CHECK(h.io.closed == "protocol_sync");
    REQUIRE(h.services.find(rules::kProtocolSync));
    CHECK(h.services.find(rules::kProtocolSync)->stage == Stage::Connect);
  }
  SECTION("an HTTP request: no reply, just the close") {
    Harness h;
    h.io.client_waiting = "GET / HTTP/1.1\r\n";
    CHECK(h.connect() == "");
    CHECK(h.io.closed == "http_request");
    CHECK(h.services.find(rules::kProtocolHttp));
  }
}

// ================================================================ EHLO, HELO and the simple
// commands

TEST_CASE("dialogue: EHLO lists the extensions of the listener", "[dialogue]") {
  SECTION("mx: STARTTLS, never AUTH") {
    Harness h;
    h.connect();
    CHECK(h.ehlo() ==
          "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
          "250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n");
  }
  SECTION("submission: STARTTLS and AUTH") {
    Harness h("submission");
    h.connect();
    CHECK(h.ehlo() ==
          "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
          "250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 SMTPUTF8\r\n");
  }
  SECTION("submission requiring TLS: no AUTH before STARTTLS, AUTH after it") {
    Options o{"submission"};
    o.parts.submission = R"({ "access": { "default": "allow" } })";
    Harness h(o);
    h.connect();
    CHECK(h.ehlo() ==
          "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
          "250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n");
    CHECK(h.send("AUTH PLAIN " + plain_response("alice@example.com", "s3cret") + "\r\n") ==
          "530 5.7.0 Must issue a STARTTLS command first\r\n");
    CHECK(h.io.auths.empty());
    CHECK(h.send("STARTTLS\r\n") == "220 2.0.0 Ready to start TLS\r\n");
    h.d->on_tls_ready("TLSv1.3", "TLS_AES_128_GCM_SHA256");
    CHECK(h.ehlo() ==
          "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
          "250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n250 SMTPUTF8\r\n");
  }
  SECTION("a listener without TLS offers no STARTTLS") {
    Harness h("plain");
    h.connect();
    CHECK(h.ehlo() ==
          "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
          "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n");
  }
  SECTION("HELO: one line") {
    Harness h;
    h.connect();
    CHECK(h.send("HELO client.example\r\n") == "250 mx.example.com\r\n");
  }
}

TEST_CASE("dialogue: the commands the gateway answers itself", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("NOOP\r\n") == "250 2.0.0 Ok\r\n");
  CHECK(h.send("RSET\r\n") == "250 2.0.0 Ok\r\n");
  CHECK(h.send("HELP\r\n") == "214 2.0.0 See RFC 5321\r\n");
  CHECK(h.send("VRFY postmaster\r\n") == "252 2.0.0 Cannot VRFY user, but will accept message\r\n");
  CHECK(h.send("EXPN staff\r\n") == "502 5.5.1 Error: command not implemented\r\n");
  CHECK(h.send("XYZZY\r\n") == "500 5.5.1 Error: command not recognized\r\n");
  CHECK_THAT(h.send("MAIL FROM:sender@example.org\r\n"),
             Catch::StartsWith("501 5.5.4 Syntax error: ") && Catch::EndsWith("\r\n"));
  CHECK(h.io.backend_opens == 0);  // none of these costs the backend anything
  CHECK_FALSE(h.io.closed);
  CHECK(h.send("QUIT\r\n") == "221 2.0.0 Bye\r\n");
  CHECK(h.io.closed == "closed");
}

TEST_CASE("dialogue: the replies use the one table in policy/replies.h", "[dialogue]") {
  // The literal lines above are the README's; these are the same table, by name.
  CHECK(replies::ok().wire == kOk);
  CHECK(replies::sync_error().line() + "\r\n" == kSyncError);
  CHECK(replies::backend_unavailable().wire == kBackendUnavailable);
  CHECK(replies::backend_protocol_error().wire == kBackendProtocolError);
  CHECK(replies::auth_backend_unavailable().wire == kAuthTempfail);
  CHECK(replies::need_helo().wire == kNeedHelo);
  CHECK(replies::need_mail().wire == kNeedMail);
}

// ================================================================ bad sequences and syntax

TEST_CASE("dialogue: MAIL before EHLO/HELO gets 503 need HELO", "[dialogue]") {
  Harness h;
  h.connect();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == kNeedHelo);
  CHECK(h.io.backend_opens == 0);
}

TEST_CASE("dialogue: bad address syntax gets 501 5.1.7 / 5.1.3", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@>\r\n") == "501 5.1.7 Bad sender address syntax\r\n");
  start_transaction(h, "sender@example.org", {});
  CHECK(h.send("RCPT TO:<a@b@example.com>\r\n") == "501 5.1.3 Bad recipient address syntax\r\n");
  CHECK_THAT(h.send("RCPT TO:<>\r\n"), Catch::StartsWith("501 5.5.4 Syntax error: "));
  CHECK(h.io.backend.size() == 1);  // only the MAIL was forwarded
}

TEST_CASE("dialogue: 503 for nested MAIL, missing MAIL or RCPT; 554 with no valid recipient",
          "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("RCPT TO:<u1@example.com>\r\n") == kNeedMail);
  CHECK(h.send("DATA\r\n") == kNeedMail);
  start_transaction(h, "sender@example.org", {});
  CHECK(h.send("MAIL FROM:<other@example.org>\r\n") == "503 5.5.1 Error: nested MAIL command\r\n");
  CHECK(h.send("DATA\r\n") == "503 5.5.1 Error: need RCPT command\r\n");
  CHECK(h.send("RCPT TO:<nobody@example.com>\r\n") == "");
  CHECK(h.backend(BackendCommand::Rcpt, kRcptUnknown) == kRcptUnknown);
  CHECK(h.send("DATA\r\n") == "554 5.5.1 Error: no valid recipients\r\n");
  CHECK(h.last_cmd() == BackendCommand::Rcpt);  // DATA never reached the backend
}

// ================================================================ policy at MAIL and RCPT

TEST_CASE("dialogue: mx refuses relaying with 554 5.7.1 and never forwards it", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  start_transaction(h, "sender@example.org", {});
  CHECK(h.send("RCPT TO:<user@elsewhere.example>\r\n") == "554 5.7.1 Relay access denied\r\n");
  CHECK(h.send("RCPT TO:<user%elsewhere.example@example.com>\r\n") ==
        "554 5.7.1 Relay access denied\r\n");
  REQUIRE(h.services.find(rules::kMxRelay));
  CHECK(h.services.find(rules::kMxRelay)->stage == Stage::Rcpt);
  CHECK(h.io.backend.size() == 1);
}

TEST_CASE("dialogue: mx in dry-run reports its refusals and lets the session go on", "[dialogue]") {
  Options o("mx", kDenied);
  o.parts.mx =
      R"({ "mode": "dry-run", "access": { "default": "allow", "deny": ["198.51.100.0/24"] } })";
  Harness h(o);
  CHECK(h.connect() == "220 mx.example.com ESMTP\r\n");
  REQUIRE(h.services.find(rules::kMxAccess));
  CHECK_FALSE(h.services.find(rules::kMxAccess)->enforced);
  CHECK(h.services.refused.empty());
  h.ehlo();
  start_transaction(h, "sender@example.org", {});
  CHECK(h.send("RCPT TO:<user@elsewhere.example>\r\n") == "");
  CHECK(h.last_sent() == "RCPT TO:<user@elsewhere.example>\r\n");
  REQUIRE(h.services.find(rules::kMxRelay));
  CHECK_FALSE(h.services.find(rules::kMxRelay)->enforced);
}

TEST_CASE("dialogue: mx refuses an unauthenticated local sender", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<ceo@example.com>\r\n") ==
        "553 5.7.1 Sender address rejected: authentication required for local domains\r\n");
  CHECK(h.io.backend_opens == 0);
}

TEST_CASE("dialogue: submission requires AUTH before MAIL (530)", "[dialogue]") {
  Harness h("submission");
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<alice@example.com>\r\n") == "530 5.7.0 Authentication required\r\n");
  CHECK(h.io.backend_opens == 0);  // a rejected client costs the backend nothing
  CHECK(h.services.find(rules::kSubmissionAuthRequired));
}

TEST_CASE("dialogue: a login may send only as its own address (553)", "[dialogue]") {
  Harness h("submission");
  h.connect();
  h.ehlo();
  CHECK(auth_plain(h, "alice@example.com", "s3cret", kAuthOk) == kAuthOk);
  CHECK(h.send("MAIL FROM:<bob@example.com>\r\n") ==
        "553 5.7.1 Sender address rejected: not owned by user alice@example.com\r\n");
  CHECK(h.send("MAIL FROM:<alice@example.com>\r\n") == "");
  CHECK(h.last_sent() == "MAIL FROM:<alice@example.com>\r\n");
}

TEST_CASE("dialogue: a login over its sending rate gets 450 4.7.1", "[dialogue]") {
  SECTION("messages per hour, at MAIL") {
    Harness h("submission");
    h.services.messages_sent = 10;  // the limit is 10
    h.connect();
    h.ehlo();
    auth_plain(h, "alice@example.com", "s3cret", kAuthOk);
    CHECK(h.send("MAIL FROM:<alice@example.com>\r\n") ==
          "450 4.7.1 rate limit exceeded, try later\r\n");
    CHECK(h.services.counter_logins == std::vector<std::string>{"alice@example.com"});
    CHECK(h.services.find(rules::kLimitsRate));
  }
  SECTION("recipients per hour, at RCPT") {
    Harness h("submission");
    h.services.recipients_sent = 50;  // the limit is 50
    h.connect();
    h.ehlo();
    auth_plain(h, "alice@example.com", "s3cret", kAuthOk);
    start_transaction(h, "alice@example.com", {});
    CHECK(h.send("RCPT TO:<friend@elsewhere.example>\r\n") ==
          "450 4.7.1 rate limit exceeded, try later\r\n");
  }
}

TEST_CASE("dialogue: one recipient too many gets 452 4.5.3", "[dialogue]") {
  Harness h;  // mx.max_recipients is 2
  h.connect();
  h.ehlo();
  start_transaction(h, "sender@example.org", {"u1@example.com", "u2@example.com"});
  CHECK(h.send("RCPT TO:<u3@example.com>\r\n") == "452 4.5.3 Too many recipients\r\n");
  CHECK(h.services.find(rules::kLimitsRecipients));
}

TEST_CASE("dialogue: SIZE= over message.max_bytes gets 552 at MAIL", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org> SIZE=2000\r\n") ==
        "552 5.3.4 Message size exceeds fixed limit\r\n");
  CHECK(h.io.backend_opens == 0);
}

TEST_CASE("dialogue: non-ASCII addresses need SMTPUTF8 (553 5.6.7)", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<j\xc3\xb6rg@example.org>\r\n") ==
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n");
  start_transaction(h, "sender@example.org", {});
  CHECK(h.send("RCPT TO:<j\xc3\xb6rg@example.com>\r\n") ==
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n");
  CHECK(h.send("RSET\r\n") == kOk);
  CHECK(h.send("MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8\r\n") == "");
  CHECK(h.last_sent() == "MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8\r\n");
  CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
  CHECK(h.send("RCPT TO:<j\xc3\xb6rg@example.com>\r\n") == "");
  CHECK(h.last_sent() == "RCPT TO:<j\xc3\xb6rg@example.com>\r\n");
}

TEST_CASE("dialogue: RSET and EHLO in a transaction reset it at the backend too", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  start_transaction(h);
  CHECK(h.send("RSET\r\n") == kOk);  // the gateway's own reply, at once
  CHECK(h.io.backend.back().cmd == BackendCommand::Rset);
  CHECK(h.last_sent() == "RSET\r\n");
  CHECK(h.backend(BackendCommand::Rset, "250 2.0.0 Ok\r\n") == "");  // the client has its reply
  CHECK(h.send("RCPT TO:<u1@example.com>\r\n") == kNeedMail);
  start_transaction(h);
  CHECK(h.ehlo().starts_with("250-mx.example.com\r\n"));
  CHECK(h.last_cmd() == BackendCommand::Rset);
  CHECK(h.send("DATA\r\n") == kNeedMail);
}

// ================================================================ errors and hostile peers

TEST_CASE("dialogue: a line too long gets 500 5.5.2 and the session goes on", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.d->line_limit() == kMaxCommandLine);
  h.d->on_line_too_long();
  CHECK(h.io.take() == "500 5.5.2 Line too long\r\n");
  CHECK_FALSE(h.io.closed);
  CHECK(h.send("NOOP\r\n") == kOk);
}

TEST_CASE("dialogue: the 20th error reply closes the session", "[dialogue]") {
  Harness h;
  h.connect();
  for (int i = 1; i < Dialogue::kMaxErrors; ++i) {
    INFO("error " << i);
    REQUIRE(h.send("XYZZY\r\n") == "500 5.5.1 Error: command not recognized\r\n");
    REQUIRE_FALSE(h.io.closed);
  }
  CHECK(h.send("XYZZY\r\n") ==
        "500 5.5.1 Error: command not recognized\r\n421 4.7.0 Error: too many errors\r\n");
  CHECK(h.io.closed == "closed");
  CHECK(Dialogue::kMaxErrors == 20);
}

TEST_CASE("dialogue: the 101st junk command gets 421 and the close", "[dialogue]") {
  SECTION("NOOPs from the start") {
    Harness h;
    h.connect();
    for (int i = 1; i <= Dialogue::kMaxJunkCommands; ++i) {
      INFO("NOOP " << i);
      REQUIRE(h.send("NOOP\r\n") == kOk);
    }
    CHECK(h.send("NOOP\r\n") == "421 4.7.0 Error: too many junk commands\r\n");
    CHECK(h.io.closed == "closed");
    REQUIRE(h.services.find(rules::kProtocolJunk));
    CHECK(Dialogue::kMaxJunkCommands == 100);
  }
  SECTION("a MAIL that passes policy starts the count again") {
    Harness h;
    h.connect();
    h.ehlo();  // junk 1
    for (int i = 2; i <= Dialogue::kMaxJunkCommands; ++i) REQUIRE(h.send("NOOP\r\n") == kOk);
    start_transaction(h, "sender@example.org", {});
    for (int i = 1; i <= Dialogue::kMaxJunkCommands; ++i) REQUIRE(h.send("NOOP\r\n") == kOk);
    CHECK_FALSE(h.io.closed);
    CHECK(h.send("NOOP\r\n") == "421 4.7.0 Error: too many junk commands\r\n");
    CHECK(h.io.closed == "closed");
    CHECK(h.io.backend_aborts == 1);  // the open transaction is abandoned, not completed
  }
}

TEST_CASE("dialogue: commands pipelined after EHLO get 554 5.5.0 and close", "[dialogue]") {
  SECTION("the first EHLO") {
    Harness h;
    h.connect();
    CHECK(h.send("EHLO client.example\r\nMAIL FROM:<sender@example.org>\r\n") == kSyncError);
    CHECK(h.io.closed == "protocol_sync");
    CHECK(h.io.backend_opens == 0);
    REQUIRE(h.services.find(rules::kProtocolSync));
    CHECK(h.services.find(rules::kProtocolSync)->stage == Stage::Helo);
  }
  SECTION("a later EHLO") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("EHLO client.example\r\nNOOP\r\n") == kSyncError);
    CHECK(h.io.closed == "protocol_sync");
    REQUIRE(h.services.find(rules::kProtocolSync));
    CHECK_THAT(h.services.find(rules::kProtocolSync)->reason,
               Catch::Contains("pipelined after EHLO"));
  }
  SECTION("input while EHLO's reply waits behind a backend reply") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");
    CHECK(h.send("EHLO client.example\r\n") == "");  // its reply waits behind MAIL's
    CHECK(h.send("NOOP\r\n") == kSyncError);
    CHECK(h.io.closed == "protocol_sync");
  }
}

TEST_CASE("dialogue: pipelining without EHLO gets 554 5.5.0 and close", "[dialogue]") {
  Harness h;
  h.connect();
  CHECK(h.send("HELO client.example\r\n") == "250 mx.example.com\r\n");
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<u1@example.com>\r\n") == kSyncError);
  CHECK(h.io.closed == "protocol_sync");
  CHECK(h.io.backend_opens == 0);
  REQUIRE(h.services.find(rules::kProtocolSync));
  CHECK(h.services.find(rules::kProtocolSync)->reason == "pipelining without EHLO");
}

TEST_CASE("dialogue: input while DATA's 354 is owed is refused unread", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  start_transaction(h);
  CHECK(h.send("DATA\r\n") == "");
  CHECK(h.last_sent() == "DATA\r\n");
  CHECK_FALSE(h.d->reading_commands());
  // The body, before the gateway said 354.
  CHECK_FALSE(h.d->on_client_input());
  CHECK(h.io.take() == kSyncError);
  CHECK(h.io.closed == "protocol_sync");
  CHECK(h.io.backend_aborts == 1);  // the transaction is abandoned before any final dot
  REQUIRE(h.services.find(rules::kProtocolSync));
  CHECK(h.services.find(rules::kProtocolSync)->stage == Stage::Data);
}

TEST_CASE("dialogue: input while a pipelined DATA waits its turn is a synchronisation error",
          "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<u1@example.com>\r\nDATA\r\n") == "");
  CHECK(h.send("Subject: hi\r\n") == kSyncError);  // replies owed are dropped
  CHECK(h.io.closed == "protocol_sync");
  CHECK(h.io.backend_aborts == 1);
  CHECK(h.io.backend.size() == 2);  // DATA never reached the backend
}

TEST_CASE("dialogue: DATA pipelined with the body is a synchronisation error", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  start_transaction(h);
  CHECK(h.send("DATA\r\nSubject: hi\r\n") == kSyncError);
  CHECK(h.io.closed == "protocol_sync");
  CHECK(h.io.backend_aborts == 1);
}

TEST_CASE("dialogue: an HTTP request as the first line is closed without a reply", "[dialogue]") {
  SECTION("first line") {
    Harness h;
    h.connect();
    CHECK(h.send("GET / HTTP/1.1\r\nHost: mx.example.com\r\n") == "");
    CHECK(h.io.closed == "http_request");
    CHECK(h.services.find(rules::kProtocolHttp));
  }
  SECTION("a later line is only an unknown command") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("GET / HTTP/1.1\r\n") == "500 5.5.1 Error: command not recognized\r\n");
    CHECK_FALSE(h.io.closed);
  }
}

TEST_CASE("dialogue: BDAT gets 502 and the close", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("BDAT 12 LAST\r\n") == "502 5.5.1 Error: command not implemented\r\n");
  CHECK(h.io.closed == "closed");
  CHECK(h.services.find(rules::kProtocolBdat));
}

TEST_CASE("dialogue: the idle timeout gets 421 4.4.2 and the close", "[dialogue]") {
  SECTION("idle") {
    Harness h;
    h.connect();
    h.ehlo();
    h.d->on_timeout();
    CHECK(h.io.take() == "421 4.4.2 mx.example.com timeout\r\n");
    CHECK(h.io.closed == "timeout");
  }
  SECTION("replies still owed by the backend are dropped") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");
    h.d->on_timeout();
    CHECK(h.io.take() == "421 4.4.2 mx.example.com timeout\r\n");
    CHECK(h.io.closed == "timeout");
    CHECK(h.io.backend_aborts == 1);
  }
  SECTION("a DATA waiting for its 354 is abandoned at the backend, and a late 354 starts no body") {
    // Found by the dialogue fuzz target: the 354 arriving after the timeout's 421 started the
    // body, and held input could then complete a message the client was told had failed.
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<u1@example.com>\r\n") == "");
    CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
    CHECK(h.backend(BackendCommand::Rcpt, kRcptOk) == kRcptOk);
    CHECK(h.send("DATA\r\n") == "");
    h.d->on_timeout();
    CHECK(h.io.take() == "421 4.4.2 mx.example.com timeout\r\n");
    CHECK(h.io.backend_aborts == 1);
    h.d->on_backend_reply(BackendCommand::Data, BackendReply{354, kGoAhead, {}});
    CHECK_FALSE(h.d->in_body());
    CHECK(h.io.take() == "");
  }
}

TEST_CASE("dialogue: a graceful stop", "[dialogue]") {
  SECTION("an idle session gets 421 4.3.2 and closes") {
    Harness h;
    h.connect();
    h.ehlo();
    h.d->drain();
    CHECK(h.io.take() == "421 4.3.2 Service shutting down, closing connection\r\n");
    CHECK(h.io.closed == "closed");
  }
  SECTION("a busy session finishes its message first") {
    Harness h;
    h.connect();
    h.ehlo();
    start_transaction(h);
    h.d->drain();
    CHECK(h.io.take() == "");
    CHECK_FALSE(h.io.closed);
    CHECK(h.send("DATA\r\n") == "");
    CHECK(h.backend(BackendCommand::Data, kGoAhead) == kGoAhead);
    CHECK(h.body_end(BodyFilter::Status::End, 10) == "");
    CHECK(h.backend(BackendCommand::DataEnd, kQueued) ==
          kQueued + "421 4.3.2 Service shutting down, closing connection\r\n");
    CHECK(h.io.closed == "drained");
  }
  SECTION("a transaction pipelined after the dot does not start") {
    // Found by the dialogue fuzz target: a DATA pipelined behind the next MAIL and RCPT
    // went to the backend after the session had said 421 and closed.
    Harness h;
    h.connect();
    h.ehlo();
    start_body(h);
    h.d->drain();
    CHECK(h.body_end(BodyFilter::Status::End, 10) == "");
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<u2@example.com>\r\n") == "");
    CHECK(h.send("DATA\r\n") == "");
    const size_t sent = h.io.backend.size();
    CHECK(h.backend(BackendCommand::DataEnd, kQueued) ==
          kQueued + "421 4.3.2 Service shutting down, closing connection\r\n");
    CHECK(h.io.closed == "drained");
    CHECK(h.io.backend_aborts == 1);
    CHECK(h.io.backend.size() == sent);  // no DATA after the 421
  }
}

// ================================================================ the backend

TEST_CASE("dialogue: no backend at MAIL gets 421 4.4.1 and the close", "[dialogue]") {
  Harness h;
  h.io.backend_available = false;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == kBackendUnavailable);
  CHECK(h.io.closed == "closed");
}

TEST_CASE("dialogue: a backend gone with replies owed: 421 4.4.1 for each, then close",
          "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<u1@example.com>\r\n") == "");
  CHECK(h.backend_fails(false) == kBackendUnavailable + kBackendUnavailable);
  CHECK(h.io.closed == "closed");
  // The transaction's record names the stage the failure hit: its MAIL never had a reply.
  REQUIRE(h.services.transactions.size() == 1);
  CHECK(h.services.transactions[0].outcome == "failed");
  CHECK(h.services.transactions[0].stage == Stage::Mail);
}

TEST_CASE("dialogue: a pipelined DATA shares the fate of the replies it waited for", "[dialogue]") {
  SECTION("backend gone: 421 for each, then close") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<u1@example.com>\r\nDATA\r\n") == "");
    CHECK(h.backend_fails(false) ==
          kBackendUnavailable + kBackendUnavailable + kBackendUnavailable);
    CHECK(h.io.closed == "closed");
    CHECK(h.io.backend.size() == 2);
  }
  SECTION("protocol error: 451 for each, and the session goes on") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<u1@example.com>\r\nDATA\r\n") == "");
    CHECK(h.backend_fails(true) ==
          kBackendProtocolError + kBackendProtocolError + kBackendProtocolError);
    CHECK_FALSE(h.io.closed);
    CHECK(h.d->reading_commands());
    CHECK(h.send("RCPT TO:<u1@example.com>\r\n") == kNeedMail);
  }
}

TEST_CASE("dialogue: a backend gone before its reply to the final dot: 421, nothing delivered",
          "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  start_body(h);
  CHECK(h.body_end(BodyFilter::Status::End, 80) == "");
  CHECK(h.backend_fails(false) == kBackendUnavailable);
  CHECK(h.io.closed == "closed");
  REQUIRE(h.services.messages.size() == 1);
  CHECK(h.services.messages[0].from == "sender@example.org");
  CHECK(h.services.messages[0].size == 80);
  CHECK(h.services.messages[0].reply == kBackendUnavailable);
  CHECK_FALSE(h.services.messages[0].delivered);
  CHECK(h.d->messages() == 0);
}

TEST_CASE("dialogue: a QUIT pipelined behind an owed reply is answered after it", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\nQUIT\r\n") == "");
  CHECK(h.io.closed == "closed");  // nothing more is read
  CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk + "221 2.0.0 Bye\r\n");
}

// As session.cpp did: the owed MAIL gets its 421, and the held 221 follows it.
TEST_CASE("dialogue: a QUIT pipelined behind an owed reply, the backend gone meanwhile",
          "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\nQUIT\r\n") == "");
  CHECK(h.backend_fails(false) == kBackendUnavailable + "221 2.0.0 Bye\r\n");
  CHECK(h.io.closed == "closed");
  CHECK(h.d->replies_pending() == 0);
}

TEST_CASE("dialogue: a backend protocol error gets 451 4.3.0 and the session goes on",
          "[dialogue]") {
  SECTION("the MAIL's reply: the transaction never began") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");
    CHECK(h.backend_fails(true) == kBackendProtocolError);
    CHECK_FALSE(h.io.closed);
    CHECK(h.send("RCPT TO:<u1@example.com>\r\n") == kNeedMail);
  }
  SECTION("a RCPT's reply: the rest of the transaction gets 451 until RSET") {
    Harness h;
    h.connect();
    h.ehlo();
    start_transaction(h, "sender@example.org", {});
    CHECK(h.send("RCPT TO:<u1@example.com>\r\n") == "");
    CHECK(h.backend_fails(true) == kBackendProtocolError);
    CHECK(h.send("RCPT TO:<u2@example.com>\r\n") == kBackendProtocolError);
    CHECK(h.send("DATA\r\n") == kBackendProtocolError);
    CHECK(h.send("RSET\r\n") == kOk);
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");  // a new backend connection
    CHECK(h.io.backend_connects == 2);
    CHECK(h.last_sent() == "MAIL FROM:<sender@example.org>\r\n");
  }
}

// ================================================================ pipelining

TEST_CASE("dialogue: pipelined MAIL and RCPTs are answered in order as the backend replies",
          "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<u1@example.com>\r\n"
               "RCPT TO:<nobody@example.com>\r\n") == "");
  REQUIRE(h.io.backend.size() == 3);
  CHECK(h.io.backend[0].cmd == BackendCommand::Mail);
  CHECK(h.io.backend[0].line == "MAIL FROM:<sender@example.org>\r\n");
  CHECK(h.io.backend[1].cmd == BackendCommand::Rcpt);
  CHECK(h.io.backend[1].line == "RCPT TO:<u1@example.com>\r\n");
  CHECK(h.io.backend[2].line == "RCPT TO:<nobody@example.com>\r\n");
  CHECK(h.d->replies_pending() == 3);
  CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
  CHECK(h.backend(BackendCommand::Rcpt, kRcptOk) == kRcptOk);
  CHECK(h.backend(BackendCommand::Rcpt, kRcptUnknown) == kRcptUnknown);
  CHECK(h.d->replies_pending() == 0);
}

TEST_CASE("dialogue: a local refusal waits its turn behind an owed backend reply", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<user@elsewhere.example>\r\n"
               "RCPT TO:<u1@example.com>\r\n") == "");
  CHECK(h.io.backend.size() == 2);  // the relay attempt never reaches the backend
  CHECK(h.d->held_reply_bytes() == std::string_view("554 5.7.1 Relay access denied\r\n").size());
  CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk + "554 5.7.1 Relay access denied\r\n");
  CHECK(h.backend(BackendCommand::Rcpt, kRcptOk) == kRcptOk);
}

TEST_CASE("dialogue: a pipelined DATA waits for every earlier reply", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<u1@example.com>\r\nDATA\r\n") == "");
  CHECK(h.io.backend.size() == 2);  // DATA is held
  CHECK_FALSE(h.d->reading_commands());
  CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
  CHECK(h.io.backend.size() == 2);
  CHECK(h.backend(BackendCommand::Rcpt, kRcptOk) == kRcptOk);
  REQUIRE(h.io.backend.size() == 3);
  CHECK(h.last_cmd() == BackendCommand::Data);
  CHECK(h.last_sent() == "DATA\r\n");
  CHECK(h.backend(BackendCommand::Data, kGoAhead) == kGoAhead);
  CHECK(h.d->in_body());
}

TEST_CASE("dialogue: a pipelined DATA after a refused recipient gets 554 no valid recipients",
          "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n") == "");
  CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
  CHECK(h.backend(BackendCommand::Rcpt, kRcptUnknown) ==
        kRcptUnknown + "554 5.5.1 Error: no valid recipients\r\n");
  CHECK(h.d->reading_commands());
}

// ================================================================ DATA

TEST_CASE("dialogue: a message from DATA to the backend's final reply", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  start_transaction(h);
  CHECK(h.send("DATA\r\n") == "");
  CHECK(h.last_cmd() == BackendCommand::Data);
  CHECK_FALSE(h.io.deadline);  // the backend's timer bounds the wait for the 354
  CHECK(h.backend(BackendCommand::Data, kGoAhead) == kGoAhead);
  CHECK(h.d->in_body());
  CHECK(h.io.deadline == std::chrono::milliseconds(600s));  // timeouts.data
  REQUIRE(h.io.body_prefixes.size() == 1);
  const std::string& prefix = h.io.body_prefixes[0];
  CHECK_THAT(prefix, Catch::StartsWith("Received: from client.example ([192.0.2.10])\r\n"
                                       "\tby mx.example.com (smtpgate) with ESMTP id s1.1\r\n"
                                       "\t(listener mx)\r\n"
                                       "\tfor <u1@example.com>; "));
  CHECK_THAT(prefix, Catch::EndsWith("\r\n"));

  // The body filter found CRLF.CRLF: the gateway sends the final dot itself.
  CHECK(h.body_end(BodyFilter::Status::End, 120) == "");
  CHECK(h.last_cmd() == BackendCommand::DataEnd);
  CHECK(h.last_sent() == ".\r\n");
  CHECK(h.io.deadline == std::chrono::milliseconds(300s));

  // The reply to the final dot is the backend's own.
  CHECK(h.backend(BackendCommand::DataEnd, kQueued) == kQueued);
  REQUIRE(h.services.messages.size() == 1);
  const auto& m = h.services.messages[0];
  CHECK(m.from == "sender@example.org");
  CHECK(m.size == 120);
  CHECK(m.recipients == 1);
  CHECK_THAT(m.reply, Catch::StartsWith("250 2.0.0 Ok: queued as 4XyzQ1"));
  CHECK(m.delivered);
  CHECK(h.d->messages() == 1);
  CHECK_FALSE(h.d->transaction_open());

  // The next message in the session is number 2; with two recipients the header names none.
  start_body(h, "sender@example.org", {"u1@example.com", "u2@example.com"});
  REQUIRE(h.io.body_prefixes.size() == 2);
  CHECK_THAT(h.io.body_prefixes[1], Catch::Contains(" id s1.2\r\n"));
  CHECK_THAT(h.io.body_prefixes[1], !Catch::Contains("\tfor <"));
}

TEST_CASE("dialogue: the backend's refusals of DATA and of the message are relayed", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  start_transaction(h);
  CHECK(h.send("DATA\r\n") == "");
  CHECK(h.backend(BackendCommand::Data, "451 4.3.0 Try again later\r\n") ==
        "451 4.3.0 Try again later\r\n");
  CHECK_FALSE(h.d->in_body());
  CHECK(h.d->reading_commands());
  CHECK(h.io.deadline == std::chrono::milliseconds(300s));
  CHECK(h.send("DATA\r\n") == "");
  CHECK(h.backend(BackendCommand::Data, kGoAhead) == kGoAhead);
  CHECK(h.body_end(BodyFilter::Status::End, 50) == "");
  const std::string spam = "554 5.7.1 Message rejected as spam\r\n";
  CHECK(h.backend(BackendCommand::DataEnd, spam) == spam);
  REQUIRE(h.services.messages.size() == 1);
  CHECK_FALSE(h.services.messages[0].delivered);
  CHECK(h.d->messages() == 0);
}

TEST_CASE("dialogue: no Received: header when message.received_header is off", "[dialogue]") {
  Options o;
  o.parts.message = R"({ "max_bytes": 1000, "received_header": false })";
  Harness h(o);
  h.connect();
  h.ehlo();
  start_body(h);
  REQUIRE(h.io.body_prefixes.size() == 1);
  CHECK(h.io.body_prefixes[0].empty());
}

TEST_CASE("dialogue: a body over message.max_bytes gets 552 and is never completed", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  start_body(h);
  const size_t sent = h.io.backend.size();
  CHECK(h.body_end(BodyFilter::Status::End, 5000) ==
        "552 5.3.4 Message size exceeds fixed limit\r\n");
  CHECK(h.io.backend_aborts == 1);     // closed before the final dot
  CHECK(h.io.backend.size() == sent);  // no ".\r\n"
  CHECK(h.services.find(rules::kMessageSize));
  CHECK_FALSE(h.io.closed);
  CHECK(h.d->reading_commands());
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");  // a new backend connection
  CHECK(h.io.backend_connects == 2);
}

TEST_CASE("dialogue: after an aborted message a login has no backend connection left",
          "[dialogue]") {
  Harness h("submission");
  h.connect();
  h.ehlo();
  auth_plain(h, "alice@example.com", "s3cret", kAuthOk);
  start_body(h, "alice@example.com", {"friend@elsewhere.example"});
  CHECK(h.body_end(BodyFilter::Status::End, 5000) ==
        "552 5.3.4 Message size exceeds fixed limit\r\n");
  CHECK(h.io.backend_aborts == 1);
  // A new backend connection would not carry the login.
  CHECK(h.send("MAIL FROM:<alice@example.com>\r\n") == kBackendUnavailable);
  CHECK(h.io.closed == "closed");
}

TEST_CASE("dialogue: a bare LF in the body gets 521 and the close", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  start_body(h);
  CHECK(h.body_end(BodyFilter::Status::BareNewline, 10) == "521 5.5.2 bare <LF> received\r\n");
  CHECK(h.io.closed == "closed");
  CHECK(h.io.backend_aborts == 1);
  CHECK(h.last_cmd() == BackendCommand::Data);  // no final dot
  CHECK(h.services.find(rules::kMessageBareNewline));
}

TEST_CASE("dialogue: a backend that fails during the body is answered at once", "[dialogue]") {
  SECTION("gone: 421 now, the rest of the body dropped, the close at its end") {
    Harness h;
    h.connect();
    h.ehlo();
    start_body(h);
    h.io.body_so_far = 300;
    CHECK(h.backend_fails(false) == kBackendUnavailable);
    CHECK(h.io.body_discards == 1);
    REQUIRE(h.services.messages.size() == 1);
    CHECK_FALSE(h.services.messages[0].delivered);
    CHECK(h.services.messages[0].size == 300);
    CHECK(h.services.messages[0].reply == kBackendUnavailable);
    CHECK(h.services.messages[0].from == "sender@example.org");
    CHECK_FALSE(h.io.closed);
    CHECK(h.body_end(BodyFilter::Status::End, 700) == "");  // no second reply
    CHECK(h.io.closed == "closed");
  }
  SECTION("protocol error: 451 now, the session goes on after the body") {
    Harness h;
    h.connect();
    h.ehlo();
    start_body(h);
    CHECK(h.backend_fails(true) == kBackendProtocolError);
    CHECK(h.io.body_discards == 1);
    CHECK(h.body_end(BodyFilter::Status::End, 700) == "");
    CHECK_FALSE(h.io.closed);
    CHECK(h.d->reading_commands());
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");
    CHECK(h.io.backend_connects == 2);
  }
  SECTION("a graceful stop meanwhile closes without another reply") {
    Harness h;
    h.connect();
    h.ehlo();
    start_body(h);
    CHECK(h.backend_fails(true) == kBackendProtocolError);
    h.d->drain();
    CHECK(h.io.take() == "");
    CHECK(h.io.closed == "drained");
  }
}

// ================================================================ AUTH

TEST_CASE("dialogue: AUTH PLAIN with a prompt, judged by the backend", "[dialogue]") {
  Harness h("submission");
  h.connect();
  h.ehlo();
  CHECK(h.send("AUTH PLAIN\r\n") == "334 \r\n");
  CHECK(h.d->line_limit() == kMaxSaslLine);
  CHECK(h.send(plain_response("alice@example.com", "s3cret") + "\r\n") == "");
  REQUIRE(h.io.auths.size() == 1);
  CHECK(h.io.auths[0].first == "alice@example.com");
  CHECK(h.io.auths[0].second == "s3cret");
  CHECK_FALSE(h.d->reading_commands());  // waiting for the backend's verdict
  CHECK_FALSE(h.io.deadline);
  // The client gets the gateway's own 235, whatever the backend's text.
  CHECK(h.backend(BackendCommand::Auth, "235 Authenticated\r\n") == kAuthOk);
  CHECK(h.d->facts().authenticated);
  CHECK(h.d->facts().login == "alice@example.com");
  REQUIRE(h.services.auths.size() == 1);
  CHECK(h.services.auths[0].login == "alice@example.com");
  CHECK(h.services.auths[0].outcome == AuthOutcome::Ok);
  CHECK(h.io.deadline == std::chrono::milliseconds(300s));
  CHECK(h.d->line_limit() == kMaxCommandLine);
  CHECK(h.send("AUTH PLAIN " + plain_response("alice@example.com", "s3cret") + "\r\n") ==
        "503 5.5.1 Error: already authenticated\r\n");
  CHECK(h.io.auths.size() == 1);
}

TEST_CASE("dialogue: AUTH PLAIN with an initial response", "[dialogue]") {
  Harness h("submission");
  h.connect();
  h.ehlo();
  CHECK(auth_plain(h, "alice@example.com", "s3cret", kAuthOk) == kAuthOk);
  REQUIRE(h.io.auths.size() == 1);
  CHECK(h.io.auths[0] == std::pair<std::string, std::string>{"alice@example.com", "s3cret"});
}

TEST_CASE("dialogue: AUTH LOGIN asks for the username and the password", "[dialogue]") {
  SECTION("two prompts") {
    Harness h("submission");
    h.connect();
    h.ehlo();
    CHECK(h.send("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n");
    CHECK(h.send(base64_encode("alice@example.com") + "\r\n") == "334 UGFzc3dvcmQ6\r\n");
    CHECK(h.send(base64_encode("pa ss:word") + "\r\n") == "");
    REQUIRE(h.io.auths.size() == 1);
    CHECK(h.io.auths[0] == std::pair<std::string, std::string>{"alice@example.com", "pa ss:word"});
    CHECK(h.backend(BackendCommand::Auth, kAuthOk) == kAuthOk);
  }
  SECTION("the username as initial response") {
    Harness h("submission");
    h.connect();
    h.ehlo();
    CHECK(h.send("AUTH LOGIN " + base64_encode("alice@example.com") + "\r\n") ==
          "334 UGFzc3dvcmQ6\r\n");
    CHECK(h.send(base64_encode("s3cret") + "\r\n") == "");
    REQUIRE(h.io.auths.size() == 1);
    CHECK(h.io.auths[0] == std::pair<std::string, std::string>{"alice@example.com", "s3cret"});
  }
}

TEST_CASE("dialogue: the backend's refusal of the credentials is relayed and counted",
          "[dialogue]") {
  Harness h("submission");
  h.connect();
  h.ehlo();
  CHECK(auth_plain(h, "alice@example.com", "wrong", kAuthBad) == kAuthBad);
  CHECK_FALSE(h.d->facts().authenticated);
  REQUIRE(h.services.auths.size() == 1);
  CHECK(h.services.auths[0].outcome == AuthOutcome::Failed);
  CHECK(h.services.auths[0].reply == "535 5.7.8 Error: authentication failed: bad password");
  CHECK(h.services.failures == 1);
  CHECK_FALSE(h.io.closed);
  CHECK(h.d->reading_commands());
  // A temporary failure at the backend is relayed, and is not a failed login.
  const std::string busy = "454 4.7.0 Temporary authentication failure\r\n";
  CHECK(auth_plain(h, "alice@example.com", "s3cret", busy) == busy);
  CHECK(h.services.auths.back().outcome == AuthOutcome::Tempfail);
  CHECK(h.services.failures == 1);
}

TEST_CASE("dialogue: AUTH when the backend cannot judge it gets 454 and the session goes on",
          "[dialogue]") {
  SECTION("the backend offers no usable mechanism") {
    Harness h("submission");
    h.io.backend_offers_auth = false;
    h.connect();
    h.ehlo();
    CHECK(h.send("AUTH PLAIN " + plain_response("alice@example.com", "s3cret") + "\r\n") ==
          kAuthTempfail);
    CHECK(h.d->reading_commands());
    CHECK_FALSE(h.io.closed);
    CHECK(h.services.failures == 0);
  }
  SECTION("no backend connection") {
    Harness h("submission");
    h.io.backend_available = false;
    h.connect();
    h.ehlo();
    CHECK(h.send("AUTH PLAIN " + plain_response("alice@example.com", "s3cret") + "\r\n") ==
          kAuthTempfail);
    CHECK_FALSE(h.io.closed);
    CHECK(h.services.failures == 0);
  }
  SECTION("the backend goes away while judging") {
    Harness h("submission");
    h.connect();
    h.ehlo();
    CHECK(h.send("AUTH PLAIN " + plain_response("alice@example.com", "s3cret") + "\r\n") == "");
    CHECK(h.backend_fails(false) == kAuthTempfail);
    CHECK_FALSE(h.io.closed);
    CHECK(h.d->reading_commands());
  }
}

TEST_CASE("dialogue: malformed AUTH exchanges get 501 and count as failures", "[dialogue]") {
  Options o{"submission"};
  o.parts.brute_force = R"({ "max_failures": 10 })";
  Harness h(o);
  h.connect();
  h.ehlo();
  CHECK(h.send("AUTH PLAIN\r\n") == "334 \r\n");
  CHECK(h.send("*\r\n") == "501 5.7.0 Authentication aborted\r\n");
  CHECK(h.send("AUTH PLAIN *\r\n") == "501 5.7.0 Authentication aborted\r\n");
  CHECK(h.send("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n");
  CHECK(h.send("*\r\n") == "501 5.7.0 Authentication aborted\r\n");
  CHECK(h.services.failures == 3);
  CHECK(h.services.auths.back().outcome == AuthOutcome::Refused);
  CHECK(h.io.auths.empty());
  CHECK(h.io.backend_opens == 0);  // nothing reached the backend
}

TEST_CASE("dialogue: AUTH with bad base64 or malformed credentials gets 501", "[dialogue]") {
  Options o{"submission"};
  o.parts.brute_force = R"({ "max_failures": 10 })";
  Harness h(o);
  h.connect();
  h.ehlo();
  CHECK(h.send("AUTH PLAIN %%%%\r\n") == "501 5.5.2 Cannot decode response\r\n");
  CHECK(h.send("AUTH PLAIN\r\n") == "334 \r\n");
  CHECK(h.send("not base64!\r\n") == "501 5.5.2 Cannot decode response\r\n");
  CHECK(h.send("AUTH PLAIN " + base64_encode("no separators") + "\r\n") ==
        "501 5.5.4 Malformed credentials\r\n");
  CHECK(h.send("AUTH PLAIN " + plain_response("alice@example.com", "") + "\r\n") ==
        "501 5.5.4 Malformed credentials\r\n");
  CHECK(h.services.failures == 4);
  CHECK(h.io.auths.empty());
  // A SASL answer over its line limit ends the exchange as a failed login.
  CHECK(h.send("AUTH PLAIN\r\n") == "334 \r\n");
  h.d->on_line_too_long();
  CHECK(h.io.take() == "500 5.5.2 Line too long\r\n");
  CHECK(h.services.failures == 5);
  CHECK(h.d->line_limit() == kMaxCommandLine);
}

TEST_CASE("dialogue: an unknown SASL mechanism gets 504 and is not a failed login", "[dialogue]") {
  Harness h("submission");
  h.connect();
  h.ehlo();
  CHECK(h.send("AUTH CRAM-MD5\r\n") == "504 5.5.4 Unrecognized authentication type\r\n");
  CHECK(h.services.failures == 0);
  CHECK(h.d->reading_commands());
}

TEST_CASE("dialogue: AUTH before EHLO, and inside a transaction, gets 503", "[dialogue]") {
  Harness h("legacy");
  h.connect();
  CHECK(h.send("AUTH PLAIN\r\n") == kNeedHelo);
  h.ehlo();
  start_transaction(h, "sender@example.org", {});  // an auto session becomes mx here
  CHECK(h.send("AUTH PLAIN\r\n") == "503 5.5.1 Error: MAIL transaction in progress\r\n");
}

TEST_CASE("dialogue: AUTH on an mx listener gets 502 and counts as a failure", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("AUTH PLAIN " + plain_response("alice@example.com", "s3cret") + "\r\n") ==
        "502 5.5.1 AUTH not available\r\n");
  CHECK(h.services.find(rules::kMxAuth));
  CHECK(h.services.failures == 1);
  CHECK(h.io.auths.empty());
  CHECK_FALSE(h.io.closed);
}

TEST_CASE("dialogue: AUTH on an auto listener from a host that may not submit gets 535",
          "[dialogue]") {
  Harness h(Options{"legacy", kOutsider});
  h.connect();
  h.ehlo();
  CHECK(h.send("AUTH PLAIN " + plain_response("alice@example.com", "s3cret") + "\r\n") ==
        "535 5.7.8 Authentication credentials invalid\r\n");
  CHECK(h.services.failures == 1);
  CHECK(h.io.auths.empty());  // never reaches the backend
  CHECK(h.io.backend_opens == 0);
}

TEST_CASE("dialogue: an auto session is classified by AUTH or by MAIL", "[dialogue]") {
  SECTION("AUTH: submission") {
    Harness h("legacy");
    h.connect();
    h.ehlo();
    CHECK(h.d->facts().cls == ListenerClass::Auto);
    auth_plain(h, "alice@example.com", "s3cret", kAuthOk);
    CHECK(h.d->facts().cls == ListenerClass::Submission);
    CHECK(h.services.class_changes == 1);
  }
  SECTION("MAIL without AUTH: mx") {
    Harness h("legacy");
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");
    CHECK(h.d->facts().cls == ListenerClass::Mx);
    CHECK(h.services.class_changes == 1);
  }
}

TEST_CASE("dialogue: MAIL's AUTH= parameter never reaches the backend", "[dialogue]") {
  Harness h("submission");
  h.connect();
  h.ehlo();
  auth_plain(h, "alice@example.com", "s3cret", kAuthOk);
  CHECK(h.send("MAIL FROM:<alice@example.com> AUTH=<ceo@example.com> SIZE=100\r\n") == "");
  CHECK(h.last_sent() == "MAIL FROM:<alice@example.com> SIZE=100\r\n");
}

TEST_CASE("dialogue: an authenticated session whose backend is gone cannot send any more",
          "[dialogue]") {
  Harness h("submission");
  h.connect();
  h.ehlo();
  auth_plain(h, "alice@example.com", "s3cret", kAuthOk);
  CHECK(h.backend_fails(false) == "");  // nothing was owed
  // A new backend connection would not carry the login.
  CHECK(h.send("MAIL FROM:<alice@example.com>\r\n") == kBackendUnavailable);
  CHECK(h.io.closed == "closed");
  CHECK(h.io.backend_opens == 1);
}

TEST_CASE("dialogue: no password in any report, reply or backend command", "[dialogue]") {
  const std::string password = "Tr0ub4dor&3";
  Options o{"submission"};
  o.parts.brute_force = R"({ "max_failures": 10 })";
  Harness h(o);
  h.connect();
  h.ehlo();
  // A login refused by the backend, one through AUTH LOGIN, a malformed one, and a success.
  CHECK(auth_plain(h, "alice@example.com", password, kAuthBad) == kAuthBad);
  CHECK(h.send("AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6\r\n");
  CHECK(h.send(base64_encode("alice@example.com") + "\r\n") == "334 UGFzc3dvcmQ6\r\n");
  CHECK(h.send(base64_encode(password) + "\r\n") == "");
  CHECK(h.backend(BackendCommand::Auth, kAuthBad) == kAuthBad);
  CHECK(h.send("AUTH PLAIN " + plain_response("", password) + "\r\n") ==
        "501 5.5.4 Malformed credentials\r\n");
  std::string everything;
  CHECK(auth_plain(h, "alice@example.com", password, kAuthOk) == kAuthOk);
  start_body(h, "alice@example.com", {"friend@elsewhere.example"});
  h.body_end(BodyFilter::Status::End, 10);
  h.backend(BackendCommand::DataEnd, kQueued);
  // Only backend_auth() carries it.
  REQUIRE(h.io.auths.size() == 3);
  for (const auto& a : h.io.auths) CHECK(a.second == password);

  everything += h.io.out;
  for (const auto& s : h.io.backend) everything += s.line;
  for (const auto& p : h.io.body_prefixes) everything += p;
  for (const auto& d : h.services.decisions) everything += d.reason + d.reply.line();
  for (const auto& a : h.services.auths) everything += a.login + a.reply;
  for (const auto& m : h.services.messages) everything += m.from + m.reply;
  for (const auto& b : h.services.bans) everything += b.reason;
  for (const auto& l : h.services.counter_logins) everything += l;
  everything += h.d->facts().login;
  CHECK_THAT(everything, !Catch::Contains(password));
  CHECK_THAT(everything, !Catch::Contains(base64_encode(password)));
  CHECK_THAT(everything, !Catch::Contains(plain_response("alice@example.com", password)));
}

// ================================================================ STARTTLS

TEST_CASE("dialogue: STARTTLS starts the handshake and forgets the EHLO", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("STARTTLS\r\n") == "220 2.0.0 Ready to start TLS\r\n");
  CHECK(h.io.tls_starts == 1);
  h.d->on_tls_ready("TLSv1.3", "TLS_AES_128_GCM_SHA256");
  CHECK(h.io.take() == "");  // no second greeting
  CHECK(h.d->facts().tls);
  // RFC 3207: the client starts over with EHLO.
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == kNeedHelo);
  CHECK(h.ehlo() ==
        "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
        "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n");
  CHECK(h.send("STARTTLS\r\n") == "503 5.5.1 Error: TLS already active\r\n");
  CHECK(h.io.tls_starts == 1);
  // The Received: header tells how the message came.
  start_body(h);
  REQUIRE(h.io.body_prefixes.size() == 1);
  CHECK_THAT(h.io.body_prefixes[0], Catch::Contains("with ESMTPS id s1.1"));
  CHECK_THAT(h.io.body_prefixes[0],
             Catch::Contains("(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)"));
}

TEST_CASE("dialogue: commands pipelined after STARTTLS are never run", "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  // The harness drops them as the shell does; the dialogue must not refuse the STARTTLS.
  CHECK(h.send("STARTTLS\r\nMAIL FROM:<sender@example.org>\r\n") ==
        "220 2.0.0 Ready to start TLS\r\n");
  CHECK(h.io.tls_starts == 1);
  CHECK_FALSE(h.io.closed);
  CHECK(h.io.backend_opens == 0);
}

TEST_CASE("dialogue: STARTTLS where there is no TLS gets 454", "[dialogue]") {
  SECTION("a listener without TLS") {
    Harness h("plain");
    h.connect();
    h.ehlo();
    CHECK(h.send("STARTTLS\r\n") == "454 4.7.0 TLS not available\r\n");
    CHECK(h.io.tls_starts == 0);
  }
  SECTION("no certificate") {
    Options o;
    o.tls_available = false;
    Harness h(o);
    h.connect();
    CHECK(h.ehlo() ==
          "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
          "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n");
    CHECK(h.send("STARTTLS\r\n") == "454 4.7.0 TLS not available\r\n");
    CHECK(h.io.tls_starts == 0);
  }
}

TEST_CASE("dialogue: STARTTLS waits for earlier replies and is refused in a transaction",
          "[dialogue]") {
  SECTION("the MAIL is refused: STARTTLS runs after its reply") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\nSTARTTLS\r\n") == "");
    CHECK(h.io.tls_starts == 0);
    const std::string refused = "550 5.7.1 Sender rejected\r\n";
    CHECK(h.backend(BackendCommand::Mail, refused) == refused + "220 2.0.0 Ready to start TLS\r\n");
    CHECK(h.io.tls_starts == 1);
  }
  SECTION("the MAIL is accepted: 503") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\nSTARTTLS\r\n") == "");
    CHECK(h.backend(BackendCommand::Mail, kMailOk) ==
          kMailOk + "503 5.5.1 Error: MAIL transaction in progress\r\n");
    CHECK(h.io.tls_starts == 0);
  }
}

// ================================================================ brute force

TEST_CASE("dialogue: the failure that reaches brute_force.max_failures bans and closes",
          "[dialogue]") {
  Harness h("submission");  // max_failures 3
  h.connect();
  h.ehlo();
  CHECK(auth_plain(h, "alice@example.com", "guess1", kAuthBad) == kAuthBad);
  CHECK(auth_plain(h, "alice@example.com", "guess2", kAuthBad) == kAuthBad);
  CHECK(h.services.bans.empty());
  CHECK_FALSE(h.io.closed);
  CHECK(auth_plain(h, "alice@example.com", "guess3", kAuthBad) == kAuthBad);
  REQUIRE(h.services.bans.size() == 1);
  CHECK(h.services.bans[0].ip == *IpAddress::parse(kClient));
  CHECK(h.io.closed == "banned");
  const Decision* d = h.services.find(rules::kBruteForce);
  REQUIRE(d);
  CHECK(d->verdict == Verdict::Ban);
  CHECK(d->enforced);
  CHECK(d->reply.code == 535);  // the reply the client got
}

TEST_CASE("dialogue: failures counted before this session count toward the ban", "[dialogue]") {
  Harness h("submission");
  h.services.failures_before = 2;
  h.connect();
  h.ehlo();
  CHECK(h.send("AUTH PLAIN *\r\n") == "501 5.7.0 Authentication aborted\r\n");
  CHECK(h.services.bans.size() == 1);
  CHECK(h.io.closed == "banned");
}

TEST_CASE("dialogue: brute_force in dry-run only reports the ban", "[dialogue]") {
  Options o{"submission"};
  o.parts.brute_force = R"({ "max_failures": 2, "mode": "dry-run" })";
  Harness h(o);
  h.connect();
  h.ehlo();
  auth_plain(h, "alice@example.com", "guess1", kAuthBad);
  CHECK(auth_plain(h, "alice@example.com", "guess2", kAuthBad) == kAuthBad);
  CHECK(h.services.bans.empty());
  CHECK(h.services.would_bans.size() == 1);
  CHECK_FALSE(h.io.closed);
  REQUIRE(h.services.find(rules::kBruteForce));
  CHECK_FALSE(h.services.find(rules::kBruteForce)->enforced);
}

TEST_CASE("dialogue: AUTH on an mx listener with mx.auth ban bans at once", "[dialogue]") {
  Options o;
  o.parts.mx = R"({ "auth": "ban" })";
  Harness h(o);
  h.connect();
  h.ehlo();
  CHECK(h.send("AUTH LOGIN\r\n") == "502 5.5.1 AUTH not available\r\n");
  CHECK(h.services.bans.size() == 1);
  CHECK(h.io.closed == "banned");
}

TEST_CASE("dialogue: replies to a transaction the client reset count for nothing", "[dialogue]") {
  // Found by the dialogue fuzz target: a RCPT's 250 arriving after RSET counted as an
  // accepted recipient of the next transaction, whose DATA then went to the backend with
  // no recipient at all.
  SECTION("a late RCPT 250 does not let the next transaction's DATA through") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<u1@example.com>\r\nRSET\r\n") == "");
    CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
    CHECK(h.backend(BackendCommand::Rcpt, kRcptOk) == kRcptOk + kOk);
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");
    CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
    CHECK(h.send("DATA\r\n") == "503 5.5.1 Error: need RCPT command\r\n");
    CHECK(h.last_sent() != "DATA\r\n");
  }
  SECTION("a late MAIL refusal does not end the next transaction") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\nRSET\r\nMAIL FROM:<other@example.org>\r\n"
                 "RCPT TO:<u1@example.com>\r\n") == "");
    const std::string refused = "451 4.3.0 try later\r\n";
    CHECK(h.backend(BackendCommand::Mail, refused) == refused + kOk);
    CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
    CHECK(h.backend(BackendCommand::Rcpt, kRcptOk) == kRcptOk);
    CHECK(h.send("DATA\r\n") == "");
    CHECK(h.last_sent() == "DATA\r\n");
  }
}

TEST_CASE("dialogue: the Received header names the login only with message.received_auth",
          "[dialogue]") {
  for (const bool named : {false, true}) {
    Options o("submission");
    o.parts.message =
        named ? R"({ "max_bytes": 1000, "received_auth": true })" : R"({ "max_bytes": 1000 })";
    Harness h(o);
    h.connect();
    h.ehlo();
    CHECK(auth_plain(h, "cms@example.com", "pw", "235 2.7.0 ok\r\n") == kAuthOk);
    start_body(h, "cms@example.com");
    REQUIRE(h.io.body_prefixes.size() == 1);
    const std::string& prefix = h.io.body_prefixes[0];
    INFO(prefix);
    CHECK(prefix.find("with ESMTPA id s1.1") != std::string::npos);  // the login step, always
    CHECK((prefix.find("(listener submission, authenticated as cms@example.com)") !=
           std::string::npos) == named);
    if (!named) CHECK(prefix.find("cms@example.com") == std::string::npos);
  }
}

// ================================================================ forensic records

TEST_CASE("dialogue: decisions carry what they were about (HELO, login, sender, recipient)",
          "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");
  CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
  CHECK(h.send("RCPT TO:<victim@gmail.example>\r\n") == "554 5.7.1 Relay access denied\r\n");
  REQUIRE(h.services.decisions.size() == 1);
  const auto& f = h.services.decision_facts[0];
  CHECK(f.helo == "client.example");
  CHECK(f.from == "sender@example.org");
  CHECK(f.rcpt == "victim@gmail.example");
  CHECK(f.login.empty());
}

TEST_CASE("dialogue: AUTH refused on an mx listener names the login offered, never the password",
          "[dialogue]") {
  Harness h;
  h.connect();
  h.ehlo();
  CHECK(h.send("AUTH PLAIN " + plain_response("admin@example.com", "hunter2") + "\r\n") ==
        "502 5.5.1 AUTH not available\r\n");
  REQUIRE_FALSE(h.services.auths.empty());
  CHECK(h.services.auths.back().login == "admin@example.com");
  REQUIRE_FALSE(h.services.decision_facts.empty());
  CHECK(h.services.decision_facts.back().login == "admin@example.com");
  for (const auto& d : h.services.decisions) CHECK(d.reason.find("hunter2") == std::string::npos);
}

TEST_CASE("dialogue: a transaction record for every way a transaction ends", "[dialogue]") {
  SECTION("delivered: every recipient named, the accepted ones listed") {
    Harness h;
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");
    CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
    CHECK(h.send("RCPT TO:<u1@example.com>\r\n") == "");
    CHECK(h.backend(BackendCommand::Rcpt, kRcptOk) == kRcptOk);
    CHECK(h.send("RCPT TO:<nobody@example.com>\r\n") == "");
    CHECK(h.backend(BackendCommand::Rcpt, kRcptUnknown) == kRcptUnknown);
    CHECK(h.send("RCPT TO:<x@gmail.example>\r\n") == "554 5.7.1 Relay access denied\r\n");
    CHECK(h.send("DATA\r\n") == "");
    CHECK(h.backend(BackendCommand::Data, kGoAhead) == kGoAhead);
    CHECK(h.body_end(BodyFilter::Status::End, 42) == "");
    CHECK(h.backend(BackendCommand::DataEnd, kQueued) == kQueued);
    REQUIRE(h.services.transactions.size() == 1);
    const auto& t = h.services.transactions[0];
    CHECK(t.outcome == "delivered");
    CHECK(t.from == "sender@example.org");
    CHECK(t.recipients ==
          std::vector<std::string>{"u1@example.com", "nobody@example.com", "x@gmail.example"});
    CHECK(t.accepted == std::vector<std::string>{"u1@example.com"});
    CHECK(t.size == 42);
    CHECK(t.reply == "250 2.0.0 Ok: queued as 4XyzQ1");
  }
  SECTION("MAIL refused by policy") {
    Harness h("submission");
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<a@example.com>\r\n") == "530 5.7.0 Authentication required\r\n");
    REQUIRE(h.services.transactions.size() == 1);
    CHECK(h.services.transactions[0].outcome == "rejected");
    CHECK(h.services.transactions[0].stage == Stage::Mail);
    CHECK(h.services.transactions[0].rule == "submission.auth_required");
    CHECK(h.services.transactions[0].from == "a@example.com");
  }
  SECTION("RSET abandons it; the next one is recorded on its own") {
    Harness h;
    h.connect();
    h.ehlo();
    start_transaction(h);
    CHECK(h.send("RSET\r\n") == kOk);
    REQUIRE(h.services.transactions.size() == 1);
    CHECK(h.services.transactions[0].outcome == "abandoned");
    CHECK(h.services.transactions[0].stage == Stage::Rset);
    CHECK(h.services.transactions[0].accepted == std::vector<std::string>{"u1@example.com"});
  }
  SECTION("too big at the end of the body") {
    Harness h;
    h.connect();
    h.ehlo();
    start_body(h);
    CHECK(h.body_end(BodyFilter::Status::End, 5000) ==
          "552 5.3.4 Message size exceeds fixed limit\r\n");
    REQUIRE(h.services.transactions.size() == 1);
    CHECK(h.services.transactions[0].outcome == "rejected");
    CHECK(h.services.transactions[0].rule == "message.size");
    CHECK(h.services.transactions[0].size == 5000);
  }
  SECTION("the client leaves mid-transaction") {
    Harness h;
    h.connect();
    h.ehlo();
    start_transaction(h);
    h.d->on_session_end();
    h.d->on_session_end();  // once only
    REQUIRE(h.services.transactions.size() == 1);
    CHECK(h.services.transactions[0].outcome == "abandoned");
  }
  SECTION("recipients beyond the record's cap are counted, not kept") {
    Options o;
    o.parts.mx = R"({ "access": { "default": "allow" }, "max_recipients": 1000 })";
    Harness h(o);
    h.connect();
    h.ehlo();
    CHECK(h.send("MAIL FROM:<sender@example.org>\r\n") == "");
    CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
    for (int i = 0; i < 150; ++i) {
      CHECK(h.send("RCPT TO:<u" + std::to_string(i) + "@example.com>\r\n") == "");
      CHECK(h.backend(BackendCommand::Rcpt, kRcptOk) == kRcptOk);
    }
    CHECK(h.send("RSET\r\n") == kOk);
    REQUIRE(h.services.transactions.size() == 1);
    CHECK(h.services.transactions[0].recipients.size() == Dialogue::kMaxRecordedRecipients);
  }
}

TEST_CASE("dialogue: a wrong password retried counts once (distinct_passwords)", "[dialogue]") {
  Options o("submission");
  o.parts.brute_force = R"({ "max_failures": 3 })";
  Harness h(o);
  h.connect();
  h.ehlo();
  for (int i = 0; i < 5; ++i)
    CHECK(auth_plain(h, "user@example.com", "old-saved", "535 5.7.8 bad\r\n") ==
          "535 5.7.8 bad\r\n");
  CHECK(h.services.failures == 1);
  CHECK(h.services.bans.empty());
  // The auth lines tell a repeat from a counted failure.
  REQUIRE(h.services.auths.size() == 5);
  CHECK(h.services.auths[0].outcome == AuthOutcome::Failed);
  for (size_t i = 1; i < 5; ++i) CHECK(h.services.auths[i].outcome == AuthOutcome::FailedRepeated);
  CHECK(auth_plain(h, "user@example.com", "guess-2", "535 5.7.8 bad\r\n") == "535 5.7.8 bad\r\n");
  CHECK(auth_plain(h, "user@example.com", "guess-3", "535 5.7.8 bad\r\n") == "535 5.7.8 bad\r\n");
  CHECK(h.services.failures == 3);
  CHECK(h.services.bans.size() == 1);  // three distinct wrong passwords: the ban
  CHECK(h.io.closed == "banned");

  // Off: every attempt counts.
  o.parts.brute_force = R"({ "max_failures": 3, "distinct_passwords": false })";
  Harness off(o);
  off.connect();
  off.ehlo();
  for (int i = 0; i < 3; ++i) auth_plain(off, "user@example.com", "old-saved", "535 5.7.8 bad\r\n");
  CHECK(off.services.failures == 3);
  CHECK(off.services.bans.size() == 1);
}

TEST_CASE("dialogue: a login locked by per_login is refused by the gateway, never forwarded",
          "[dialogue]") {
  Options o("submission");
  o.parts.brute_force = R"({ "max_failures": 5, "per_login": { "max_failures": 10 } })";
  Harness h(o);
  h.connect();
  h.ehlo();
  h.services.locked_until = "2026-12-03T05:00:00.000Z";
  CHECK(h.send("AUTH PLAIN " + plain_response("user@example.com", "guess") + "\r\n") ==
        "535 5.7.8 Authentication credentials invalid\r\n");
  CHECK(h.io.auths.empty());  // the backend never saw it
  const Decision* d = h.services.find("brute_force.login");
  REQUIRE(d);
  CHECK(d->reason.find("locked until 2026-12-03T05:00:00.000Z") != std::string::npos);
  CHECK(h.services.failures == 1);  // it counts against the address
  // Unlocked: a rejection counts for the login too, a success is remembered.
  h.services.locked_until.clear();
  CHECK(auth_plain(h, "user@example.com", "guess-2", "535 5.7.8 bad\r\n") == "535 5.7.8 bad\r\n");
  CHECK(h.services.login_failures == std::vector<std::string>{"user@example.com"});
  CHECK(auth_plain(h, "user@example.com", "right", "235 2.7.0 ok\r\n") == kAuthOk);
  CHECK(h.services.login_successes == std::vector<std::string>{"user@example.com"});
}
