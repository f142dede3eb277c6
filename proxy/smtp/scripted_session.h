// A session without network: the live session's own dialogue (proxy/smtp/dialogue.h) fed the
// commands such a client sends (EHLO, STARTTLS, AUTH PLAIN, MAIL, RCPT), against a scripted
// backend, on a fresh gateway (no failures or sending counted yet). Every decision it takes
// is reported, allows too. Shared by `smtpgate explain` (a hypothetical session) and
// `smtpgate replay` (a recorded one under a new policy).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/decision.h"
#include "policy/ip_address.h"
#include "policy/login_breaker.h"
#include "policy/login_guard.h"
#include "policy/mail_address.h"
#include "policy/policy.h"

namespace smtpgate::smtp {

struct ScriptedSession {
  IpAddress client;
  const Listener* listener = nullptr;  // of the policy the session runs under; required
  // STARTTLS after EHLO, when the listener offers it (an implicit-TLS listener has TLS from
  // the start whatever this says).
  bool starttls = false;
  std::string helo = "client.example";
  std::optional<std::string> auth_user;  // AUTH PLAIN with this login
  bool auth_ok = true;                   // the backend answers 235, else 535
  // A refused AUTH ends the run (explain), or the client goes on unauthenticated as a
  // recorded one did (replay); a session the dialogue closes ends it either way.
  bool continue_after_auth_refusal = false;
  std::optional<MailPath> sender;  // MAIL FROM, if any (SMTPUTF8 when an address needs it)
  std::vector<std::string> rcpts;  // RCPT TO, in order: addresses without <>
  // Whether the backend accepts rcpts[i] once the policy lets it through; unset: all.
  std::function<bool(size_t)> backend_accepts_rcpt;
  std::string_view session_id = "explain";  // outlives the run
  // What the gateway remembers (explain reads it from the state file): locked logins
  // (brute_force.per_login) and suspended ones (submission.breaker) at `now`. Null: none.
  const LoginGuard* logins = nullptr;
  const LoginBreaker* breaker = nullptr;
  UnixMillis now = 0;
};

struct ScriptedResult {
  std::vector<Decision> decisions;  // in order, allows too
  // A refusal ended the session before its RCPTs (a refused RCPT does not: the client goes
  // on with the next).
  bool stopped = false;
  bool mail_forwarded = false;  // MAIL passed the policy and went to the backend
  uint32_t rcpt_forwarded = 0;  // RCPTs the policy let through
  uint32_t rcpt_accepted = 0;   // of those, the ones the scripted backend accepted
};

ScriptedResult run_scripted_session(const Policy& policy, const ScriptedSession& s);

}  // namespace smtpgate::smtp
