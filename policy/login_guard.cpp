#include "policy/login_guard.h"

#include <algorithm>

#include "policy/domain_set.h"

namespace smtpgate {

LoginGuard::State& LoginGuard::touch(std::string_view login, UnixMillis now) {
  std::string key = ascii_lower(login);
  State& s = state_[key];
  s.touched = now;
  order_.emplace_back(now, std::move(key));
  evict();
  return state_[ascii_lower(login)];
}

void LoginGuard::evict() {
  // The order queue holds one entry per change; an entry whose login changed since is stale.
  while (!order_.empty() && (state_.size() > kMaxLogins || order_.size() > 4 * kMaxLogins)) {
    auto [t, key] = std::move(order_.front());
    order_.pop_front();
    auto it = state_.find(key);
    if (it != state_.end() && it->second.touched == t && state_.size() > kMaxLogins)
      state_.erase(it);
  }
}

LoginGuard::Failure LoginGuard::record_failure(std::string_view login, UnixMillis now,
                                               const PerLoginPolicy& p) {
  State& s = touch(login, now);
  const UnixMillis horizon = now - p.window.count() * 1000;
  std::erase_if(s.failures, [&](UnixMillis t) { return t <= horizon; });
  s.failures.push_back(now);
  if (s.failures.size() > p.max_failures)
    s.failures.erase(s.failures.begin(),
                     s.failures.end() - static_cast<std::ptrdiff_t>(p.max_failures));
  Failure f;
  f.failures = static_cast<uint32_t>(s.failures.size());
  if (f.failures >= p.max_failures && s.lock_until <= now) {
    s.lock_until = now + p.lock.count() * 1000;
    f.locked_now = true;
  }
  f.until = s.lock_until > now ? s.lock_until : 0;
  return f;
}

void LoginGuard::record_success(std::string_view login, const IpAddress& ip, UnixMillis now) {
  State& s = touch(login, now);
  auto it = std::find_if(s.known_good.begin(), s.known_good.end(),
                         [&](const auto& k) { return k.first == ip; });
  if (it != s.known_good.end()) {
    it->second = now;
    return;
  }
  if (s.known_good.size() >= kMaxKnownGood) {
    auto oldest =
        std::min_element(s.known_good.begin(), s.known_good.end(),
                         [](const auto& a, const auto& b) { return a.second < b.second; });
    s.known_good.erase(oldest);
  }
  s.known_good.emplace_back(ip, now);
}

bool LoginGuard::locked_for(std::string_view login, const IpAddress& ip, UnixMillis now,
                            const PerLoginPolicy& p) const {
  auto it = state_.find(ascii_lower(login));
  if (it == state_.end() || it->second.lock_until <= now) return false;
  const UnixMillis since = now - p.known_good.count() * 1000;
  for (const auto& [addr, at] : it->second.known_good)
    if (addr == ip && at > since) return false;  // the owner's address keeps working
  return true;
}

UnixMillis LoginGuard::locked_until(std::string_view login, UnixMillis now) const {
  auto it = state_.find(ascii_lower(login));
  return it == state_.end() || it->second.lock_until <= now ? 0 : it->second.lock_until;
}

std::vector<LoginGuard::Lock> LoginGuard::locks(UnixMillis now) const {
  std::vector<Lock> out;
  for (const auto& [login, s] : state_)
    if (s.lock_until > now)
      out.push_back({login, s.lock_until, static_cast<uint32_t>(s.failures.size())});
  std::sort(out.begin(), out.end(), [](const Lock& a, const Lock& b) { return a.login < b.login; });
  return out;
}

bool LoginGuard::release(std::string_view login) {
  auto it = state_.find(ascii_lower(login));
  if (it == state_.end() || it->second.lock_until == 0) return false;
  it->second.lock_until = 0;
  it->second.failures.clear();
  return true;
}

}  // namespace smtpgate
