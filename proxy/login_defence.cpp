#include "proxy/login_defence.h"

#include "policy/domain_set.h"
#include "proxy/log.h"
#include "proxy/shared_sync.h"
#include "proxy/state_journal.h"

namespace smtpgate {

std::string LoginDefence::locked_for(const PerLoginPolicy& p, std::string_view login,
                                     const IpAddress& key, UnixMillis now) const {
  if (!guard_.locked_for(login, key, now, p)) return {};
  return iso_time(guard_.locked_until(login, now));
}

uint64_t LoginDefence::failure(const PerLoginPolicy& p, std::string_view login, UnixMillis now,
                               std::string_view session) {
  if (login.empty()) return 0;
  const auto f = guard_.record_failure(login, now, p);
  if (sync_) sync_->failure("login", ascii_lower(login), now, p.window.count() * 1000);
  if (!f.locked_now) return 0;
  if (sync_) sync_->login_lock(login, f.until, f.failures);
  log_.write("login_lock", {{"session", session},
                            {"login", std::string(login)},
                            {"action", "lock"},
                            {"until", iso_time(f.until)},
                            {"failures", f.failures}});
  return journal_ ? journal_->record_login_lock(login, f.until, f.failures) : 0;
}

void LoginDefence::success(std::string_view login, const IpAddress& key, UnixMillis now) {
  // A new known-good address is written at once: a restart must not lock the owner out, and
  // neither may another instance (behind a balancer the owner lands on any of them).
  if (!guard_.record_success(login, key, now)) return;
  if (journal_) journal_->record_known_good(login, key, now);
  if (sync_) sync_->known_good(login, key, now);
}

std::optional<BreakerTrip> LoginDefence::breaker_login(const BreakerPolicy& p,
                                                       std::string_view login, const IpAddress& key,
                                                       UnixMillis now) {
  return breaker_.login(login, key, now, p);
}

std::optional<BreakerTrip> LoginDefence::breaker_recipient(const BreakerPolicy& p,
                                                           std::string_view login,
                                                           std::string_view domain,
                                                           UnixMillis now) {
  return breaker_.recipient(login, domain, now, p);
}

std::optional<BreakerTrip> LoginDefence::breaker_refused(const BreakerPolicy& p,
                                                         std::string_view login, UnixMillis now) {
  return breaker_.refused_recipient(login, now, p);
}

uint64_t LoginDefence::suspend(std::string_view login, const BreakerTrip& trip, UnixMillis now,
                               std::string_view session) {
  if (!breaker_.suspend(login, trip, now)) return 0;  // another session was first
  log_.write("suspend", {{"session", session},
                         {"login", std::string(login)},
                         {"action", "suspend"},
                         {"enforced", true},
                         {"trigger", trip.trigger},
                         {"value", trip.value},
                         {"threshold", trip.threshold}});
  if (sync_) sync_->suspend(*breaker_.suspended(login));
  return journal_ ? journal_->record_suspension(*breaker_.suspended(login)) : 0;
}

void LoginDefence::would_suspend(std::string_view login, const BreakerTrip& trip, UnixMillis now,
                                 std::string_view session) {
  if (!breaker_.would_suspend_due(login, now)) return;  // one line an hour per login
  log_.write("suspend", {{"session", session},
                         {"login", std::string(login)},
                         {"action", "would_suspend"},
                         {"enforced", false},
                         {"trigger", trip.trigger},
                         {"value", trip.value},
                         {"threshold", trip.threshold}});
}

nlohmann::json LoginDefence::list(UnixMillis now) const {
  nlohmann::json out = nlohmann::json::array();
  const auto locks = guard_.locks(now);
  const auto suspensions = breaker_.suspensions();
  // Both lists are sorted by login: merged, a login locked and suspended is listed twice.
  auto l = locks.begin();
  auto s = suspensions.begin();
  while (l != locks.end() || s != suspensions.end()) {
    if (s == suspensions.end() || (l != locks.end() && l->login <= s->login)) {
      out.push_back({{"login", l->login},
                     {"state", "locked"},
                     {"until", iso_time(l->until)},
                     {"failures", l->failures},
                     {"trigger", "brute_force.per_login"}});
      ++l;
    } else {
      out.push_back({{"login", s->login},
                     {"state", "suspended"},
                     {"since", iso_time(s->since)},
                     {"until", nullptr},  // until an admin releases it
                     {"trigger", "submission.breaker." + s->trigger},
                     {"value", s->value},
                     {"threshold", s->threshold}});
      ++s;
    }
  }
  return out;
}

bool LoginDefence::release(std::string_view typed, UnixMillis now) {
  const std::string login = ascii_lower(typed);  // as the lines and the state file name it
  const bool was_locked = guard_.locked_until(login, now) != 0;
  const bool was_suspended = breaker_.suspended(login) != nullptr;
  guard_.release(login);
  breaker_.release(login);
  if (!was_locked && !was_suspended) return false;
  if (was_locked)
    log_.write("login_lock",
               {{"login", std::string(login)}, {"action", "release"}, {"reason", "admin"}});
  if (was_suspended)
    log_.write("suspend",
               {{"login", std::string(login)}, {"action", "release"}, {"reason", "admin"}});
  if (journal_) journal_->record_login_release(login);
  if (sync_) sync_->login_release(login);
  return true;
}

}  // namespace smtpgate
