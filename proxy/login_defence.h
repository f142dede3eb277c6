// The gateway's login defences (SPEC §9): brute_force.per_login locks and submission.breaker
// suspensions. Holds their state (policy/login_guard.h, policy/login_breaker.h), writes their
// log lines and state-file records, and serves GET /logins and DELETE /logins/LOGIN. The
// policy decides (engine::login_locked, engine::breaker_tripped); this class remembers.
//
// Addresses passed in are ban keys (an IPv6 client's /ipv6_prefix). Times are Unix ms.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

#include "policy/login_breaker.h"
#include "policy/login_guard.h"
#include "policy/policy.h"

namespace smtpgate {

class Logger;
class StateJournal;
class SharedSync;

class LoginDefence {
 public:
  explicit LoginDefence(Logger& log) : log_(log) {}

  // The state file: loaded into guard() and breaker() before the journal starts.
  LoginGuard& guard() { return guard_; }
  LoginBreaker& breaker() { return breaker_; }
  void set_journal(StateJournal* journal) { journal_ = journal; }
  void set_sync(SharedSync* sync) { sync_ = sync; }  // with shared.redis

  // brute_force.per_login: the lock's end (ISO 8601) when `login` is locked for `key`, else "".
  std::string locked_for(const PerLoginPolicy& p, std::string_view login, const IpAddress& key,
                         UnixMillis now) const;
  // failure() and suspend() return the state-file record a lock or suspension they made
  // was queued as (0: none): the session's reply waits for it, as for a ban.
  uint64_t failure(const PerLoginPolicy& p, std::string_view login, UnixMillis now,
                   std::string_view session);
  void success(std::string_view login, const IpAddress& key, UnixMillis now);

  // submission.breaker: counts what an authenticated login did; a trip when it crossed a
  // threshold just now.
  std::optional<BreakerTrip> breaker_login(const BreakerPolicy& p, std::string_view login,
                                           const IpAddress& key, UnixMillis now);
  std::optional<BreakerTrip> breaker_recipient(const BreakerPolicy& p, std::string_view login,
                                               std::string_view domain, UnixMillis now);
  std::optional<BreakerTrip> breaker_refused(const BreakerPolicy& p, std::string_view login,
                                             UnixMillis now);
  const Suspension* suspended(std::string_view login) const { return breaker_.suspended(login); }
  uint64_t suspend(std::string_view login, const BreakerTrip& trip, UnixMillis now,
                   std::string_view session);
  void would_suspend(std::string_view login, const BreakerTrip& trip, UnixMillis now,
                     std::string_view session);

  // GET /logins: {"logins": [...]}, locked and suspended logins by name.
  nlohmann::json list(UnixMillis now) const;
  // DELETE /logins/LOGIN: lifts its lock and its suspension; false if it had neither.
  bool release(std::string_view login, UnixMillis now);
  size_t locked(UnixMillis now) const { return guard_.locks(now).size(); }
  size_t suspended_count() const { return breaker_.suspensions().size(); }

 private:
  Logger& log_;
  LoginGuard guard_;
  LoginBreaker breaker_;
  StateJournal* journal_ = nullptr;  // with brute_force.state_file
  SharedSync* sync_ = nullptr;       // with shared.redis
};

}  // namespace smtpgate
