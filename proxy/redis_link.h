// The link to Redis for state shared between gateway instances (SPEC §8 "Shared state").
//
// Instances share bans, failure counts, sending counters and login locks/suspensions. No
// decision ever waits on Redis: each instance judges from its own memory, and this link only
// (1) writes what the instance decided to Redis and announces it on one pub/sub channel,
// (2) hands the owner what other instances announce, and (3) after each (re)connect, lets
// the owner read everything back (load_all) to catch up on what it missed while down.
//
// One RedisLink owns two hiredis async connections on one uv loop: one for commands and one
// subscribed to `<prefix>events` (a subscribed connection can issue no other command). It is
// "up" when both are connected, authenticated and subscribed. While down, writes wait in a
// bounded FIFO (the oldest dropped and counted when full) and the link reconnects with
// exponential backoff (0.5 s doubling to at most 30 s). Writes that were sent but not yet
// answered when a connection broke are queued again (every write is idempotent, except that
// an event may then be received twice: receivers must tolerate a repeated event).
//
// Redis layout (every name starts with the prefix, "smtpgate:" by default):
//   <prefix>events               channel: JSON objects with "instance" (the sender's name)
//                                and "origin" (the sending link: its own are dropped)
//   <prefix>ban:<ip_key>         string: JSON the owner chose; expires at the ban's end
//   <prefix>login:<login>        string: a login's lock or suspension (JSON); expires with a
//                                lock, never for a suspension (an admin releases it)
//   <prefix>fail:<kind>:<key>    sorted set: member = a failure's id, score = its time (ms);
//                                entries older than the window are trimmed on each write and
//                                the key expires one window after its newest entry
//   <prefix>sent:<login>         sorted set: member = "<count>:<id>", score = time (ms);
//                                likewise trimmed and expiring
// Needs Redis 7.0 or later (SET ... PXAT, PEXPIRETIME).
//
// Not thread-safe: every call on the loop's thread. Callbacks run on that loop; none may
// destroy the link. Destroying the link frees its connections at once (no callback after the
// destructor starts); the loop must then run once more to close its poll handles and timer.
// Writing to a broken socket raises SIGPIPE: the owner ignores it (the gateway does).
#pragma once

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/policy.h"
#include "proxy/timer.h"

struct redisAsyncContext;
struct redisReply;

namespace smtpgate {

struct RedisLinkConfig {
  // Where: TCP (host: an IP literal without brackets) or a unix socket (unix_path set).
  std::string host;
  uint16_t port = 0;
  std::string unix_path;
  std::string password_file;  // first line = AUTH password; "" = no AUTH
  std::string prefix = "smtpgate:";
  std::string instance;  // "" = gethostname() at start()

  size_t max_queue = 10000;     // writes kept while down (or while Redis lags); oldest dropped
  size_t max_in_flight = 1000;  // writes sent and not yet answered: bounds memory if Redis lags
  std::chrono::milliseconds backoff_min{500};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds connect_timeout{5000};  // connect + AUTH + SUBSCRIBE
  // A PING on the command connection this often while up; no answer by the next one = down
  // (a stopped Redis or a dead network path closes no socket).
  std::chrono::milliseconds ping_interval{5000};
  size_t scan_count = 1000;            // SCAN COUNT hint of a full load
  size_t max_load_keys = 200000;       // a full load reads at most this many keys
  size_t max_entries_per_key = 10000;  // a sorted set keeps (and a load reads) at most this many

  static RedisLinkConfig from(const SharedSettings& s);
  // "127.0.0.1:6379", "[::1]:6379" or "unix:/path": for messages.
  std::string endpoint() const;
};

// One timed entry of a sorted set (a failure, or a message sent with `count` recipients).
struct SharedEntry {
  int64_t at_ms = 0;  // Unix time, milliseconds
  std::string id;
  uint32_t count = 1;  // sent entries only
};

// What a full load read. Values are the JSON the writers stored; keys are without prefix.
struct SharedSnapshot {
  struct Ban {
    std::string ip_key;
    nlohmann::json value;
  };
  struct Login {
    std::string login;
    nlohmann::json value;
  };
  struct Window {
    std::string kind;                  // failures only ("ip", "login" …: what the writer passed)
    std::string key;                   // the address key or login
    std::vector<SharedEntry> entries;  // oldest first
  };
  std::vector<Ban> bans;
  std::vector<Login> logins;
  std::vector<Window> failures;
  std::vector<Window> sent;  // kind empty, key = login
  size_t keys_read = 0;
  size_t skipped = 0;    // values that were not JSON, keys of the wrong type, bad members
  bool complete = true;  // false: max_load_keys was reached
};

class RedisLink final : private Timer::Handler {
 public:
  enum class Level : uint8_t { Debug, Info, Error };
  using LogFn = std::function<void(Level, std::string_view message)>;
  // ok false: the connection broke during the load (nothing partial is handed over); the
  // link reconnects and on_up fires again.
  using LoadFn = std::function<void(bool ok, SharedSnapshot snapshot)>;
  using EventFn = std::function<void(const nlohmann::json& event)>;

  RedisLink(uv_loop_t* loop, RedisLinkConfig config);
  ~RedisLink();
  RedisLink(const RedisLink&) = delete;
  RedisLink& operator=(const RedisLink&) = delete;

  // Callbacks: set before start(). Messages never contain the password. The owner logs
  // Error as `error` with component "shared".
  void on_log(LogFn f) { log_ = std::move(f); }
  // Each time the link becomes up (first connect and every reconnect). Writes queued while
  // down are on their way (FIFO: before any write issued from here; a load_all() from here
  // may overtake those beyond max_in_flight). The owner calls load_all() here and
  // re-publishes what it decided while down.
  void on_up(std::function<void()> f) { on_up_ = std::move(f); }
  // Each time an up link goes down (not on every failed reconnect attempt).
  void on_down(std::function<void(std::string_view reason)> f) { on_down_ = std::move(f); }
  // An event another instance published (own events are filtered out). Always an object.
  void on_event(EventFn f) { on_event_ = std::move(f); }

  // Reads the password file and starts connecting in the background. Returns "" or why it
  // cannot start (an unreadable password file: nothing would ever authenticate).
  std::string start();

  bool up() const { return up_; }  // smtpgate_shared_up
  const std::string& instance() const { return instance_; }
  const std::string& origin() const { return origin_; }
  const RedisLinkConfig& config() const { return cfg_; }

  // Writes: never block, never fail; sent at once when up, queued otherwise. -------------
  // PUBLISH <prefix>events: `event` must be an object; "instance" and "origin" are set.
  void publish(nlohmann::json event);
  // SET <prefix>ban:<ip_key> PXAT until_ms (until_ms <= 0: no expiry) / DEL.
  void set_ban(std::string_view ip_key, const nlohmann::json& value, int64_t until_ms);
  void del_ban(std::string_view ip_key);
  // A login's lock (until_ms = its end) or suspension (until_ms <= 0: until released).
  void set_login(std::string_view login, const nlohmann::json& value, int64_t until_ms);
  void del_login(std::string_view login);
  // One failure in <prefix>fail:<kind>:<key> (kind: no ':'), kept for window_ms. `id` makes
  // the entry unique (an event and the later full load then name the same failure); empty =
  // a new one ("<origin>.<n>"). Returns the id used.
  std::string add_failure(std::string_view kind, std::string_view key, int64_t at_ms,
                          int64_t window_ms, std::string_view id = {});
  void clear_failures(std::string_view kind, std::string_view key);  // DEL: a login succeeded
  // One message of `login` with `count` recipients, kept for window_ms. Returns the id used.
  std::string add_sent(std::string_view login, uint32_t count, int64_t at_ms, int64_t window_ms,
                       std::string_view id = {});

  // Reads: only when up. ---------------------------------------------------------------
  // Reads every ban, login state and failure/sent entry at or after since_ms (SCAN, bounded
  // by max_load_keys) and calls `done` once. Returns false (and never calls it) when down.
  bool load_all(int64_t since_ms, LoadFn done);

  // Counters ---------------------------------------------------------------------------
  size_t queued() const { return queue_.size(); }                      // waiting to be sent
  size_t in_flight() const { return in_flight_.size(); }               // sent, not yet answered
  uint64_t dropped_total() const { return dropped_total_; }            // lost: the queue was full
  uint64_t write_errors_total() const { return write_errors_total_; }  // refused by Redis
  uint64_t connects_total() const { return connects_total_; }          // times it became up

  // Names (tests, operators' redis-cli).
  std::string channel() const { return cfg_.prefix + "events"; }
  std::string ban_key(std::string_view ip_key) const;
  std::string login_key(std::string_view login) const;
  std::string failure_key(std::string_view kind, std::string_view key) const;
  std::string sent_key(std::string_view login) const;

  // The wait before reconnect attempt number `failures` (0-based), without jitter.
  static std::chrono::milliseconds backoff(uint32_t failures, std::chrono::milliseconds min,
                                           std::chrono::milliseconds max);

 private:
  enum class Phase : uint8_t { Idle, Connecting, Up, Waiting };
  enum class CallKind : uint8_t { CmdAuth, CmdReady, SubAuth, Write, Ping, Scan, Mget, Zrange };
  struct Load;
  struct Call;
  using Argv = std::vector<std::string>;

  static void reply_cb(redisAsyncContext* ac, void* reply, void* privdata);
  static void message_cb(redisAsyncContext* ac, void* reply, void* privdata);
  static void connect_cb(const redisAsyncContext* ac, int status);
  static void disconnect_cb(const redisAsyncContext* ac, int status);

  void on_timer(Timer& t) override;
  void connect();
  redisAsyncContext* open_context(std::string& error);
  std::unique_ptr<Call> make_call(CallKind kind, std::shared_ptr<Load> load = {});
  bool send(redisAsyncContext* ac, const Argv& argv, std::unique_ptr<Call> call);
  void handle_reply(Call& call, redisReply* reply);
  void handle_message(redisReply* reply);
  void subscribe();
  void check_ready();
  void fail(std::string reason);
  void teardown();
  void submit(Argv argv);
  void pump();
  void write_done(redisReply* reply);
  uint64_t next_random();
  void log(Level level, std::string message) const;

  // Write commands (redis_write_commands.cpp).
  std::string add_window(std::string key, int64_t at_ms, int64_t window_ms, std::string member);
  std::string next_id();

  // Full loads (redis_load.cpp).
  void load_scan(const std::shared_ptr<Load>& load);
  void load_reply(Call& call, redisReply* reply);
  void load_next(const std::shared_ptr<Load>& load);
  void load_finish(const std::shared_ptr<Load>& load, bool ok);

  uv_loop_t* loop_;
  RedisLinkConfig cfg_;
  std::string password_;
  std::string instance_;
  std::string origin_;  // "<instance>.<start ms>.<random>": this link in events and ids
  bool name_clash_logged_ = false;
  uint64_t id_seq_ = 0;
  LogFn log_;
  std::function<void()> on_up_;
  std::function<void(std::string_view)> on_down_;
  EventFn on_event_;

  HandlePtr<Timer> timer_;  // connect timeout, backoff wait or PING, by phase_
  Phase phase_ = Phase::Idle;
  redisAsyncContext* cmd_ = nullptr;
  redisAsyncContext* sub_ = nullptr;
  uint64_t gen_ = 0;  // bumped at each teardown: replies of an older connection are ignored
  bool cmd_ready_ = false;
  bool sub_ready_ = false;
  bool up_ = false;
  bool closing_ = false;  // in the destructor: no callback to the owner any more
  bool ping_outstanding_ = false;
  bool down_logged_ = false;  // this streak of failures was logged as an error
  uint32_t failures_ = 0;     // consecutive failed attempts: the backoff exponent
  uint64_t rng_state_ = 0;    // backoff jitter

  std::deque<Argv> queue_;      // writes waiting to be sent
  std::deque<Argv> in_flight_;  // writes sent, in order, not yet answered
  uint64_t dropped_total_ = 0;
  uint64_t dropped_reported_ = 0;
  uint64_t write_errors_total_ = 0;
  uint64_t write_error_logged_at_ = 0;  // uv_now() of the last write error logged
  uint64_t connects_total_ = 0;
};

}  // namespace smtpgate
