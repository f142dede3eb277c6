// Brute-force state: AUTH failures per client IP in a sliding window, and bans with
// escalating durations. Pure: the caller passes the time; persistence is a JSON value.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/ip_address.h"
#include "policy/policy.h"

namespace smtpgate {

using UnixSeconds = int64_t;

struct BanEntry {
  IpAddress ip;
  UnixSeconds since = 0;
  UnixSeconds until = 0;
  uint32_t offense = 1;  // 1 for the first ban; each repeat multiplies the duration
  std::string reason;
};

class BanList {
 public:
  // Bounds memory under a flood of distinct addresses: the oldest failure records go first.
  static constexpr size_t kMaxTrackedIps = 200000;

  // Records one failure; returns the failures of `ip` within `window`, this one included.
  uint32_t record_failure(const IpAddress& ip, UnixSeconds now, const BruteForcePolicy& bf);
  // Bans `ip` (escalated per its earlier offenses); resets its failure count.
  BanEntry ban(const IpAddress& ip, UnixSeconds now, const BruteForcePolicy& bf,
               std::string reason);
  bool banned(const IpAddress& ip, UnixSeconds now) const;
  std::optional<BanEntry> find(const IpAddress& ip, UnixSeconds now) const;
  bool unban(const IpAddress& ip);
  std::vector<BanEntry> active(UnixSeconds now) const;
  // Drops expired bans (their offense count is kept for escalation until max_ban passes).
  // Returns true when a ban was dropped.
  bool expire(UnixSeconds now, const BruteForcePolicy& bf);

  nlohmann::json to_json() const;
  // Returns an error message for a malformed document (then nothing is loaded).
  std::string from_json(const nlohmann::json& doc);

  size_t tracked_failures() const { return failures_.size(); }

 private:
  struct History {
    uint32_t offenses = 0;
    UnixSeconds last_until = 0;
  };
  std::map<IpAddress, BanEntry> bans_;
  std::map<IpAddress, History> history_;
  std::unordered_map<std::string, std::deque<UnixSeconds>> failures_;  // key: ip text
  std::deque<std::pair<UnixSeconds, std::string>> failure_order_;      // for eviction
};

}  // namespace smtpgate
