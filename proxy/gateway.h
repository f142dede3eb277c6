// `smtpgate run`: the running gateway — event loop, listeners, sessions, policy snapshot,
// log and shared state — and its entry point, run_gateway().
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
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
#include "proxy/shared_state.h"
#include "proxy/state_journal.h"
#include "proxy/tls_channel.h"
#include "proxy/worker.h"

namespace smtpgate {

class BackendProbe;
class SharedSync;

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

  uv_loop_t* loop() { return &loop_; }  // the main thread's (worker 0, admin, signals)
  Logger& log() { return log_; }
  MetricsRegistry& metrics() { return metrics_; }
  // What all workers count once (bans, failures, caps, sending counters, logins).
  SharedState& shared() { return shared_; }
  // Steady milliseconds, the same clock on every thread (sending counters, connection rates).
  static int64_t now_ms() { return static_cast<int64_t>(uv_hrtime() / 1000000); }

  // The admin endpoint.
  AdminResponse handle(std::string_view method, std::string_view path,
                       std::string_view query) override;
  const ConfigSnapshot& config() const { return config_; }  // main thread
  ConfigSnapshot current_config() const;                    // any thread: for new sessions
  std::string next_session_id();                            // any thread

  // Connection caps (max_total, max_per_ip, rate_per_ip): a refusal, or nullopt when the
  // session may go on. Every admitted session is released exactly once.
  std::optional<Decision> admit(Session& s);
  void release(Session& s);

  // Brute-force state: bans and AUTH failures per client IP (any thread).
  bool banned(const IpAddress& ip);
  // Records one counted AUTH failure; returns the failures within the window, this included.
  uint32_t record_auth_failure(const IpAddress& ip);
  // brute_force.distinct_passwords (BanList::repeated_failure; the keyer's key is in memory).
  const PasswordKeyer& password_keyer() const { return keyer_; }
  bool repeated_failure(uint64_t key);
  // Bans `ip` at once; returns the state-file record to wait for before the banned client
  // hears its reply (0: nothing to wait for). See wait_for_ban_record().
  uint64_t ban(const IpAddress& ip, const std::string& reason, const std::string& session);
  // Whether the record is on disk (or its write failed, which is logged): the banned
  // session's reply may go out. Otherwise its worker tells it later (Worker::wait_for_record).
  bool ban_recorded(uint64_t record) const;
  // Dry-run: logs the ban that enforcement would apply; changes nothing.
  void would_ban(const IpAddress& ip, const std::string& reason, const std::string& session);
  // POST /bans/IP[?for=DURATION&reason=TEXT]: an operator's ban (default brute_force.ban).
  AdminResponse add_ban(std::string_view ip, std::string_view query);

 private:
  static void on_connection(uv_stream_t* server, int status);
  // Accepts the connection libuv holds and gives it to the next worker in turn.
  void start_session(ListenerRuntime& lr);
  static void on_check(uv_check_t* h);
  void worker_drained();  // a worker's last session ended while draining
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
  PolicySnapshot policy_;                         // == config_->policy
  std::list<ListenerRuntime> listeners_;          // stable addresses: handles point into them
  mutable std::mutex config_mu_;                  // config_ for other threads (current_config)
  std::vector<std::unique_ptr<Worker>> workers_;  // [0] runs on loop_
  size_t next_worker_ = 0;                        // round robin
  size_t workers_draining_ = 0;
  uv_check_t reaper_{};
  uv_signal_t sighup_{}, sigterm_{}, sigint_{}, sigusr1_{};
  uv_timer_t drain_timer_{};
  MetricsRegistry metrics_;
  SharedState shared_{log_};
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<BackendProbe> probe_;  // with an admin endpoint: GET /readyz
  uv_timer_t housekeeping_{};            // expires bans
  PasswordKeyer keyer_;
  std::unique_ptr<StateJournal> journal_;  // with brute_force.state_file
  std::unique_ptr<SharedSync> sync_;       // with shared.redis
  uint64_t journal_errors_seen_ = 0;
  bool journal_failing_ = false;
  uint32_t accepted_this_turn_ = 0;  // see kAcceptsPerTurn
  bool accept_deferred_ = false;     // some listener has accept_pending
  std::atomic<uint64_t> serial_{0};
  uint32_t id_prefix_ = 0;
  bool draining_ = false;
  bool closed_ = false;  // close_all() ran

  friend class Session;
};

}  // namespace smtpgate
