#include "policy/login_breaker.h"

#include <algorithm>
#include <random>

#include "policy/domain_set.h"

namespace smtpgate {
namespace {

// Entries seen within the hour; older ones are dropped. Keeps at most `cap` (the newest).
template <class Entry, class TimeOf>
void prune(std::vector<Entry>& v, UnixMillis now, size_t cap, TimeOf time_of) {
  const UnixMillis horizon = now - LoginBreaker::kHourMs;
  std::erase_if(v, [&](const Entry& e) { return time_of(e) <= horizon; });
  if (v.size() > cap) v.erase(v.begin(), v.end() - static_cast<std::ptrdiff_t>(cap));
}

// A distinct key seen now: counted once within the hour, its time refreshed.
template <class Key>
uint32_t count_distinct(std::vector<std::pair<Key, UnixMillis>>& v, const Key& key, UnixMillis now,
                        uint32_t threshold) {
  prune(v, now, SIZE_MAX, [](const auto& e) { return e.second; });
  auto it = std::find_if(v.begin(), v.end(), [&](const auto& e) { return e.first == key; });
  if (it != v.end()) {
    // Moved to the back: the vector stays ordered by time, and trimming drops the oldest.
    auto entry = *it;
    entry.second = now;
    v.erase(it);
    v.push_back(entry);
  } else {
    v.emplace_back(key, now);
  }
  if (v.size() > size_t{threshold} + 1)
    v.erase(v.begin(), v.end() - static_cast<std::ptrdiff_t>(threshold + 1));
  return static_cast<uint32_t>(v.size());
}

std::optional<BreakerTrip> crossed(std::string_view trigger, uint32_t value, uint32_t threshold) {
  if (value <= threshold) return std::nullopt;
  return BreakerTrip{trigger, value, threshold};
}

}  // namespace

uint64_t LoginBreaker::domain_hash(std::string_view domain) const {
  // FNV-1a from a secret basis, case-folded: distinct domains are counted, not stored.
  uint64_t h = seed_;
  for (char c : domain) {
    h ^= static_cast<unsigned char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::optional<BreakerTrip> LoginBreaker::login(std::string_view login, const IpAddress& ip,
                                               UnixMillis now, const BreakerPolicy& p) {
  if (!p.max_ips_per_hour) return std::nullopt;
  State& s = state_.touch(login, now);
  return crossed("max_ips_per_hour", count_distinct(s.ips, ip, now, *p.max_ips_per_hour),
                 *p.max_ips_per_hour);
}

std::optional<BreakerTrip> LoginBreaker::recipient(std::string_view login, std::string_view domain,
                                                   UnixMillis now, const BreakerPolicy& p) {
  if (!p.max_rcpt_domains_per_hour) return std::nullopt;
  State& s = state_.touch(login, now);
  const uint32_t n =
      count_distinct(s.domains, domain_hash(domain), now, *p.max_rcpt_domains_per_hour);
  return crossed("max_rcpt_domains_per_hour", n, *p.max_rcpt_domains_per_hour);
}

std::optional<BreakerTrip> LoginBreaker::refused_recipient(std::string_view login, UnixMillis now,
                                                           const BreakerPolicy& p) {
  if (!p.max_rejected_rcpts_per_hour) return std::nullopt;
  State& s = state_.touch(login, now);
  const uint32_t threshold = *p.max_rejected_rcpts_per_hour;
  s.refused.push_back(now);
  prune(s.refused, now, size_t{threshold} + 1, [](UnixMillis t) { return t; });
  return crossed("max_rejected_rcpts_per_hour", static_cast<uint32_t>(s.refused.size()), threshold);
}

bool LoginBreaker::would_suspend_due(std::string_view login, UnixMillis now) {
  State& s = state_.touch(login, now);
  if (s.would_logged != 0 && now - s.would_logged < kHourMs) return false;
  s.would_logged = now;
  return true;
}

bool LoginBreaker::suspend(std::string_view login, const BreakerTrip& trip, UnixMillis now) {
  std::string key = ascii_lower(login);
  if (suspended_.contains(key)) return false;
  Suspension s{key, now, std::string(trip.trigger), trip.value, trip.threshold};
  suspended_.emplace(std::move(key), std::move(s));
  return true;
}

void LoginBreaker::restore(Suspension s) {
  s.login = ascii_lower(s.login);
  std::string key = s.login;
  suspended_.insert_or_assign(std::move(key), std::move(s));
}

const Suspension* LoginBreaker::suspended(std::string_view login) const {
  if (suspended_.empty()) return nullptr;  // the common case: no lookup, no lower-casing
  auto it = suspended_.find(ascii_lower(login));
  return it == suspended_.end() ? nullptr : &it->second;
}

bool LoginBreaker::release(std::string_view login) {
  const std::string key = ascii_lower(login);
  state_.erase(key);  // a released login starts counting afresh
  return suspended_.erase(key) > 0;
}

std::vector<Suspension> LoginBreaker::suspensions() const {
  std::vector<Suspension> out;
  out.reserve(suspended_.size());
  for (const auto& [login, s] : suspended_) out.push_back(s);
  std::sort(out.begin(), out.end(),
            [](const Suspension& a, const Suspension& b) { return a.login < b.login; });
  return out;
}

}  // namespace smtpgate
