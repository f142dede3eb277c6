// brute_force.per_login (SPEC §9): failures of one login counted from every address; at the
// threshold the login is locked for addresses where it has not logged in lately, so spread
// guessing stops while the owner keeps working. Pure bookkeeping: time is passed in.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "policy/ban_list.h"
#include "policy/ip_address.h"
#include "policy/login_table.h"
#include "policy/policy.h"

namespace smtpgate {

class LoginGuard {
 public:
  // Memory bounds (README): logins with failures or known-good addresses kept, the oldest
  // (by last change) dropped first; known-good addresses per login, the oldest dropped first.
  static constexpr size_t kMaxLogins = 100000;
  static constexpr size_t kMaxKnownGood = 16;

  struct Failure {
    uint32_t failures = 0;    // within the window, this one included
    bool locked_now = false;  // this failure locked the login
    UnixMillis until = 0;     // the lock's end, when locked
  };
  // A failure of `login` (credentials the backend rejected).
  Failure record_failure(std::string_view login, UnixMillis now, const PerLoginPolicy& p);
  // A successful login from `ip` (`ip` as the ban list keys it: an IPv6 client's prefix).
  // True when the state file should hear of it: a new address, or one last written there
  // more than kResaveMs ago (a login used every minute is not written every minute).
  bool record_success(std::string_view login, const IpAddress& ip, UnixMillis now);
  static constexpr int64_t kResaveMs = 86400 * 1000;
  // Locked, and `ip` is not an address it succeeded from within known_good.
  bool locked_for(std::string_view login, const IpAddress& ip, UnixMillis now,
                  const PerLoginPolicy& p) const;
  // When the login's lock ends (0: not locked).
  UnixMillis locked_until(std::string_view login, UnixMillis now) const;
  bool release(std::string_view login);  // lifts a lock; true if there was one
  struct Lock {
    std::string login;  // lower-cased
    UnixMillis until = 0;
    uint32_t failures = 0;  // the count that locked it
  };
  std::vector<Lock> locks(UnixMillis now) const;  // the locks in force, by login
  size_t logins() const { return state_.size(); }

  // The state file (locks and known-good addresses; failure counts are not kept).
  void restore_lock(std::string_view login, UnixMillis until, uint32_t failures, UnixMillis now);
  void restore_known_good(std::string_view login, const IpAddress& ip, UnixMillis at);
  // Calls lock(login, until, failures) for each lock in force and good(login, ip, at) for
  // each known-good address newer than `good_since`.
  template <class OnLock, class OnGood>
  void visit(UnixMillis now, UnixMillis good_since, OnLock&& lock, OnGood&& good) const {
    for (const auto& [login, s] : state_) {
      if (s.lock_until > now) lock(login, s.lock_until, s.lock_failures);
      for (const auto& k : s.known_good)
        if (k.at > good_since) good(login, k.ip, k.at);
    }
  }

 private:
  struct State {
    // Within the window, at most max_failures (a few): a vector, where a deque would take
    // half a kilobyte per login.
    std::vector<UnixMillis> failures;
    UnixMillis lock_until = 0;
    uint32_t lock_failures = 0;  // the count that locked it
    struct Good {
      IpAddress ip;
      UnixMillis at = 0;     // last success
      UnixMillis saved = 0;  // last told to the state file
    };
    std::vector<Good> known_good;
    UnixMillis touched = 0;
  };

  LoginTable<State, kMaxLogins> state_;  // key: lower-cased login
};

}  // namespace smtpgate
