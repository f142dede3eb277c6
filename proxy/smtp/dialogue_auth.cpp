// AUTH: the policy checks, the SASL exchange with the client, the backend's verdict on the
// credentials, and brute-force counting.
#include "proxy/smtp/dialogue.h"

#include "policy/rule_ids.h"

namespace smtpgate::smtp {

void Dialogue::cmd_auth(const Command& cmd) {
  if (!helo_seen_) return reply_error(replies::need_helo().wire);
  if (facts_.authenticated) return reply_error(replies::already_authenticated().wire);
  if (txn_.active) return reply_error(replies::in_transaction().wire);
  auth_tried_ = true;
  // The login the client offers in its initial response is named in the logs even when the
  // attempt is refused before the exchange (AUTH on port 25); the password never is.
  if (cmd.auth_initial_response) facts_.login = offered_login(cmd);
  Decision d = engine::auth_attempt(policy_, facts_);
  report(d);
  if (!d.allowed()) {
    if (!d.enforced && d.verdict == Verdict::Ban) services_.would_ban(facts_.client, d.reason);
    if (d.enforced) {
      if (d.verdict == Verdict::Ban) {
        services_.ban(facts_.client, d.reason);
        reply(d.reply);
        close("banned");
        return;
      }
      auth_failed_locally(replies::wire(d.reply), engine::auth_refusal_counts_as_failure(d));
      return;
    }
  }
  sasl_outcome(sasl_.start(cmd.auth_mechanism, cmd.auth_initial_response));
}

std::string Dialogue::offered_login(const Command& cmd) {
  const std::string_view initial = *cmd.auth_initial_response;
  if (iequals(cmd.auth_mechanism, "PLAIN")) {
    auto creds = parse_plain_response(initial);
    return creds ? creds->authcid : std::string();
  }
  if (iequals(cmd.auth_mechanism, "LOGIN")) {
    auto login = decode_sasl_response(initial);
    if (!login) return {};
    std::string out = std::move(*login);
    return out;
  }
  return {};
}

void Dialogue::sasl_outcome(SaslExchange::Outcome o) {
  switch (o.kind) {
    case SaslExchange::Outcome::Kind::Prompt:
      phase_ = Phase::Sasl;
      reply(o.reply->wire);
      return;
    case SaslExchange::Outcome::Kind::Credentials:
      auth_with(std::move(o.credentials));
      return;
    case SaslExchange::Outcome::Kind::Failed:
      auth_failed_locally(o.reply->wire, true);
      return;
    case SaslExchange::Outcome::Kind::Unsupported:
      reply_error(o.reply->wire);
      return;
  }
}

void Dialogue::auth_with(Credentials creds) {
  facts_.login = creds.authcid;
  if (policy_.brute_force.per_login) {
    // Spread guessing locked the login: strangers' attempts never reach the backend (its own
    // lockout would shut the owner out), and each counts against the address.
    if (const std::string until = services_.login_locked(facts_.login, facts_.client);
        !until.empty()) {
      const Decision d = engine::login_locked(policy_, facts_, until);
      report(d);
      if (d.enforced) {
        auth_failed_locally(replies::wire(d.reply), true);
        return;
      }
    }
  }
  if (backend_auth_lost_ || !io_.backend_open() ||
      !io_.backend_auth(creds.authcid, creds.password)) {
    reply(replies::auth_backend_unavailable().wire);
    return;
  }
  replies_.add_owed(BackendCommand::Auth);
  password_key_ = policy_.brute_force.distinct_passwords
                      ? services_.password_key(facts_.client, creds.authcid, creds.password)
                      : 0;
  waiting_ = true;
  io_.clear_deadline();
}

void Dialogue::reply_to_auth(const BackendReply& r) {
  waiting_ = false;
  const bool ok = r.code == 235;
  if (ok && policy_.submission.breaker && breaker_refuses_auth()) return;
  // The backend's verdict is the session's; only explain lists it as a decision (a live
  // session logs the auth line below instead).
  if (report_allows_) report(engine::auth_result(policy_, facts_, ok));
  if (ok) {
    facts_.authenticated = true;
    if (facts_.cls == ListenerClass::Auto) set_class(ListenerClass::Submission);
  }
  // The backend rejected the credentials. A wrong password retried (a phone with an old one
  // saved) counts once per window; otherwise the failure counts for the address and, with
  // per_login, for the login from every address.
  const uint64_t key = password_key_;
  password_key_ = 0;
  const bool rejected = !ok && r.permanent();
  const bool repeated = rejected && key != 0 && policy_.brute_force.distinct_passwords &&
                        services_.repeated_failure(key);
  services_.auth(facts_.login,
                 ok         ? AuthOutcome::Ok
                 : repeated ? AuthOutcome::FailedRepeated
                            : (r.transient() ? AuthOutcome::Tempfail : AuthOutcome::Failed),
                 first_line(r.raw));
  backend_reply_arrived(ok ? std::string_view(replies::auth_ok().wire) : r.raw);
  if (ok && policy_.brute_force.per_login)
    services_.record_login_success(facts_.login, facts_.client);
  if (rejected && !repeated) {
    if (policy_.brute_force.per_login) services_.record_login_failure(facts_.login);
    count_auth_failure(r.raw);
  }
  command_deadline();
}

bool Dialogue::breaker_refuses_auth() {
  // The password was right: a suspended login (or the login that suspends it now, from one
  // address too many) is refused all the same, and the backend session it opened is dropped.
  Decision d;
  if (const auto s = services_.login_suspended(facts_.login)) {
    d = engine::login_suspended(policy_, facts_, Stage::Auth, *s);
    report(d);
  } else if (auto trip = services_.breaker_login(facts_.login, facts_.client)) {
    d = trip_breaker(Stage::Auth, *trip);
  }
  if (!d.blocks()) return false;
  password_key_ = 0;
  services_.auth(facts_.login, AuthOutcome::Refused, d.reply.line());
  io_.backend_abort();
  backend_reply_arrived(replies::wire(d.reply));  // in the AUTH reply's place
  command_deadline();
  return true;
}

void Dialogue::auth_failed_locally(std::string_view text, bool counts) {
  services_.auth(facts_.login, AuthOutcome::Refused, first_line(text));
  reply(text);
  if (counts) count_auth_failure(text);
}

bool Dialogue::count_auth_failure(std::string_view sent) {
  const uint32_t n = services_.record_auth_failure(facts_.client);
  Decision d = engine::brute_force(policy_, facts_, n);
  if (d.verdict != Verdict::Ban) {
    // An allow: how many failures are counted. At the threshold, never_ban's rescue is
    // reported even by a live session (it is the one allow worth a log line).
    if (d.rule == rules::kBruteForceNeverBan) {
      services_.decision(d, DecisionFacts{helo_, facts_.login, {}, {}});
    } else {
      report(d);
    }
    return false;
  }
  // The failing command already has its reply; the decision records what was sent.
  set_reply_sent(d, sent);
  report(d);
  if (!d.enforced) {
    services_.would_ban(facts_.client, d.reason);
    return false;
  }
  services_.ban(facts_.client, d.reason);
  close("banned");
  return true;
}

}  // namespace smtpgate::smtp
