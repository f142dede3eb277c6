// The decision engine: one pure function per session stage. No clock, no I/O, no state:
// the caller passes the policy snapshot, the session's facts and its counters.
#pragma once

#include <cstdint>
#include <string>

#include "policy/decision.h"
#include "policy/ip_address.h"
#include "policy/login_breaker.h"
#include "policy/mail_address.h"
#include "policy/policy.h"

namespace smtpgate {

// What the session knows about itself when it asks for a decision.
struct SessionFacts {
  IpAddress client;
  const Listener* listener = nullptr;  // never null when asking
  // The session's class now: an auto listener starts as Auto (unclassified) and becomes
  // Submission after a successful AUTH or Mx at MAIL FROM without AUTH.
  ListenerClass cls = ListenerClass::Mx;
  bool tls = false;
  bool authenticated = false;
  std::string login;    // the login (authenticated, or being tried at the auth stage)
  bool banned = false;  // the ban list holds the client now (ban list owned by the caller)
  // False: allow decisions at MAIL, RCPT and end of data come without reason text. A
  // session never logs those (only refusals), and the text would cost an allocation per
  // command; explain and the tests keep it.
  bool allow_reasons = true;
};

// Counters the caller keeps (per login for submission, per transaction for recipients).
struct Counters {
  uint32_t recipients_in_message = 0;  // accepted RCPTs so far in this transaction
  uint32_t messages_last_hour = 0;     // by this login, before this one
  uint32_t recipients_last_hour = 0;   // by this login, before this RCPT
};

namespace engine {

ListenerClass initial_class(const Listener& listener);  // Auto stays Auto until classified

// connect: ban (unless never_ban), then the access list(s) of the listener's class;
// on auto the connection is refused only when both lists deny.
Decision connect(const Policy& p, const SessionFacts& s);

// AUTH command received (before credentials are collected or forwarded):
// mx listener -> mx.auth (refuse, or ban); TLS required -> submission.require_tls;
// auto listener -> submission.access for the client.
Decision auth_attempt(const Policy& p, const SessionFacts& s);

// Whether an AUTH refusal from auth_attempt counts as a brute-force failure.
bool auth_refusal_counts_as_failure(const Decision& d);

// The backend judged the credentials: allow or reject, rule "auth" (535 on failure).
Decision auth_result(const Policy& p, const SessionFacts& s, bool ok);

// After a counted AUTH failure: failures_in_window includes this one. Ban (rule
// "brute_force", 535 then close) when it reaches max_failures and the client is not in
// never_ban; otherwise an allow that says how many failures are counted.
Decision brute_force(const Policy& p, const SessionFacts& s, uint32_t failures_in_window);

// AUTH as a login that brute_force.per_login locked (for this address: not a known-good one):
// 535 5.7.8, never forwarded to the backend. `until_text`: when the lock ends (for the reason).
Decision login_locked(const Policy& p, const SessionFacts& s, std::string_view until_text);

// submission.breaker: `trip` was just crossed by the session's login (451 4.7.1 at MAIL, RCPT
// and DATA; 454 4.7.0 at AUTH, after the backend accepted the password), or the login is
// already suspended (`s`). Tempfail: the sender keeps its mail queued.
Decision breaker_tripped(const Policy& p, const SessionFacts& s, Stage stage,
                         const BreakerTrip& trip);
Decision login_suspended(const Policy& p, const SessionFacts& s, Stage stage,
                         const Suspension& suspension);

// The class of a session after MAIL FROM: auto + authenticated -> Submission,
// auto unauthenticated -> Mx; other classes unchanged.
ListenerClass class_at_mail(const SessionFacts& s);

// MAIL FROM (s.cls already updated by class_at_mail). size_param: the SIZE= value or 0.
Decision mail(const Policy& p, const SessionFacts& s, const MailPath& sender, uint64_t size_param,
              const Counters& c);

// RCPT TO.
Decision rcpt(const Policy& p, const SessionFacts& s, const MailPath& sender,
              const MailPath& recipient, const Counters& c);

// End of data: message size (always enforced).
Decision data_end(const Policy& p, const SessionFacts& s, uint64_t body_bytes);

// The body ended: at a bare LF or CR (message.bare_newline reject: 521, close), else at
// CRLF.CRLF (data_end).
Decision body_end(const Policy& p, const SessionFacts& s, uint64_t body_bytes, bool bare_newline);

// The gateway's own connection caps (SPEC §3), checked before any policy and always enforced.
struct ConnectionLoad {
  uint32_t open_total = 0;    // sessions admitted and still open
  uint32_t open_from_ip = 0;  // of those, from this client
  bool over_rate = false;     // the client's connection rate is over connections.rate_per_ip
};
Decision admit(const Policy& p, const IpAddress& client, const ConnectionLoad& load);

}  // namespace engine
}  // namespace smtpgate
