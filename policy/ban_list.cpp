#include "policy/ban_list.h"

#include <algorithm>
#include <cmath>

namespace smtpgate {

uint32_t BanList::record_failure(const IpAddress& ip, UnixMillis now, const BruteForcePolicy& bf) {
  std::string key = ip.to_string();
  auto& q = failures_[key];
  UnixMillis horizon = now - bf.window.count() * 1000;
  std::erase_if(q, [&](UnixMillis t) { return t <= horizon; });
  q.push_back(now);
  // Only the last max_failures timestamps can matter for the window.
  if (q.size() > bf.max_failures)
    q.erase(q.begin(), q.end() - static_cast<std::ptrdiff_t>(bf.max_failures));
  // Taken now: the eviction below may drop this very entry and invalidate `q`.
  auto count = static_cast<uint32_t>(q.size());
  failure_order_.emplace_back(now, key);
  while (failures_.size() > kMaxTrackedIps && !failure_order_.empty()) {
    auto [t, k] = failure_order_.front();
    failure_order_.pop_front();
    auto it = failures_.find(k);
    if (it != failures_.end() && !it->second.empty() && it->second.back() <= t) failures_.erase(it);
  }
  // Keep the order queue from growing without bound when the same IPs fail again and again,
  // and forget IPs whose last failure has left the window: once their record is gone the
  // loop above could never evict them, and a table full of them would evict live counts.
  while (!failure_order_.empty() && failure_order_.front().first <= horizon) {
    auto [t, k] = std::move(failure_order_.front());
    failure_order_.pop_front();
    auto it = failures_.find(k);
    if (it != failures_.end() && (it->second.empty() || it->second.back() <= t))
      failures_.erase(it);
  }
  return count;
}

bool BanList::repeated_failure(uint64_t key, UnixMillis now, Seconds window) {
  const UnixMillis horizon = now - window.count() * 1000;
  while (!key_order_.empty() &&
         (key_order_.front().first <= horizon || failed_keys_.size() > kMaxTrackedKeys)) {
    auto [t, k] = key_order_.front();
    key_order_.pop_front();
    auto it = failed_keys_.find(k);
    if (it != failed_keys_.end() && it->second == t) failed_keys_.erase(it);
  }
  auto [it, inserted] = failed_keys_.emplace(key, now);
  if (!inserted) {
    if (it->second > horizon) return true;  // counted within the window: not again
    it->second = now;                       // counted long ago: this one counts
  }
  key_order_.emplace_back(now, key);
  return false;
}

BanEntry BanList::ban(const IpAddress& ip, UnixMillis now, const BruteForcePolicy& bf,
                      std::string reason, uint8_t prefix) {
  auto& h = history_[ip];
  // Offenses are remembered until max_ban has passed since the last ban ended.
  if (h.offenses > 0 && now > h.last_until + bf.max_ban.count() * 1000) h.offenses = 0;
  h.offenses++;
  double ms = static_cast<double>(bf.ban.count()) * 1000 *
              std::pow(bf.ban_multiplier, static_cast<double>(h.offenses - 1));
  ms = std::min(ms, static_cast<double>(bf.max_ban.count()) * 1000);
  BanEntry e;
  e.ip = ip;
  e.since = now;
  e.until = now + static_cast<UnixMillis>(ms);
  e.offense = h.offenses;
  e.reason = std::move(reason);
  e.prefix = prefix;
  h.last_until = e.until;
  bans_[ip] = e;
  failures_.erase(ip.to_string());
  return e;
}

BanEntry BanList::ban_for(const IpAddress& ip, UnixMillis now, UnixMillis duration_ms,
                          std::string reason, uint8_t prefix) {
  auto& h = history_[ip];
  h.offenses++;
  BanEntry e;
  e.ip = ip;
  e.since = now;
  e.until = now + duration_ms;
  e.offense = h.offenses;
  e.reason = std::move(reason);
  e.prefix = prefix;
  h.last_until = std::max(h.last_until, e.until);
  bans_[ip] = e;
  failures_.erase(ip.to_string());
  return e;
}

bool BanList::banned(const IpAddress& ip, UnixMillis now) const {
  auto it = bans_.find(ip);
  return it != bans_.end() && it->second.until > now;
}

std::optional<BanEntry> BanList::find(const IpAddress& ip, UnixMillis now) const {
  auto it = bans_.find(ip);
  if (it == bans_.end() || it->second.until <= now) return std::nullopt;
  return it->second;
}

bool BanList::unban(const IpAddress& ip) {
  failures_.erase(ip.to_string());
  return bans_.erase(ip) > 0;
}

std::vector<BanEntry> BanList::active(UnixMillis now) const {
  std::vector<BanEntry> out;
  for (const auto& [ip, e] : bans_)
    if (e.until > now) out.push_back(e);
  return out;
}

bool BanList::expire(UnixMillis now, const BruteForcePolicy& bf) {
  bool dropped = false;
  for (auto it = bans_.begin(); it != bans_.end();) {
    if (it->second.until <= now) {
      it = bans_.erase(it);
      dropped = true;
    } else {
      ++it;
    }
  }
  for (auto it = history_.begin(); it != history_.end();) {
    if (!bans_.count(it->first) && now > it->second.last_until + bf.max_ban.count() * 1000)
      it = history_.erase(it);
    else
      ++it;
  }
  return dropped;
}

void BanList::restore(const BanEntry& e) {
  bans_[e.ip] = e;
  auto& h = history_[e.ip];
  h.offenses = std::max(h.offenses, e.offense);
  h.last_until = std::max(h.last_until, e.until);
}

void BanList::restore_history(const IpAddress& ip, uint32_t offenses, UnixMillis last_until) {
  auto& h = history_[ip];
  h.offenses = std::max(h.offenses, offenses);
  h.last_until = std::max(h.last_until, last_until);
}

std::string BanList::from_json(const nlohmann::json& doc) {
  // Checked by type first: json::value() throws on a non-numeric "version".
  auto version = doc.is_object() ? doc.find("version") : doc.end();
  if (version == doc.end() || !version->is_number_integer() || *version != 1)
    return "not a version 1 ban state";
  std::map<IpAddress, BanEntry> bans;
  std::map<IpAddress, History> history;
  try {
    for (const auto& b : doc.at("bans")) {
      auto ip = IpAddress::parse(b.at("ip").get<std::string>());
      if (!ip) return "bad IP address " + b.at("ip").dump();
      BanEntry e;
      e.ip = *ip;
      e.since = b.at("since").get<int64_t>() * 1000;  // version 1 counted seconds
      e.until = b.at("until").get<int64_t>() * 1000;
      e.offense = b.at("offense").get<uint32_t>();
      e.reason = b.value("reason", "");
      bans[*ip] = e;
    }
    if (doc.contains("history")) {
      for (const auto& h : doc.at("history")) {
        auto ip = IpAddress::parse(h.at("ip").get<std::string>());
        if (!ip) return "bad IP address " + h.at("ip").dump();
        history[*ip] =
            History{h.at("offenses").get<uint32_t>(), h.at("last_until").get<int64_t>() * 1000};
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return e.what();
  }
  bans_ = std::move(bans);
  history_ = std::move(history);
  return {};
}

}  // namespace smtpgate
