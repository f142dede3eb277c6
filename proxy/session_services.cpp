#include "proxy/session_services.h"

#include "policy/rule_ids.h"
#include "proxy/gateway.h"
#include "proxy/shared_sync.h"
#include "proxy/unix_time.h"

namespace smtpgate {

SessionServices::SessionServices(Gateway& gw, const Listener& listener, std::string id)
    : gw_(gw), listener_(listener), id_(std::move(id)) {}

void SessionServices::set_client(std::string text) {
  client_text_ = std::move(text);
  update_log_prefix();
}

void SessionServices::attach(const smtp::Dialogue& dialogue) {
  dialogue_ = &dialogue;
  update_log_prefix();
}

void SessionServices::update_log_prefix() {
  const ListenerClass cls = dialogue_ ? dialogue_->facts().cls : engine::initial_class(listener_);
  log_prefix_ = gw_.log().render_fields({{"session", id_},
                                         {"client", client_text_},
                                         {"listener", listener_.name},
                                         {"class", to_string(cls)}});
}

uint64_t SessionServices::now_ms() {
  return static_cast<uint64_t>(gw_.now_ms());
}

uint32_t SessionServices::messages_last_hour(std::string_view login) {
  return gw_.shared().with([&](SharedState::Data& d) {
    return static_cast<uint32_t>(d.sending.messages_last_hour(login, Gateway::now_ms()));
  });
}

uint32_t SessionServices::recipients_last_hour(std::string_view login) {
  return gw_.shared().with([&](SharedState::Data& d) {
    return static_cast<uint32_t>(d.sending.recipients_last_hour(login, Gateway::now_ms()));
  });
}

uint32_t SessionServices::record_auth_failure(const IpAddress& ip) {
  return gw_.record_auth_failure(ip);
}

uint64_t SessionServices::password_key(const IpAddress& ip, std::string_view login,
                                       std::string_view password) {
  return gw_.password_keyer().key(ip, login, password);
}

bool SessionServices::repeated_failure(uint64_t key) {
  return gw_.repeated_failure(key);
}

std::string SessionServices::login_locked(std::string_view login, const IpAddress& ip) {
  return gw_.shared().with([&](SharedState::Data& d) -> std::string {
    const auto& bf = d.policy->brute_force;
    // never_ban addresses (the office) keep logging in whatever strangers did.
    if (!bf.per_login || bf.never_ban.lookup(ip)) return {};
    return d.logins.locked_for(*bf.per_login, login, d.ban_key(ip), unix_now());
  });
}

void SessionServices::record_login_failure(std::string_view login) {
  wait_for_record(gw_.shared().with([&](SharedState::Data& d) -> uint64_t {
    const auto& per = d.policy->brute_force.per_login;
    return per ? d.logins.failure(*per, login, unix_now(), id_) : 0;
  }));
}

void SessionServices::record_login_success(std::string_view login, const IpAddress& ip) {
  gw_.shared().with([&](SharedState::Data& d) {
    if (d.policy->brute_force.per_login) d.logins.success(login, d.ban_key(ip), unix_now());
  });
}

std::optional<BreakerTrip> SessionServices::breaker_login(std::string_view login,
                                                          const IpAddress& ip) {
  return gw_.shared().with([&](SharedState::Data& d) -> std::optional<BreakerTrip> {
    const auto& b = d.policy->submission.breaker;
    if (!b) return std::nullopt;
    return d.logins.breaker_login(*b, login, d.ban_key(ip), unix_now());
  });
}

std::optional<BreakerTrip> SessionServices::breaker_recipient(std::string_view login,
                                                              std::string_view domain) {
  return gw_.shared().with([&](SharedState::Data& d) -> std::optional<BreakerTrip> {
    const auto& b = d.policy->submission.breaker;
    if (!b) return std::nullopt;
    return d.logins.breaker_recipient(*b, login, domain, unix_now());
  });
}

std::optional<BreakerTrip> SessionServices::breaker_refused(std::string_view login) {
  return gw_.shared().with([&](SharedState::Data& d) -> std::optional<BreakerTrip> {
    const auto& b = d.policy->submission.breaker;
    if (!b) return std::nullopt;
    return d.logins.breaker_refused(*b, login, unix_now());
  });
}

std::optional<Suspension> SessionServices::login_suspended(std::string_view login) {
  return gw_.shared().with([&](SharedState::Data& d) -> std::optional<Suspension> {
    const Suspension* s = d.logins.suspended(login);
    if (!s) return std::nullopt;
    return *s;  // a copy: the table may change once the lock is released
  });
}

void SessionServices::suspend(std::string_view login, const BreakerTrip& trip) {
  wait_for_record(gw_.shared().with(
      [&](SharedState::Data& d) { return d.logins.suspend(login, trip, unix_now(), id_); }));
}

void SessionServices::would_suspend(std::string_view login, const BreakerTrip& trip) {
  gw_.shared().with(
      [&](SharedState::Data& d) { d.logins.would_suspend(login, trip, unix_now(), id_); });
}

void SessionServices::ban(const IpAddress& ip, const std::string& reason) {
  wait_for_record(gw_.ban(ip, reason, id_));
}

void SessionServices::would_ban(const IpAddress& ip, const std::string& reason) {
  gw_.would_ban(ip, reason, id_);
}

void SessionServices::decision(const Decision& d, const smtp::DecisionFacts& f) {
  gw_.metrics().decision(to_string(d.stage), d.rule, to_string(d.verdict), d.enforced);
  LogLine line(gw_.log(), "decision", log_prefix_);
  line.str("stage", to_string(d.stage))
      .str("rule", d.rule)
      .str("verdict", to_string(d.verdict))
      .boolean("enforced", d.enforced)
      .str("reason", d.reason)
      .str("reply", d.reply.line());
  // What the decision was about, as far as the session knows it (never a password).
  if (!f.helo.empty()) line.str("helo", f.helo);
  if (!f.login.empty()) line.str("login", f.login);
  if (d.stage == Stage::Mail || d.stage == Stage::Rcpt)
    line.str("from", f.from.empty() && d.stage == Stage::Mail ? "<>" : f.from);
  if (!f.rcpt.empty()) line.str("rcpt", f.rcpt);
  line.write();
}

void SessionServices::connection_refused(const Decision& d) {
  RefusedReason why = RefusedReason::Access;
  if (d.rule == rules::kLimitsConnectionRate) why = RefusedReason::Rate;
  if (d.rule == rules::kLimitsConnections) why = RefusedReason::Limit;
  if (d.rule == rules::kBan) why = RefusedReason::Ban;
  gw_.metrics().connection_refused(why);
}

void SessionServices::auth(std::string_view login, smtp::AuthOutcome outcome,
                           std::string_view reply) {
  static constexpr std::string_view kResult[] = {"ok", "failed", "tempfail", "refused", "failed"};
  static constexpr AuthResult kMetric[] = {AuthResult::Ok, AuthResult::Failed, AuthResult::Tempfail,
                                           AuthResult::Refused, AuthResult::Failed};
  const auto i = static_cast<size_t>(outcome);
  LogLine line(gw_.log(), "auth", log_prefix_);
  line.str("login", login).str("result", kResult[i]).str("reply", reply);
  // A password this address already failed with: not counted again (distinct_passwords).
  if (outcome == smtp::AuthOutcome::FailedRepeated) line.boolean("repeated", true);
  line.write();
  gw_.metrics().auth(kMetric[i]);
}

void SessionServices::transaction(const smtp::TransactionRecord& t) {
  const SessionFacts* f = dialogue_ ? &dialogue_->facts() : nullptr;
  const bool delivered = t.outcome == "delivered";
  if (t.message) {
    LogLine m(gw_.log(), "message", log_prefix_);
    m.str("from", t.from)
        .num("size", static_cast<int64_t>(t.size))
        .num("recipients", t.accepted_count)
        .list("to", t.accepted)
        .str("reply", t.reply)
        .boolean("delivered", delivered);
    if (f && f->authenticated) m.str("login", f->login);
    m.write();
    if (delivered) {
      gw_.metrics().message_delivered(t.size);
      if (f && f->authenticated)
        gw_.shared().with([&](SharedState::Data& d) {
          d.sending.record_message(f->login, t.accepted_count, Gateway::now_ms());
          if (d.sync) d.sync->sent(f->login, t.accepted_count, unix_now());
        });
    } else {
      gw_.metrics().message_rejected();
    }
  }
  // SPEC §11: what replay and learn need, one line per transaction however it ended.
  LogLine line(gw_.log(), "transaction", log_prefix_);
  line.str("outcome", t.outcome).str("stage", to_string(t.stage));
  if (!t.rule.empty()) line.str("rule", t.rule);
  line.str("reply", t.reply).str("from", t.from).list("recipients", t.recipients);
  if (t.recipients_omitted) line.num("recipients_omitted", t.recipients_omitted);
  line.list("accepted", t.accepted).num("size", static_cast<int64_t>(t.size));
  if (dialogue_) {
    line.str("helo", dialogue_->helo()).boolean("tls", f->tls);
    line.str("auth", f->authenticated ? "ok" : dialogue_->auth_tried() ? "failed" : "none");
    if (!f->login.empty()) line.str("login", f->login);
  }
  line.write();
}

}  // namespace smtpgate
