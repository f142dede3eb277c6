#include "policy/rate_limiter.h"

#include <algorithm>
#include <cassert>
#include <limits>

namespace smtpgate {
namespace {

uint32_t period_ms(const Rate& rate) {
  int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(rate.per).count();
  return static_cast<uint32_t>(std::clamp<int64_t>(ms, 1, std::numeric_limits<uint32_t>::max()));
}

// Floor division: a minute index that stays correct for times before the clock's epoch.
int64_t minute_of(SteadyMillis now) {
  int64_t q = now / SendingLimiter::kBucketMillis;
  if (now % SendingLimiter::kBucketMillis < 0) --q;
  return q;
}

size_t slot_of(int64_t minute) {
  int64_t r = minute % SendingLimiter::kBuckets;
  return static_cast<size_t>(r < 0 ? r + SendingLimiter::kBuckets : r);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

}  // namespace

// ---------------------------------------------------------------- TokenBucket

TokenBucket::TokenBucket(Rate rate, SteadyMillis now)
    : count_(rate.count), per_ms_(period_ms(rate)), level_(capacity()), stamp_(now) {}

uint64_t TokenBucket::level_at(SteadyMillis now) const {
  // A clock that steps back refills nothing rather than draining the bucket.
  int64_t elapsed = now > stamp_ ? now - stamp_ : 0;
  // After one full period any bucket is full; capping here also keeps the product in range.
  if (elapsed >= per_ms_) return capacity();
  return std::min(capacity(), level_ + static_cast<uint64_t>(elapsed) * count_);
}

bool TokenBucket::try_take(SteadyMillis now) {
  level_ = level_at(now);
  if (now > stamp_) stamp_ = now;
  if (level_ < per_ms_) return false;
  level_ -= per_ms_;
  return true;
}

uint32_t TokenBucket::available(SteadyMillis now) const {
  return static_cast<uint32_t>(level_at(now) / per_ms_);
}

bool TokenBucket::full(SteadyMillis now) const {
  return level_at(now) == capacity();
}

// ---------------------------------------------------------------- ConnectionRateLimiter

ConnectionRateLimiter::ConnectionRateLimiter(Rate rate, size_t max_tracked)
    : rate_(rate), max_tracked_(std::max<size_t>(max_tracked, 1)) {}

void ConnectionRateLimiter::set_rate(Rate rate) {
  if (rate.count == rate_.count && rate.per == rate_.per) return;
  rate_ = rate;
  table_.clear();
  lru_.clear();
}

void ConnectionRateLimiter::drop_full(SteadyMillis now) {
  // Least recently used first; stops at the first bucket still refilling, so the cost is
  // amortised over the insertions.
  while (!lru_.empty()) {
    auto it = table_.find(lru_.front());
    assert(it != table_.end());
    if (!it->second.bucket.full(now)) break;
    table_.erase(it);
    lru_.pop_front();
  }
}

bool ConnectionRateLimiter::allow(const IpAddress& ip, SteadyMillis now) {
  if (!enabled()) return true;
  drop_full(now);
  auto it = table_.find(ip);
  if (it != table_.end()) {
    lru_.splice(lru_.end(), lru_, it->second.lru);
    return it->second.bucket.try_take(now);
  }
  if (table_.size() >= max_tracked_) {
    table_.erase(lru_.front());
    lru_.pop_front();
  }
  lru_.push_back(ip);
  auto [slot, inserted] = table_.emplace(ip, Slot{TokenBucket(rate_, now), std::prev(lru_.end())});
  assert(inserted);
  (void)inserted;
  return slot->second.bucket.try_take(now);
}

// ---------------------------------------------------------------- SendingLimiter

SendingLimiter::SendingLimiter(size_t max_tracked)
    : max_tracked_(std::max<size_t>(max_tracked, 1)) {}

SendingLimiter::Totals SendingLimiter::sum(const Window& w, int64_t minute) {
  Totals t;
  for (int64_t d = 0; d < kBuckets; ++d) {
    int64_t m = w.head - d;
    if (m > minute || m <= minute - kBuckets) continue;
    const Bucket& b = w.buckets[slot_of(m)];
    t.messages += b.messages;
    t.recipients += b.recipients;
  }
  return t;
}

SendingLimiter::Totals SendingLimiter::totals(std::string_view login, SteadyMillis now) const {
  auto it = table_.find(lower(login));
  if (it == table_.end()) return {};
  return sum(it->second, minute_of(now));
}

uint64_t SendingLimiter::messages_last_hour(std::string_view login, SteadyMillis now) const {
  return totals(login, now).messages;
}

uint64_t SendingLimiter::recipients_last_hour(std::string_view login, SteadyMillis now) const {
  return totals(login, now).recipients;
}

void SendingLimiter::drop_idle(int64_t minute) {
  while (!lru_.empty()) {
    auto it = table_.find(lru_.front());
    assert(it != table_.end());
    if (it->second.head > minute - kBuckets) break;
    table_.erase(it);
    lru_.pop_front();
  }
}

void SendingLimiter::record_message(std::string_view login, uint32_t recipients, SteadyMillis now) {
  int64_t minute = minute_of(now);
  drop_idle(minute);
  std::string key = lower(login);
  auto it = table_.find(key);
  if (it == table_.end()) {
    if (table_.size() >= max_tracked_) {
      table_.erase(lru_.front());
      lru_.pop_front();
    }
    lru_.push_back(key);
    Window w;
    w.head = minute;
    w.lru = std::prev(lru_.end());
    it = table_.emplace(std::move(key), w).first;
  } else {
    lru_.splice(lru_.end(), lru_, it->second.lru);
  }
  Window& w = it->second;
  if (minute > w.head) {
    // Clear the minutes between the newest bucket and now: they had no traffic.
    int64_t gap = std::min(minute - w.head, kBuckets);
    for (int64_t m = minute - gap + 1; m <= minute; ++m) w.buckets[slot_of(m)] = {};
    w.head = minute;
  }
  // A clock that steps back adds to the newest bucket instead of reopening an old one.
  Bucket& b = w.buckets[slot_of(w.head)];
  b.messages = b.messages == std::numeric_limits<uint32_t>::max() ? b.messages : b.messages + 1;
  uint64_t r = uint64_t{b.recipients} + recipients;
  b.recipients = static_cast<uint32_t>(std::min<uint64_t>(r, std::numeric_limits<uint32_t>::max()));
}

}  // namespace smtpgate
