// submission.breaker (SPEC §9): what one authenticated login did over the last hour —
// distinct client addresses, distinct recipient domains, recipients the backend refused — and
// the suspensions a crossed threshold caused. A suspension lasts until an admin releases it.
// Pure bookkeeping: time is passed in; the caller decides (engine::breaker) and logs.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "policy/ban_list.h"
#include "policy/ip_address.h"
#include "policy/login_table.h"
#include "policy/policy.h"

namespace smtpgate {

// A threshold crossed: which one (the policy key), the count it reached, the threshold.
struct BreakerTrip {
  std::string_view trigger;  // "max_ips_per_hour", ... (static text)
  uint32_t value = 0;
  uint32_t threshold = 0;
};

struct Suspension {
  std::string login;  // lower-cased
  UnixMillis since = 0;
  std::string trigger;
  uint32_t value = 0;
  uint32_t threshold = 0;
};

class LoginBreaker {
 public:
  // Memory bounds (README). Only logins the backend authenticated are tracked; the one
  // unchanged longest is forgotten first. Per login at most threshold + 1 entries of each kind
  // are kept (the count never needs to go further). Suspensions are never dropped: only an
  // admin ends one.
  static constexpr size_t kMaxLogins = 20000;
  static constexpr int64_t kHourMs = 3600 * 1000;

  // A login from `ip` (the ban key: an IPv6 client's prefix) that the backend accepted.
  std::optional<BreakerTrip> login(std::string_view login, const IpAddress& ip, UnixMillis now,
                                   const BreakerPolicy& p);
  // A recipient of `login` at `domain` that policy let through, before it is forwarded.
  std::optional<BreakerTrip> recipient(std::string_view login, std::string_view domain,
                                       UnixMillis now, const BreakerPolicy& p);
  // A recipient of `login` the backend refused (5xx).
  std::optional<BreakerTrip> refused_recipient(std::string_view login, UnixMillis now,
                                               const BreakerPolicy& p);

  // Dry-run: whether a would_suspend for `login` is due (at most one an hour per login).
  bool would_suspend_due(std::string_view login, UnixMillis now);

  // Suspends `login` (no change if it already is); true if it was not suspended before.
  bool suspend(std::string_view login, const BreakerTrip& trip, UnixMillis now);
  void restore(Suspension s);  // from the state file
  const Suspension* suspended(std::string_view login) const;
  bool any_suspended() const { return !suspended_.empty(); }
  bool release(std::string_view login);         // true if it was suspended; its counts start over
  std::vector<Suspension> suspensions() const;  // by login
  size_t tracked() const { return state_.size(); }

 private:
  struct State {
    std::vector<std::pair<IpAddress, UnixMillis>> ips;     // address, last seen
    std::vector<std::pair<uint64_t, UnixMillis>> domains;  // keyed hash of the domain, last seen
    std::vector<UnixMillis> refused;
    UnixMillis would_logged = 0;
    UnixMillis touched = 0;
  };
  uint64_t domain_hash(std::string_view domain) const;

  LoginTable<State, kMaxLogins> state_;  // key: lower-cased login
  std::unordered_map<std::string, Suspension> suspended_;
  // Random per table: recipients cannot aim at hash collisions.
  uint64_t seed_ = (uint64_t{std::random_device{}()} << 32) | std::random_device{}() | 1;
};

}  // namespace smtpgate
