// Brute-force state: AUTH failures per client IP in a sliding window, and bans with
// escalating durations. Pure: the caller passes the time (Unix milliseconds, so a "1s" ban
// lasts a second, not up to the next whole second); the journal (proxy/state_journal.h)
// persists it.
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

using UnixMillis = int64_t;

struct BanEntry {
  IpAddress ip;
  UnixMillis since = 0;
  UnixMillis until = 0;  // the first moment the address is free again
  uint32_t offense = 1;  // 1 for the first ban; each repeat multiplies the duration
  std::string reason;
  // 0: the address alone; else `ip` is the network of an IPv6 client's /prefix (its ban
  // covers every address in it: brute_force.ipv6_prefix).
  uint8_t prefix = 0;
  std::string target() const {  // "192.0.2.7", "2001:db8:1:2::/64"
    return prefix ? ip.to_string() + "/" + std::to_string(prefix) : ip.to_string();
  }
};

class BanList {
 public:
  // Bounds memory under a flood of distinct addresses: the oldest failure records go first.
  static constexpr size_t kMaxTrackedIps = 200000;

  // Records one failure; returns the failures of `ip` within `window`, this one included.
  uint32_t record_failure(const IpAddress& ip, UnixMillis now, const BruteForcePolicy& bf);
  // Stale passwords: true when a failure with this key (a keyed hash of address, login and
  // password, made by the caller) was counted within `window`; otherwise remembers it and
  // returns false. At most kMaxTrackedKeys are kept, the oldest dropped first.
  static constexpr size_t kMaxTrackedKeys = 200000;
  bool repeated_failure(uint64_t key, UnixMillis now, Seconds window);
  // Bans `ip` (escalated per its earlier offenses); resets its failure count.
  // `prefix`: `ip` is an IPv6 network of that length (BanEntry::prefix).
  BanEntry ban(const IpAddress& ip, UnixMillis now, const BruteForcePolicy& bf, std::string reason,
               uint8_t prefix = 0);
  // An operator's ban (`smtpgate bans add`): `duration_ms` as given, counted as an offense.
  BanEntry ban_for(const IpAddress& ip, UnixMillis now, UnixMillis duration_ms, std::string reason,
                   uint8_t prefix = 0);
  bool banned(const IpAddress& ip, UnixMillis now) const;
  std::optional<BanEntry> find(const IpAddress& ip, UnixMillis now) const;
  bool unban(const IpAddress& ip);
  std::vector<BanEntry> active(UnixMillis now) const;
  // Drops expired bans (their offense count is kept for escalation until max_ban passes).
  // Returns true when a ban was dropped.
  bool expire(UnixMillis now, const BruteForcePolicy& bf);

  // Puts back a ban as it was recorded (the journal at start): the ban and its offense
  // history, without escalating.
  void restore(const BanEntry& e);
  // Puts back the offense history of an address that is not banned now.
  void restore_history(const IpAddress& ip, uint32_t offenses, UnixMillis last_until);
  // Every ban (expired ones too, until expire() drops them), then every history entry of an
  // address without a ban: what a compacted journal holds.
  template <class OnBan, class OnHistory>
  void visit(OnBan&& on_ban, OnHistory&& on_history) const {
    for (const auto& [ip, e] : bans_) on_ban(e);
    for (const auto& [ip, h] : history_)
      if (!bans_.count(ip)) on_history(ip, h.offenses, h.last_until);
  }

  // The state file format before the journal (version 1: one JSON document, times in
  // seconds), read once to migrate. Returns an error message for a malformed document (then
  // nothing is loaded).
  std::string from_json(const nlohmann::json& doc);

  size_t tracked_failures() const { return failures_.size(); }
  size_t ban_count() const { return bans_.size(); }
  size_t history_count() const { return history_.size(); }

 private:
  struct History {
    uint32_t offenses = 0;
    UnixMillis last_until = 0;
  };
  std::map<IpAddress, BanEntry> bans_;
  std::map<IpAddress, History> history_;
  // Within the window, at most max_failures (a few) times per address: a vector, where a
  // deque took about 0.8 KB per address (180 MB at the 200,000-address bound).
  std::unordered_map<std::string, std::vector<UnixMillis>> failures_;  // key: ip text
  std::deque<std::pair<UnixMillis, std::string>> failure_order_;      // for eviction
  std::unordered_map<uint64_t, UnixMillis> failed_keys_;              // key -> when it was counted
  std::deque<std::pair<UnixMillis, uint64_t>> key_order_;             // for expiry and eviction
};

}  // namespace smtpgate
