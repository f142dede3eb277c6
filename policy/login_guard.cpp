#include "policy/login_guard.h"

#include <algorithm>

#include "policy/domain_set.h"

namespace smtpgate {

LoginGuard::Failure LoginGuard::record_failure(std::string_view login, UnixMillis now,
                                               const PerLoginPolicy& p) {
  State& s = state_.touch(login, now);
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
    s.lock_failures = f.failures;
    f.locked_now = true;
  }
  f.until = s.lock_until > now ? s.lock_until : 0;
  return f;
}

bool LoginGuard::record_success(std::string_view login, const IpAddress& ip, UnixMillis now) {
  State& s = state_.touch(login, now);
  auto it = std::find_if(s.known_good.begin(), s.known_good.end(),
                         [&](const State::Good& k) { return k.ip == ip; });
  if (it != s.known_good.end()) {
    it->at = now;
    if (now - it->saved < kResaveMs) return false;
    it->saved = now;
    return true;
  }
  if (s.known_good.size() >= kMaxKnownGood) {
    auto oldest =
        std::min_element(s.known_good.begin(), s.known_good.end(),
                         [](const State::Good& a, const State::Good& b) { return a.at < b.at; });
    s.known_good.erase(oldest);
  }
  s.known_good.push_back({ip, now, now});
  return true;
}

void LoginGuard::restore_lock(std::string_view login, UnixMillis until, uint32_t failures,
                              UnixMillis now) {
  if (until <= now) return;
  State& s = state_.touch(login, now);
  s.lock_until = until;
  s.lock_failures = failures;
}

void LoginGuard::restore_known_good(std::string_view login, const IpAddress& ip, UnixMillis at) {
  State& s = state_.touch(login, at);
  auto it = std::find_if(s.known_good.begin(), s.known_good.end(),
                         [&](const State::Good& k) { return k.ip == ip; });
  if (it != s.known_good.end()) {
    it->at = it->saved = std::max(it->at, at);
    return;
  }
  if (s.known_good.size() >= kMaxKnownGood) {
    auto oldest =
        std::min_element(s.known_good.begin(), s.known_good.end(),
                         [](const State::Good& a, const State::Good& b) { return a.at < b.at; });
    if (oldest->at >= at) return;
    s.known_good.erase(oldest);
  }
  s.known_good.push_back({ip, at, at});
}

bool LoginGuard::locked_for(std::string_view login, const IpAddress& ip, UnixMillis now,
                            const PerLoginPolicy& p) const {
  auto it = state_.find(ascii_lower(login));
  if (it == state_.end() || it->second.lock_until <= now) return false;
  const UnixMillis since = now - p.known_good.count() * 1000;
  for (const auto& k : it->second.known_good)
    if (k.ip == ip && k.at > since) return false;  // the owner's address keeps working
  return true;
}

UnixMillis LoginGuard::locked_until(std::string_view login, UnixMillis now) const {
  auto it = state_.find(ascii_lower(login));
  return it == state_.end() || it->second.lock_until <= now ? 0 : it->second.lock_until;
}

std::vector<LoginGuard::Lock> LoginGuard::locks(UnixMillis now) const {
  std::vector<Lock> out;
  for (const auto& [login, s] : state_)
    if (s.lock_until > now) out.push_back({login, s.lock_until, s.lock_failures});
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
