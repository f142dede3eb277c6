// `smtpgate run`: the running gateway — event loop, listeners, sessions, policy snapshot,
// log and shared state — and its entry point, run_gateway().
#pragma once

#include <uv.h>

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policy/ban_list.h"
#include "policy/decision.h"
#include "policy/policy.h"
#include "policy/rate_limiter.h"
#include "proxy/admin_http.h"
#include "proxy/log.h"
#include "proxy/login_defence.h"
#include "proxy/metrics.h"
#include "proxy/password_key.h"
#include "proxy/session_registry.h"
#include "proxy/state_journal.h"
#include "proxy/tls_channel.h"

namespace smtpgate {

class BackendProbe;

class Gateway;
class Session;

struct RunOptions {
  std::string policy_path;
  bool dry_run = false;                 // --dry-run: every section in dry-run
  std::optional<LogFormat> log_format;  // --log-format overrides log.format
};

// Runs until SIGTERM/SIGINT (drain) and returns the process exit code.
int run_gateway(const RunOptions& options);

// What one policy load produced. Sessions keep the snapshot they started with, so a reload
// (new certificates, another backend) never changes a session in flight.
struct RuntimeConfig {
  PolicySnapshot policy;
  std::shared_ptr<const TlsContext> server_tls;   // null when no tls section
  std::shared_ptr<const TlsContext> backend_tls;  // null when backend.tls is none
  sockaddr_storage backend_addr{};
};
using ConfigSnapshot = std::shared_ptr<const RuntimeConfig>;

// One listening socket and the listener it serves.
struct ListenerRuntime {
  Gateway* gw = nullptr;
  Listener config;
  uv_tcp_t server{};
  bool open = false;
  bool accept_pending = false;  // a connection waits in libuv for the next loop turn
};

class Gateway final : public AdminServer::Handler {
 public:
  explicit Gateway(RunOptions options);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  int run();  // until drained; returns the exit code

  uv_loop_t* loop() { return &loop_; }
  Logger& log() { return log_; }
  MetricsRegistry& metrics() { return metrics_; }
  // Per-login sending counters (submission.limits), in loop milliseconds.
  SendingLimiter& sending() { return sending_; }
  int64_t now_ms() { return static_cast<int64_t>(uv_now(&loop_)); }

  // The admin endpoint.
  AdminResponse handle(std::string_view method, std::string_view path,
                       std::string_view query) override;
  const ConfigSnapshot& config() const { return config_; }
  std::string next_session_id();

  // Connection caps (max_total, max_per_ip, rate_per_ip): a refusal, or nullopt when the
  // session may go on. Every admitted session is released exactly once.
  std::optional<Decision> admit(Session& s);
  void release(Session& s);

  // Called by a session that has closed its handles: deleted on the next loop turn.
  void retire(Session& s) { sessions_.retire(s); }

  // Brute-force state: bans and AUTH failures per client IP.
  bool banned(const IpAddress& ip);
  // What a ban of `ip` covers (brute_force.ipv6_prefix): an IPv6 client's network, an IPv4
  // address itself; and that prefix length (0 for the address alone).
  IpAddress ban_key(const IpAddress& ip) const;
  uint8_t ban_prefix(const IpAddress& ip) const;
  // Records one counted AUTH failure; returns the failures within the window, this included.
  uint32_t record_auth_failure(const IpAddress& ip);
  // brute_force.distinct_passwords (BanList::repeated_failure; the keyer's key is in memory).
  const PasswordKeyer& password_keyer() const { return keyer_; }
  bool repeated_failure(uint64_t key);
  // brute_force.per_login locks and submission.breaker suspensions (SPEC §9).
  LoginDefence& logins() { return logins_; }
  const Policy& policy() const { return *policy_; }
  // Bans `ip` at once; returns the state-file record to wait for before the banned client
  // hears its reply (0: nothing to wait for). See wait_for_ban_record().
  uint64_t ban(const IpAddress& ip, const std::string& reason, const std::string& session);
  // Whether the record is on disk (or its write failed, which is logged): the banned
  // session's reply may go out. Otherwise the session is told later (Session::on_ban_recorded).
  bool ban_recorded(uint64_t record) const;
  void wait_for_ban_record(Session* s);
  void forget_ban_waiter(Session* s);
  // Dry-run: logs the ban that enforcement would apply; changes nothing.
  void would_ban(const IpAddress& ip, const std::string& reason, const std::string& session);
  // POST /bans/IP[?for=DURATION&reason=TEXT]: an operator's ban (default brute_force.ban).
  AdminResponse add_ban(std::string_view ip, std::string_view query);

 private:
  static void on_connection(uv_stream_t* server, int status);
  void start_session(ListenerRuntime& lr);  // accepts the connection libuv holds
  static void on_check(uv_check_t* h);
  static void on_signal(uv_signal_t* h, int signum);

  std::string load(bool initial);
  std::string open_listeners();
  // "" or the errors; `not_applied`: changes that need a restart (policy/restart_needed.h).
  std::string reload(std::vector<std::string>* not_applied = nullptr);
  void drain();
  void close_all();
  void load_bans();
  void on_journal_progress();

  RunOptions options_;
  uv_loop_t loop_{};
  Logger log_;
  ConfigSnapshot config_;
  PolicySnapshot policy_;                 // == config_->policy
  std::list<ListenerRuntime> listeners_;  // stable addresses: handles point into them
  SessionRegistry sessions_;
  uv_check_t reaper_{};
  uv_prepare_t clock_tick_{};  // LoopClock::next_iteration() before each poll
  uv_signal_t sighup_{}, sigterm_{}, sigint_{}, sigusr1_{};
  uv_timer_t drain_timer_{};
  MetricsRegistry metrics_;
  SendingLimiter sending_;
  ConnectionRateLimiter connection_rate_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<BackendProbe> probe_;  // with an admin endpoint: GET /readyz
  uv_timer_t housekeeping_{};            // expires bans
  BanList bans_;
  PasswordKeyer keyer_;
  LoginDefence logins_{log_};
  std::unique_ptr<StateJournal> journal_;  // with brute_force.state_file
  std::vector<Session*> ban_waiters_;      // sessions holding a reply until their ban is on disk
  uint64_t journal_errors_seen_ = 0;
  bool journal_failing_ = false;
  std::map<IpAddress, uint32_t> per_ip_;  // admitted sessions by client address
  uint32_t admitted_ = 0;
  uint32_t accepted_this_turn_ = 0;  // see kAcceptsPerTurn
  bool accept_deferred_ = false;     // some listener has accept_pending
  uint64_t serial_ = 0;
  uint32_t id_prefix_ = 0;
  bool draining_ = false;

  friend class Session;
};

}  // namespace smtpgate
