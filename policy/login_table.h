// Per-login state, bounded: at most kMax logins, the one changed longest ago forgotten first.
// Shared by brute_force.per_login (LoginGuard) and submission.breaker (LoginBreaker). A map
// (key: lower-cased login) plus the order of changes; State has a `touched` time.
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "policy/ban_list.h"
#include "policy/domain_set.h"

namespace smtpgate {

template <class State, size_t kMax>
class LoginTable : public std::unordered_map<std::string, State> {
 public:
  // The login's state (created if new), marked changed at `now`.
  State& touch(std::string_view login, UnixMillis now) {
    std::string key = ascii_lower(login);
    auto [it, inserted] = this->try_emplace(key);
    it->second.touched = now;
    order_.emplace_back(now, key);
    if (!inserted && order_.size() <= 4 * kMax) return it->second;
    evict();
    return (*this)[key];  // (eviction may have taken it when every entry has the same time)
  }

 private:
  void evict() {
    // One order entry per change; an entry whose login changed since is stale.
    while (!order_.empty() && (this->size() > kMax || order_.size() > 4 * kMax)) {
      auto [t, key] = std::move(order_.front());
      order_.pop_front();
      auto it = this->find(key);
      if (it != this->end() && it->second.touched == t && this->size() > kMax) this->erase(it);
    }
  }

  std::deque<std::pair<UnixMillis, std::string>> order_;  // (touched, login)
};

}  // namespace smtpgate
