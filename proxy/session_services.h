// What a session's dialogue asks of the gateway (counters, the ban list) and reports to it
// (log lines and metrics), with the session's log fields rendered once for every line.
#pragma once

#include <algorithm>

#include <cstdint>
#include <string>

#include "proxy/smtp/dialogue.h"

namespace smtpgate {

class Gateway;

class SessionServices final : public smtp::DialogueServices {
 public:
  SessionServices(Gateway& gw, const Listener& listener, std::string id);

  // The client ("1.2.3.4:5678") and the dialogue whose facts (class, login) the reports name.
  void set_client(std::string text);
  void attach(const smtp::Dialogue& dialogue);
  const std::string& id() const { return id_; }
  // The session's fields for its log lines (session, client, listener, class).
  const std::string& log_prefix() const { return log_prefix_; }
  // The state-file record (a ban, a login lock, a suspension) this session's reply waits
  // for (0: none), so a crash right after the reply cannot lose it; the session takes it.
  uint64_t take_ban_record() {
    const uint64_t r = ban_record_;
    ban_record_ = 0;
    return r;
  }

  uint64_t now_ms() override;
  uint32_t messages_last_hour(std::string_view login) override;
  uint32_t recipients_last_hour(std::string_view login) override;
  uint32_t record_auth_failure(const IpAddress& ip) override;
  uint64_t password_key(const IpAddress& ip, std::string_view login,
                        std::string_view password) override;
  bool repeated_failure(uint64_t key) override;
  std::string login_locked(std::string_view login, const IpAddress& ip) override;
  void record_login_failure(std::string_view login) override;
  void record_login_success(std::string_view login, const IpAddress& ip) override;
  std::optional<BreakerTrip> breaker_login(std::string_view login, const IpAddress& ip) override;
  std::optional<BreakerTrip> breaker_recipient(std::string_view login,
                                               std::string_view domain) override;
  std::optional<BreakerTrip> breaker_refused(std::string_view login) override;
  std::optional<Suspension> login_suspended(std::string_view login) override;
  void suspend(std::string_view login, const BreakerTrip& trip) override;
  void would_suspend(std::string_view login, const BreakerTrip& trip) override;
  void ban(const IpAddress& ip, const std::string& reason) override;
  void would_ban(const IpAddress& ip, const std::string& reason) override;
  void decision(const Decision& d, const smtp::DecisionFacts& facts) override;
  void connection_refused(const Decision& d) override;
  void auth(std::string_view login, smtp::AuthOutcome outcome, std::string_view reply) override;
  void transaction(const smtp::TransactionRecord& t) override;
  void class_changed() override { update_log_prefix(); }

 private:
  void update_log_prefix();

  Gateway& gw_;
  const Listener& listener_;
  std::string id_;
  std::string client_text_;
  std::string log_prefix_;
  const smtp::Dialogue* dialogue_ = nullptr;
  uint64_t ban_record_ = 0;
  void wait_for_record(uint64_t r) { ban_record_ = std::max(ban_record_, r); }
};

}  // namespace smtpgate
