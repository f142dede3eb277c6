// Keeps this instance's SharedState in step with other instances through Redis (SPEC §8
// "Shared state"): what this instance decides is written to Redis and announced; what others
// announce is applied here; after each (re)connect everything in Redis is read back. No
// decision waits on it: sessions judge from SharedState alone.
//
// Threads: the decisions are made on worker loops, under SharedState's lock; they are queued
// here (a mutex of its own, taken after SharedState's, never before) and handed to the
// RedisLink on the main loop, which alone talks to Redis. Events from other instances are
// applied on the main loop under SharedState's lock.
//
// Shared: bans (issued and lifted), AUTH failures per address and per login, login locks and
// suspensions (and their release), known-good addresses of logins, messages sent per login.
// Connection caps stay per instance.
#pragma once

#include <uv.h>

#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/ban_list.h"
#include "policy/login_breaker.h"
#include "policy/policy.h"

namespace smtpgate {

class Logger;
class MetricsRegistry;
class RedisLink;
class SharedState;

class SharedSync {
 public:
  SharedSync(uv_loop_t* loop, SharedState& state, Logger& log, MetricsRegistry& metrics,
             const SharedSettings& settings);
  ~SharedSync();
  SharedSync(const SharedSync&) = delete;
  SharedSync& operator=(const SharedSync&) = delete;

  std::string start();  // "" or why not (an unreadable password file)
  void close();         // main loop: stops the link (what is queued is dropped)

  // From any thread (under SharedState's lock or not): what this instance decided.
  void ban(const BanEntry& e);
  void unban(const IpAddress& key);
  void failure(std::string_view kind, std::string_view key, UnixMillis at, int64_t window_ms);
  void login_lock(std::string_view login, UnixMillis until, uint32_t failures);
  void suspend(const Suspension& s);
  void login_release(std::string_view login);
  // An address `login` succeeded from (events only: an instance that was away learns the
  // addresses it missed from the logins' next successes).
  void known_good(std::string_view login, const IpAddress& key, UnixMillis at);
  void sent(std::string_view login, uint32_t recipients, UnixMillis at);

 private:
  void push(nlohmann::json op);
  void flush();                             // main loop: the queue to the link
  void apply(const nlohmann::json& event);  // main loop: another instance's decision
  void apply_snapshot(struct SharedSnapshot& snapshot);
  bool seen(const std::string& id);  // failure ids applied already (bounded)

  SharedState& state_;
  Logger& log_;
  MetricsRegistry& metrics_;
  std::unique_ptr<RedisLink> link_;
  uv_async_t* wake_ = nullptr;  // owned; freed in its close callback
  std::mutex mu_;
  std::vector<nlohmann::json> queue_;  // guarded by mu_
  bool closed_ = false;                // guarded by mu_
  std::unordered_set<std::string> seen_;
  std::deque<std::string> seen_order_;
  uint64_t failure_serial_ = 0;
};

}  // namespace smtpgate
