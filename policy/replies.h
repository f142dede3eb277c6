// The one table of SMTP replies the gateway sends on its own (SPEC §3); code and tests use it.
#pragma once

#include <string>
#include <string_view>

#include "policy/decision.h"

namespace smtpgate::replies {

// A reply whose text never changes, with its wire form ("CODE TEXT\r\n") built once: the
// session writes it without building a string per reply. Usable where a Reply is wanted.
struct FixedReply {
  Reply reply;
  std::string wire;
  operator const Reply&() const { return reply; }  // NOLINT: a FixedReply is a Reply
};

// A reply's wire form: "CODE TEXT\r\n".
std::string wire(const Reply& r);

Reply access_denied(std::string_view hostname);  // 554 5.7.1 <hostname> access denied, close
Reply too_many_connections();                    // 421 4.7.0 ..., close
Reply must_starttls();                           // 530 5.7.0 Must issue a STARTTLS command first
Reply auth_invalid();                            // 535 5.7.8 Authentication credentials invalid
Reply auth_not_available();                      // 502 5.5.1 AUTH not available
Reply auth_required();                           // 530 5.7.0 Authentication required
Reply sender_not_owned(std::string_view login);  // 553 5.7.1 ... not owned by user <login>
Reply local_sender_needs_auth();          // 553 5.7.1 ... authentication required for local domains
Reply relay_denied();                     // 554 5.7.1 Relay access denied
Reply rate_limited();                     // 450 4.7.1 rate limit exceeded, try later
Reply connection_rate();                  // 421 4.7.0 too many connections, try later, close
Reply too_many_recipients();              // 452 4.5.3 Too many recipients
const FixedReply& backend_unavailable();  // 421 4.4.1 backend unavailable, try later, close
// submission.breaker: MAIL/RCPT/DATA (451 4.7.1) and AUTH (454 4.7.0) of a suspended login.
const FixedReply& account_suspended();
const FixedReply& account_suspended_auth();
const FixedReply& auth_backend_unavailable();   // 454 4.7.0 Temporary authentication failure
Reply message_too_big();                        // 552 5.3.4 Message size exceeds fixed limit
Reply line_too_long();                          // 500 5.5.2 Line too long
Reply bare_lf();                                // 521 5.5.2 bare <LF> received, close
Reply idle_timeout(std::string_view hostname);  // 421 4.4.2 <hostname> timeout, close
// Hostile and broken peers (SPEC §3).
Reply sync_error();         // 554 5.5.0 Error: SMTP protocol synchronization, close
Reply too_many_junk();      // 421 4.7.0 Error: too many junk commands, close
Reply bdat_refused();       // 502 5.5.1 Error: command not implemented, close
Reply smtputf8_required();  // 553 5.6.7 Must declare SMTPUTF8 to send unicode address
const FixedReply& backend_protocol_error();  // 451 4.3.0 Error: backend protocol error

// The protocol replies the gateway gives on its own (README "Protocol replies").
Reply greeting(std::string_view hostname);   // 220 <hostname> ESMTP
Reply syntax_error(std::string_view why);    // 501 5.5.4 Syntax error: <why>
const FixedReply& ok();                      // 250 2.0.0 Ok
const FixedReply& bye();                     // 221 2.0.0 Bye, close
const FixedReply& help();                    // 214 2.0.0 See RFC 5321
const FixedReply& vrfy();                    // 252 2.0.0 Cannot VRFY user, but will accept message
const FixedReply& unknown_command();         // 500 5.5.1 Error: command not recognized
const FixedReply& not_implemented();         // 502 5.5.1 Error: command not implemented
const FixedReply& bad_sender();              // 501 5.1.7 Bad sender address syntax
const FixedReply& bad_recipient();           // 501 5.1.3 Bad recipient address syntax
const FixedReply& need_helo();               // 503 5.5.1 Error: send HELO/EHLO first
const FixedReply& need_mail();               // 503 5.5.1 Error: need MAIL command
const FixedReply& need_rcpt();               // 503 5.5.1 Error: need RCPT command
const FixedReply& nested_mail();             // 503 5.5.1 Error: nested MAIL command
const FixedReply& no_valid_recipients();     // 554 5.5.1 Error: no valid recipients
const FixedReply& in_transaction();          // 503 5.5.1 Error: MAIL transaction in progress
const FixedReply& already_authenticated();   // 503 5.5.1 Error: already authenticated
const FixedReply& auth_mechanism_unknown();  // 504 5.5.4 Unrecognized authentication type
const FixedReply& auth_aborted();            // 501 5.7.0 Authentication aborted
const FixedReply& auth_bad_base64();         // 501 5.5.2 Cannot decode response
const FixedReply& auth_malformed();          // 501 5.5.4 Malformed credentials
const FixedReply& auth_ok();                 // 235 2.7.0 Authentication successful
const FixedReply& auth_plain_prompt();       // 334 (an empty challenge)
const FixedReply& auth_login_user_prompt();  // 334 VXNlcm5hbWU6 ("Username:")
const FixedReply& auth_login_pass_prompt();  // 334 UGFzc3dvcmQ6 ("Password:")
const FixedReply& tls_ready();               // 220 2.0.0 Ready to start TLS
const FixedReply& tls_unavailable();         // 454 4.7.0 TLS not available
const FixedReply& tls_active();              // 503 5.5.1 Error: TLS already active
const FixedReply& too_many_errors();         // 421 4.7.0 Error: too many errors, close
const FixedReply& shutting_down();  // 421 4.3.2 Service shutting down, closing connection, close

}  // namespace smtpgate::replies
