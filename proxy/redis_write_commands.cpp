// RedisLink's writes as Redis commands: key names, PUBLISH, SET, DEL and the window script.
#include "proxy/redis_link.h"

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

namespace smtpgate {

namespace {

// One failure or message in a sorted set, atomically: add it, trim what is older than the
// window, keep at most ARGV[5] entries, and let the key expire one window after its newest
// entry. A late write (queued while Redis was down) never shortens an expiry set by a newer
// one, and one already past its window deletes nothing but itself. PEXPIRETIME: Redis 7.
// KEYS[1] = the set; ARGV = score, member, expire at, drop below, max entries.
constexpr std::string_view kWindowScript = R"lua(
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
local n = tonumber(ARGV[5])
if redis.call('ZCARD', KEYS[1]) > n then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -n - 1) end
if redis.call('PEXPIRETIME', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
end
return 1
)lua";

std::string dump(const nlohmann::json& j) {
  // Logins and addresses may hold invalid UTF-8: replaced, never thrown.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string RedisLink::ban_key(std::string_view ip_key) const {
  return cfg_.prefix + "ban:" + std::string(ip_key);
}
std::string RedisLink::login_key(std::string_view login) const {
  return cfg_.prefix + "login:" + std::string(login);
}
std::string RedisLink::failure_key(std::string_view kind, std::string_view key) const {
  return cfg_.prefix + "fail:" + std::string(kind) + ":" + std::string(key);
}
std::string RedisLink::sent_key(std::string_view login) const {
  return cfg_.prefix + "sent:" + std::string(login);
}

std::string RedisLink::next_id() {
  return origin_ + "." + std::to_string(++id_seq_);
}

void RedisLink::publish(nlohmann::json event) {
  if (!event.is_object()) {
    log(Level::Error, "not published: an event must be a JSON object");
    return;
  }
  event["instance"] = instance_;
  event["origin"] = origin_;
  submit({"PUBLISH", channel(), dump(event)});
}

void RedisLink::set_ban(std::string_view ip_key, const nlohmann::json& value, int64_t until_ms) {
  if (until_ms > 0)
    submit({"SET", ban_key(ip_key), dump(value), "PXAT", std::to_string(until_ms)});
  else
    submit({"SET", ban_key(ip_key), dump(value)});
}

void RedisLink::del_ban(std::string_view ip_key) {
  submit({"DEL", ban_key(ip_key)});
}

void RedisLink::set_login(std::string_view login, const nlohmann::json& value, int64_t until_ms) {
  if (until_ms > 0)
    submit({"SET", login_key(login), dump(value), "PXAT", std::to_string(until_ms)});
  else
    submit({"SET", login_key(login), dump(value)});
}

void RedisLink::del_login(std::string_view login) {
  submit({"DEL", login_key(login)});
}

std::string RedisLink::add_window(std::string key, int64_t at_ms, int64_t window_ms,
                                  std::string member) {
  window_ms = std::max<int64_t>(window_ms, 1);
  submit({"EVAL", std::string(kWindowScript), "1", std::move(key), std::to_string(at_ms), member,
          std::to_string(at_ms + window_ms), std::to_string(at_ms - window_ms),
          std::to_string(cfg_.max_entries_per_key)});
  return member;
}

std::string RedisLink::add_failure(std::string_view kind, std::string_view key, int64_t at_ms,
                                   int64_t window_ms, std::string_view id) {
  if (kind.empty() || kind.find(':') != std::string_view::npos) {
    // The load splits "fail:<kind>:<key>" at the first ':'.
    log(Level::Error, "not written: a failure kind must be non-empty and without ':'");
    return "";
  }
  std::string member = id.empty() ? next_id() : std::string(id);
  add_window(failure_key(kind, key), at_ms, window_ms, member);
  return member;
}

void RedisLink::clear_failures(std::string_view kind, std::string_view key) {
  submit({"DEL", failure_key(kind, key)});
}

std::string RedisLink::add_sent(std::string_view login, uint32_t count, int64_t at_ms,
                                int64_t window_ms, std::string_view id) {
  std::string used = id.empty() ? next_id() : std::string(id);
  add_window(sent_key(login), at_ms, window_ms, std::to_string(count) + ":" + used);
  return used;
}

}  // namespace smtpgate
