// Rate limits kept in memory: connections per client IP (token buckets) and messages and
// recipients per login in the last hour. Pure: the caller passes the time, so tests move a
// manual clock and the gateway passes uv_now().
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <string>
#include <string_view>

#include "policy/duration.h"
#include "policy/ip_address.h"

namespace smtpgate {

// Milliseconds of a monotonic clock with an arbitrary epoch (the loop's uv_now()).
using SteadyMillis = int64_t;

// A bucket of `rate.count` tokens that refills at `rate.count` per `rate.per`, starting full.
// Integer arithmetic without drift: one token is `per` milliseconds' worth of units and the
// bucket gains `count` units per millisecond, so "7/m" refills exactly 7 tokens a minute.
class TokenBucket {
 public:
  TokenBucket(Rate rate, SteadyMillis now);

  // Takes one token if a whole one is available.
  bool try_take(SteadyMillis now);
  uint32_t available(SteadyMillis now) const;  // whole tokens
  bool full(SteadyMillis now) const;

 private:
  uint64_t level_at(SteadyMillis now) const;
  uint64_t capacity() const { return uint64_t{count_} * per_ms_; }

  uint32_t count_;
  uint32_t per_ms_;
  uint64_t level_;  // units; capacity() when full
  SteadyMillis stamp_;
};

// connections.rate_per_ip: one token bucket per client IP. Memory is bounded: buckets that
// have refilled are dropped (a full bucket is the same as none), and when the table is at
// its cap the least recently used IP is forgotten (that IP gets a fresh burst: the
// connection caps still protect the gateway, while refusing every new IP would not).
class ConnectionRateLimiter {
 public:
  static constexpr size_t kDefaultMaxTrackedIps = 100000;

  // A rate with count 0 disables the limiter: allow() is then always true.
  explicit ConnectionRateLimiter(Rate rate = {}, size_t max_tracked = kDefaultMaxTrackedIps);

  // On a policy reload. A changed rate forgets every bucket (clients start full again).
  void set_rate(Rate rate);
  const Rate& rate() const { return rate_; }
  bool enabled() const { return rate_.count > 0; }

  // Counts one connection attempt of `ip`; false when its bucket is empty.
  bool allow(const IpAddress& ip, SteadyMillis now);

  size_t tracked() const { return table_.size(); }
  size_t max_tracked() const { return max_tracked_; }

 private:
  struct Slot {
    TokenBucket bucket;
    std::list<IpAddress>::iterator lru;
  };
  void drop_full(SteadyMillis now);

  Rate rate_;
  size_t max_tracked_;
  std::map<IpAddress, Slot> table_;
  std::list<IpAddress> lru_;  // front: least recently used
};

// submission.limits: messages and recipients per login in the last hour, kept as 60
// per-minute buckets so each login costs a fixed amount of memory. A message counts from
// the minute it was recorded until 60 whole minutes later (so for 59 to 60 minutes).
// Logins are compared case-insensitively (ASCII).
class SendingLimiter {
 public:
  static constexpr size_t kDefaultMaxTrackedLogins = 10000;
  static constexpr int64_t kBuckets = 60;
  static constexpr int64_t kBucketMillis = 60 * 1000;

  explicit SendingLimiter(size_t max_tracked = kDefaultMaxTrackedLogins);

  uint64_t messages_last_hour(std::string_view login, SteadyMillis now) const;
  uint64_t recipients_last_hour(std::string_view login, SteadyMillis now) const;
  // One message accepted for `recipients` recipients.
  void record_message(std::string_view login, uint32_t recipients, SteadyMillis now);

  size_t tracked() const { return table_.size(); }
  size_t max_tracked() const { return max_tracked_; }

 private:
  struct Bucket {
    uint32_t messages = 0;
    uint32_t recipients = 0;
  };
  struct Window {
    int64_t head = 0;  // the minute of the newest bucket
    std::array<Bucket, kBuckets> buckets{};
    std::list<std::string>::iterator lru;
  };
  struct Totals {
    uint64_t messages = 0;
    uint64_t recipients = 0;
  };
  Totals totals(std::string_view login, SteadyMillis now) const;
  static Totals sum(const Window& w, int64_t minute);
  void drop_idle(int64_t minute);

  size_t max_tracked_;
  std::map<std::string, Window, std::less<>> table_;  // key: lower-cased login
  std::list<std::string> lru_;                        // front: least recently recorded
};

}  // namespace smtpgate
