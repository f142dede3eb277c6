#include "proxy/session_services.h"

#include "policy/rule_ids.h"
#include "proxy/gateway.h"

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
  return static_cast<uint32_t>(gw_.sending().messages_last_hour(login, gw_.now_ms()));
}

uint32_t SessionServices::recipients_last_hour(std::string_view login) {
  return static_cast<uint32_t>(gw_.sending().recipients_last_hour(login, gw_.now_ms()));
}

uint32_t SessionServices::record_auth_failure(const IpAddress& ip) {
  return gw_.record_auth_failure(ip);
}

void SessionServices::ban(const IpAddress& ip, const std::string& reason) {
  ban_record_ = gw_.ban(ip, reason, id_);
}

void SessionServices::would_ban(const IpAddress& ip, const std::string& reason) {
  gw_.would_ban(ip, reason, id_);
}

void SessionServices::decision(const Decision& d) {
  gw_.metrics().decision(to_string(d.stage), d.rule, to_string(d.verdict), d.enforced);
  LogLine(gw_.log(), "decision", log_prefix_)
      .str("stage", to_string(d.stage))
      .str("rule", d.rule)
      .str("verdict", to_string(d.verdict))
      .boolean("enforced", d.enforced)
      .str("reason", d.reason)
      .str("reply", d.reply.line())
      .write();
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
  static constexpr std::string_view kResult[] = {"ok", "failed", "tempfail", "refused"};
  static constexpr AuthResult kMetric[] = {AuthResult::Ok, AuthResult::Failed, AuthResult::Tempfail,
                                           AuthResult::Refused};
  const auto i = static_cast<size_t>(outcome);
  LogLine(gw_.log(), "auth", log_prefix_)
      .str("login", login)
      .str("result", kResult[i])
      .str("reply", reply)
      .write();
  gw_.metrics().auth(kMetric[i]);
}

void SessionServices::message(std::string_view from, uint64_t size, uint32_t recipients,
                              std::string_view reply, bool delivered) {
  LogLine(gw_.log(), "message", log_prefix_)
      .str("from", from)
      .num("size", static_cast<int64_t>(size))
      .num("recipients", recipients)
      .str("reply", smtp::first_line(reply))
      .boolean("delivered", delivered)
      .write();
  if (!delivered) {
    gw_.metrics().message_rejected();
    return;
  }
  gw_.metrics().message_delivered(size);
  if (dialogue_ && dialogue_->facts().authenticated)
    gw_.sending().record_message(dialogue_->facts().login, recipients, gw_.now_ms());
}

}  // namespace smtpgate
