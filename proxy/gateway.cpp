#include "proxy/gateway.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <iostream>
#include <random>
#include <thread>

#include "policy/duration.h"
#include "policy/loader.h"
#include "policy/replies.h"
#include "policy/restart_needed.h"
#include "policy/rule_ids.h"
#include "proxy/backend_probe.h"
#include "proxy/service_notify.h"
#include "proxy/session.h"
#include "proxy/shared_sync.h"
#include "proxy/tls_files.h"
#include "proxy/unix_time.h"

namespace smtpgate {
namespace {

std::string to_sockaddr(const std::string& host, uint16_t port, sockaddr_storage* out) {
  std::memset(out, 0, sizeof *out);
  if (host.find(':') != std::string::npos) {
    if (uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(out)) != 0)
      return "bad IPv6 address " + host;
  } else if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(out)) != 0) {
    return "bad IPv4 address " + host;
  }
  return {};
}

}  // namespace

Gateway::Gateway(RunOptions options) : options_(std::move(options)) {
  uv_loop_init(&loop_);
  std::random_device rd;
  id_prefix_ = rd();
}

Gateway::~Gateway() {
  close_all();
  // Let every close callback run, then the loop must close cleanly; worker threads end once
  // their loops have nothing left.
  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  workers_.clear();
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

std::string Gateway::next_session_id() {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%08x%06llx", id_prefix_,
                static_cast<unsigned long long>((serial_.fetch_add(1) + 1) & 0xffffff));
  return buf;
}

ConfigSnapshot Gateway::current_config() const {
  std::lock_guard lock(config_mu_);
  return config_;
}

std::string Gateway::load(bool initial) {
  LoadOptions opts;
  opts.cli_dry_run = options_.dry_run;
  opts.tls_checker = check_tls_files;
  LoadResult r = load_policy_file(options_.policy_path, opts);
  if (!r.ok()) {
    std::string all;
    for (const auto& e : r.errors) all += (all.empty() ? "" : "\n") + e.to_string();
    return all;
  }
  if (options_.log_format) r.policy->log.format = *options_.log_format;
  sockaddr_storage backend{};
  if (auto err = to_sockaddr(r.policy->backend.host, r.policy->backend.port, &backend);
      !err.empty())
    return err;
  std::shared_ptr<const TlsContext> server_tls, backend_tls;
  if (r.policy->tls.configured) {
    auto ctx = TlsContext::server(r.policy->tls);
    if (!ctx) return "tls: " + ctx.error();
    server_tls = *ctx;
  }
  if (r.policy->backend.tls != BackendTls::None) {
    auto ctx = TlsContext::client(r.policy->backend);
    if (!ctx) return "backend.tls: " + ctx.error();
    backend_tls = *ctx;
  }
  if (initial) {
    if (auto err = log_.open(r.policy->log.path, r.policy->log.format); !err.empty()) return err;
  } else {
    log_.set_format(r.policy->log.format);
  }
  auto cfg = std::make_shared<RuntimeConfig>();
  cfg->policy = std::move(r.policy);
  cfg->server_tls = std::move(server_tls);
  cfg->backend_tls = std::move(backend_tls);
  cfg->backend_addr = backend;
  policy_ = cfg->policy;
  {
    std::lock_guard lock(config_mu_);
    config_ = std::move(cfg);
  }
  shared_.with([&](SharedState::Data& d) {
    d.policy = policy_;
    d.connection_rate.set_rate(policy_->connections.rate_per_ip.value_or(Rate{}));
  });
  return {};
}

std::string Gateway::open_listeners() {
  for (const auto& l : policy_->listeners) {
    auto& lr = listeners_.emplace_back();
    lr.gw = this;
    lr.config = l;
    sockaddr_storage addr{};
    if (auto err = to_sockaddr(l.host, l.port, &addr); !err.empty()) return err;
    uv_tcp_init(&loop_, &lr.server);
    lr.server.data = &lr;
    lr.open = true;
    // An IPv6 wildcard listener is dual-stack: IPv4 clients arrive as mapped addresses.
    int rc = uv_tcp_bind(&lr.server, reinterpret_cast<sockaddr*>(&addr), 0);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&lr.server), 1024, on_connection);
    if (rc != 0)
      return "listener " + l.name + ": cannot listen on " + l.host + ":" + std::to_string(l.port) +
             ": " + uv_strerror(rc);
  }
  return {};
}

int Gateway::run() {
  signal(SIGPIPE, SIG_IGN);
  if (auto err = load(true); !err.empty()) {
    std::cerr << err << "\n";
    return 1;
  }
  if (auto err = open_listeners(); !err.empty()) {
    std::cerr << err << "\n";
    return 1;
  }
  load_bans();
  if (policy_->shared) {
    sync_ = std::make_unique<SharedSync>(&loop_, shared_, log_, metrics_, *policy_->shared);
    if (auto err = sync_->start(); !err.empty()) {
      std::cerr << "shared: " << err << "\n";
      return 1;
    }
    shared_.with([&](SharedState::Data& d) {
      d.sync = sync_.get();
      d.logins.set_sync(sync_.get());
    });
  }
  if (!policy_->admin.host.empty()) {
    admin_ = std::make_unique<AdminServer>(&loop_, *this);
    if (auto err = admin_->listen(policy_->admin.host, policy_->admin.port); !err.empty()) {
      std::cerr << "admin: " << err << "\n";
      return 1;
    }
    // GET /readyz probes the backend (only when asked).
    probe_ = std::make_unique<BackendProbe>(&loop_);
    probe_->set_address(config_->backend_addr);
  }
  uv_timer_init(&loop_, &housekeeping_);
  housekeeping_.data = this;
  uv_timer_start(
      &housekeeping_,
      [](uv_timer_t* t) {
        auto* gw = static_cast<Gateway*>(t->data);
        gw->shared_.with([](SharedState::Data& d) {
          d.bans.expire(unix_now(), d.policy->brute_force);  // the journal keeps until
        });
      },
      60000, 60000);
  uv_check_init(&loop_, &reaper_);
  reaper_.data = this;
  uv_check_start(&reaper_, on_check);
  // Worker loops: [0] on this thread's loop, the others each in a thread of its own.
  const unsigned n = policy_->workers != 0
                         ? policy_->workers
                         : std::max(1u, std::min(64u, std::thread::hardware_concurrency()));
  for (unsigned i = 0; i < n; ++i)
    workers_.push_back(std::make_unique<Worker>(*this, i == 0 ? &loop_ : nullptr, i));
  for (auto& w : workers_) w->start();
  metrics_.set_workers(n);
  for (auto* sig : {&sighup_, &sigterm_, &sigint_, &sigusr1_}) {
    uv_signal_init(&loop_, sig);
    sig->data = this;
  }
  uv_signal_start(&sighup_, on_signal, SIGHUP);
  uv_signal_start(&sigusr1_, on_signal, SIGUSR1);
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
  nlohmann::json listeners = nlohmann::json::array();
  for (const auto& l : policy_->listeners)
    listeners.push_back(l.name + "=" + l.host + ":" + std::to_string(l.port));
  log_.write("policy_reload", {{"result", "loaded"},
                               {"path", options_.policy_path},
                               {"listeners", listeners},
                               {"workers", workers_.size()},
                               {"mode", policy_->mode == Mode::Enforce ? "enforce" : "dry-run"}});
  // Listeners accept from here on: a Type=notify unit counts as started now, not at fork.
  notify_service_manager("READY=1\nSTATUS=accepting connections");
  uv_run(&loop_, UV_RUN_DEFAULT);
  return 0;
}

// libuv accepts until the backlog is empty before any other callback of the loop turn
// runs, so a flood (banned bots reconnecting as fast as they can) would hold every other
// session for as long as it lasts. After this many accepts in one turn a listener waits:
// not calling uv_accept() makes libuv stop watching it, and the check phase at the end of
// the turn accepts the connection it holds, which resumes watching.
constexpr uint32_t kAcceptsPerTurn = 64;

void Gateway::on_connection(uv_stream_t* server, int status) {
  auto* lr = static_cast<ListenerRuntime*>(server->data);
  Gateway* gw = lr->gw;
  if (status < 0 || gw->draining_) return;
  if (gw->accepted_this_turn_ >= kAcceptsPerTurn) {
    lr->accept_pending = true;
    gw->accept_deferred_ = true;
    return;
  }
  gw->start_session(*lr);
}

void Gateway::start_session(ListenerRuntime& lr) {
  ++accepted_this_turn_;
  Worker& w = *workers_[next_worker_++ % workers_.size()];
  auto* server = reinterpret_cast<uv_stream_t*>(&lr.server);
  if (w.index() == 0) {
    w.start_session(lr, server);
    return;
  }
  // Accepted here, handed over: the socket is duplicated out of a handle of this loop (which
  // then closes) and opened on the worker's loop. One accept loop spreads connections evenly
  // whatever their source, where SO_REUSEPORT would hash them.
  auto* tmp = new uv_tcp_t;
  uv_tcp_init(&loop_, tmp);
  int fd = -1;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(tmp)) == 0 &&
      uv_fileno(reinterpret_cast<uv_handle_t*>(tmp), &fd) == 0)
    fd = ::dup(fd);
  uv_close(reinterpret_cast<uv_handle_t*>(tmp),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  if (fd < 0) return;
  if (!w.post([&w, &lr, fd] { w.adopt(lr, fd); })) ::close(fd);
}

void Gateway::on_check(uv_check_t* h) {
  auto* gw = static_cast<Gateway*>(h->data);
  if (gw->accept_deferred_) {
    gw->accept_deferred_ = false;
    for (auto& lr : gw->listeners_) {
      if (!lr.accept_pending) continue;
      lr.accept_pending = false;
      if (lr.open && !gw->draining_) gw->start_session(lr);
    }
  }
  gw->accepted_this_turn_ = 0;
}

void Gateway::on_signal(uv_signal_t* h, int signum) {
  auto* gw = static_cast<Gateway*>(h->data);
  if (signum == SIGHUP) {
    gw->reload();
  } else if (signum == SIGUSR1) {
    gw->log_.reopen();  // logrotate moved the file away
  } else {
    gw->drain();
  }
}

std::string Gateway::reload(std::vector<std::string>* not_applied) {
  notify_service_manager("RELOADING=1");
  const PolicySnapshot running = policy_;
  std::string err = load(false);
  notify_service_manager(err.empty() ? "READY=1\nSTATUS=policy reloaded"
                                     : "READY=1\nSTATUS=reload rejected; the old policy stays");
  if (!err.empty()) {
    metrics_.policy_reload("rejected");
    log_.write("policy_reload",
               {{"result", "rejected"}, {"path", options_.policy_path}, {"errors", err}});
    return err;
  }
  metrics_.policy_reload("loaded");
  if (journal_) journal_->set_brute_force(policy_->brute_force);
  if (probe_) probe_->set_address(config_->backend_addr);
  // Sockets and files opened at start stay: a change to them is named, not silently dropped.
  std::vector<std::string> kept = changes_needing_restart(*running, *policy_);
  nlohmann::ordered_json fields = {{"result", kept.empty() ? "loaded" : "partial"},
                                   {"path", options_.policy_path}};
  if (!kept.empty()) fields["not_applied"] = kept;
  log_.write("policy_reload", fields);
  if (not_applied) *not_applied = std::move(kept);
  return {};
}

void Gateway::drain() {
  if (draining_) return;
  draining_ = true;
  notify_service_manager("STOPPING=1");
  size_t open = 0;
  for (auto& w : workers_) open += w->sessions();
  log_.write("shutdown", {{"state", "draining"}, {"sessions", open}});
  for (auto& lr : listeners_) {
    if (lr.open) {
      lr.open = false;
      uv_close(reinterpret_cast<uv_handle_t*>(&lr.server), nullptr);
    }
  }
  // Each worker drains its own sessions and says so on this loop when it has none left.
  workers_draining_ = workers_.size();
  for (auto& w : workers_) {
    Worker* worker = w.get();
    auto tell_main = [this] { workers_[0]->post([this] { worker_drained(); }); };
    if (worker->index() == 0) {
      worker->drain(tell_main);
    } else {
      worker->post([worker, tell_main] { worker->drain(tell_main); });
    }
  }
  uv_timer_start(
      &drain_timer_,
      [](uv_timer_t* t) {
        auto* gw = static_cast<Gateway*>(t->data);
        size_t left = 0;
        for (auto& w : gw->workers_) left += w->sessions();
        gw->log_.write("error", {{"component", "drain"},
                                 {"reason", "drain timeout: closing remaining sessions"},
                                 {"sessions", left}});
        gw->close_all();
      },
      static_cast<uint64_t>(std::chrono::milliseconds(policy_->timeouts.drain).count()), 0);
}

void Gateway::worker_drained() {
  if (workers_draining_ > 0 && --workers_draining_ == 0) close_all();
}

void Gateway::close_all() {
  if (closed_) return;
  closed_ = true;
  // Every worker closes what it has left, on its own loop, and lets the loop end.
  for (auto& w : workers_) {
    Worker* worker = w.get();
    if (worker->index() == 0) {
      worker->stop();
    } else {
      worker->post([worker] { worker->stop(); });
    }
  }
  for (auto& lr : listeners_) {
    if (lr.open) {
      lr.open = false;
      uv_close(reinterpret_cast<uv_handle_t*>(&lr.server), nullptr);
    }
  }
  auto close = [](auto* h) {
    auto* handle = reinterpret_cast<uv_handle_t*>(h);
    if (handle->loop && !uv_is_closing(handle)) uv_close(handle, nullptr);
  };
  if (admin_) admin_->close();
  if (probe_) probe_->stop();
  if (journal_) journal_->close();  // what is queued reaches the disk first (bounded)
  if (sync_) sync_->close();
  close(&housekeeping_);
  close(&reaper_);
  close(&sighup_);
  close(&sigusr1_);
  close(&sigterm_);
  close(&sigint_);
  close(&drain_timer_);
}

// ---------------------------------------------------------------- connection caps

std::optional<Decision> Gateway::admit(Session& s) {
  const IpAddress ip = s.client_ip();
  const int64_t now = now_ms();
  auto refusal = shared_.with([&](SharedState::Data& d) -> std::optional<Decision> {
    const auto& lim = d.policy->connections;
    engine::ConnectionLoad load;
    load.open_total = d.admitted;
    auto it = d.per_ip.find(ip);
    load.open_from_ip = it == d.per_ip.end() ? 0 : it->second;
    // The rate limiter counts the connection only when the total cap lets it be considered.
    load.over_rate = d.admitted < lim.max_total && d.connection_rate.enabled() &&
                     !d.connection_rate.allow(ip, now);
    Decision dec = engine::admit(*d.policy, ip, load);
    if (!dec.allowed()) return dec;
    ++d.per_ip[ip];
    ++d.admitted;
    return std::nullopt;
  });
  if (!refusal) s.admitted_ = true;
  return refusal;
}

void Gateway::release(Session& s) {
  if (!s.admitted_) return;
  s.admitted_ = false;
  const IpAddress ip = s.client_ip();
  shared_.with([&](SharedState::Data& d) {
    --d.admitted;
    auto it = d.per_ip.find(ip);
    if (it != d.per_ip.end() && --it->second == 0) d.per_ip.erase(it);
  });
}

// ---------------------------------------------------------------- bans

bool Gateway::banned(const IpAddress& ip) {
  return shared_.with(
      [&](SharedState::Data& d) { return d.bans.banned(d.ban_key(ip), unix_now()); });
}

bool Gateway::repeated_failure(uint64_t key) {
  return shared_.with([&](SharedState::Data& d) {
    return d.bans.repeated_failure(key, unix_now(), d.policy->brute_force.window);
  });
}

uint32_t Gateway::record_auth_failure(const IpAddress& ip) {
  return shared_.with([&](SharedState::Data& d) {
    const IpAddress key = d.ban_key(ip);
    const UnixMillis now = unix_now();
    const auto& bf = d.policy->brute_force;
    if (d.sync) d.sync->failure("ip", key.to_string(), now, bf.window.count() * 1000);
    return d.bans.record_failure(key, now, bf);
  });
}

uint64_t Gateway::ban(const IpAddress& ip, const std::string& reason, const std::string& session) {
  return shared_.with([&](SharedState::Data& d) -> uint64_t {
    // Parallel connections of one guesser must not escalate the same offense several times.
    const IpAddress key = d.ban_key(ip);
    const UnixMillis now = unix_now();
    if (d.bans.banned(key, now)) return 0;
    BanEntry e = d.bans.ban(key, now, d.policy->brute_force, reason, d.ban_prefix(ip));
    metrics_.ban_issued();
    if (d.sync) d.sync->ban(e);
    log_.write("ban", {{"session", session},
                       {"ip", e.target()},
                       {"action", "ban"},
                       {"enforced", true},
                       {"until", iso_time(e.until)},  // ISO 8601, like every log time
                       {"duration_s", (e.until - e.since) / 1000},
                       {"offense", e.offense},
                       {"reason", reason}});
    return journal_ ? journal_->record_ban(e) : 0;
  });
}

bool Gateway::ban_recorded(uint64_t record) const {
  return record == 0 || !journal_ || journal_->done() >= record;
}

void Gateway::on_journal_progress() {
  if (!journal_) return;
  // Failed writes: logged once each (the ban holds in memory), and when writing works again.
  const uint64_t errors = journal_->write_errors();
  const std::string last = journal_->last_error();
  if (errors > journal_errors_seen_) {
    journal_errors_seen_ = errors;
    journal_failing_ = true;
    log_.write("error",
               {{"component", "bans"},
                {"reason",
                 "state file not written (bans, locks and suspensions stay in force in memory): " +
                     (last.empty() ? std::string("write failed") : last)}});
  } else if (journal_failing_ && last.empty()) {
    journal_failing_ = false;
    log_.write("error", {{"component", "bans"},
                         {"reason", "ban state written again after earlier failures"}});
  }
  // Sessions waiting for their record live on their workers' loops: each is told there.
  for (auto& w : workers_) {
    Worker* worker = w.get();
    if (worker->index() == 0) {
      worker->journal_progress();
    } else {
      worker->post([worker] { worker->journal_progress(); });
    }
  }
}

void Gateway::would_ban(const IpAddress& ip, const std::string& reason,
                        const std::string& session) {
  BanEntry covered;  // what a ban would cover, named as /bans names it
  shared_.with([&](SharedState::Data& d) {
    covered.ip = d.ban_key(ip);
    covered.prefix = d.ban_prefix(ip);
  });
  log_.write("ban", {{"session", session},
                     {"ip", covered.target()},
                     {"action", "would_ban"},
                     {"enforced", false},
                     {"reason", reason}});
}

void Gateway::load_bans() {
  // The state file is fixed for the life of the process (like the listeners).
  const std::string& path = policy_->brute_force.state_file;
  if (path.empty()) return;
  // Before any worker runs: nothing else touches the state yet.
  shared_.with([&](SharedState::Data& d) {
    std::string err = StateJournal::load(path, &d.bans, &d.logins.guard(), &d.logins.breaker());
    if (!err.empty()) log_.write("error", {{"component", "bans"}, {"reason", err}});
    journal_ = std::make_unique<StateJournal>(
        &loop_, path, d.bans, policy_->brute_force, policy_->log.path != "-",
        [this] { on_journal_progress(); }, &d.logins.guard(), &d.logins.breaker());
    d.journal = journal_.get();
    d.logins.set_journal(journal_.get());
  });
}

// ---------------------------------------------------------------- admin endpoint

int run_gateway(const RunOptions& options) {
  Gateway gw(options);
  return gw.run();
}

}  // namespace smtpgate
