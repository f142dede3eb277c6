#include "proxy/shared_sync.h"

#include "policy/domain_set.h"
#include "proxy/gateway.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/redis_link.h"
#include "proxy/shared_state.h"
#include "proxy/state_journal.h"
#include "proxy/unix_time.h"

namespace smtpgate {
namespace {

constexpr size_t kMaxSeen = 200000;  // failure ids remembered (an event and a load name one)

nlohmann::json ban_json(const BanEntry& e) {
  nlohmann::json j = {{"ip", e.ip.to_string()}, {"since", e.since},   {"until", e.until},
                      {"offense", e.offense},   {"reason", e.reason}, {"prefix", e.prefix}};
  return j;
}

std::optional<BanEntry> ban_of(const nlohmann::json& j) {
  try {
    auto ip = IpAddress::parse(j.at("ip").get<std::string>());
    if (!ip) return std::nullopt;
    BanEntry e;
    e.ip = *ip;
    e.since = j.at("since").get<int64_t>();
    e.until = j.at("until").get<int64_t>();
    e.offense = j.value("offense", uint32_t{1});
    e.reason = j.value("reason", "");
    e.prefix = j.value("prefix", uint8_t{0});
    return e;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

// Remote decisions never ban what this instance's policy protects.
bool protected_address(const Policy& p, const IpAddress& ip) {
  return p.brute_force.never_ban.lookup(ip) || p.trusted_proxies.lookup(ip);
}

}  // namespace

SharedSync::SharedSync(uv_loop_t* loop, SharedState& state, Logger& log, MetricsRegistry& metrics,
                       const SharedSettings& settings)
    : state_(state), log_(log), metrics_(metrics) {
  link_ = std::make_unique<RedisLink>(loop, RedisLinkConfig::from(settings));
  wake_ = new uv_async_t;
  uv_async_init(loop, wake_, [](uv_async_t* h) {
    if (auto* self = static_cast<SharedSync*>(h->data)) self->flush();
  });
  wake_->data = this;
}

SharedSync::~SharedSync() {
  close();
}

std::string SharedSync::start() {
  link_->on_log([this](RedisLink::Level level, std::string_view message) {
    if (level == RedisLink::Level::Error)
      log_.write("error", {{"component", "shared"}, {"reason", std::string(message)}});
  });
  link_->on_down([this](std::string_view reason) {
    metrics_.set_shared_up(false);
    log_.write("error",
               {{"component", "shared"},
                {"reason", "Redis unreachable, serving on local state: " + std::string(reason)}});
  });
  link_->on_up([this] {
    metrics_.set_shared_up(true);
    log_.write("shared", {{"state", "up"}, {"instance", link_->instance()}});
    // Everything others decided while this instance was away (or before it started). What
    // this instance decided meanwhile was queued and goes out first.
    link_->load_all(unix_now() - 30LL * 86400 * 1000, [this](bool ok, SharedSnapshot snap) {
      if (ok) apply_snapshot(snap);
    });
  });
  link_->on_event([this](const nlohmann::json& event) { apply(event); });
  metrics_.set_shared_up(false);
  return link_->start();
}

void SharedSync::close() {
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    closed_ = true;
    queue_.clear();
  }
  link_.reset();
  if (wake_) {
    wake_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(wake_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
    wake_ = nullptr;
  }
}

// ---------------------------------------------------------------- this instance's decisions

void SharedSync::push(nlohmann::json op) {
  std::lock_guard lock(mu_);
  if (closed_) return;
  queue_.push_back(std::move(op));
  if (queue_.size() == 1) uv_async_send(wake_);
}

void SharedSync::ban(const BanEntry& e) {
  push({{"type", "ban"}, {"ban", ban_json(e)}});
}

void SharedSync::unban(const IpAddress& key) {
  push({{"type", "unban"}, {"ip", key.to_string()}});
}

void SharedSync::failure(std::string_view kind, std::string_view key, UnixMillis at,
                         int64_t window_ms) {
  push({{"type", "fail"},
        {"kind", std::string(kind)},
        {"key", std::string(key)},
        {"at", at},
        {"window", window_ms}});
}

void SharedSync::login_lock(std::string_view login, UnixMillis until, uint32_t failures) {
  push({{"type", "login_lock"},
        {"login", ascii_lower(login)},
        {"until", until},
        {"failures", failures}});
}

void SharedSync::suspend(const Suspension& s) {
  push({{"type", "suspend"},
        {"login", s.login},
        {"since", s.since},
        {"trigger", s.trigger},
        {"value", s.value},
        {"threshold", s.threshold}});
}

void SharedSync::login_release(std::string_view login) {
  push({{"type", "login_release"}, {"login", ascii_lower(login)}});
}

void SharedSync::known_good(std::string_view login, const IpAddress& key, UnixMillis at) {
  push(
      {{"type", "known_good"}, {"login", ascii_lower(login)}, {"ip", key.to_string()}, {"at", at}});
}

void SharedSync::sent(std::string_view login, uint32_t recipients, UnixMillis at) {
  push({{"type", "sent"}, {"login", ascii_lower(login)}, {"count", recipients}, {"at", at}});
}

void SharedSync::flush() {
  std::vector<nlohmann::json> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(queue_);
  }
  if (!link_) return;
  for (auto& op : batch) {
    const std::string type = op.value("type", "");
    if (type == "ban") {
      const auto& b = op["ban"];
      link_->set_ban(b.value("ip", ""), b, b.value("until", int64_t{0}));
    } else if (type == "unban") {
      link_->del_ban(op.value("ip", ""));
    } else if (type == "fail") {
      const std::string id =
          link_->add_failure(op.value("kind", ""), op.value("key", ""), op.value("at", int64_t{0}),
                             op.value("window", int64_t{0}));
      op["id"] = id;
      seen(id);
    } else if (type == "login_lock") {
      link_->set_login(op.value("login", ""), op, op.value("until", int64_t{0}));
    } else if (type == "suspend") {
      link_->set_login(op.value("login", ""), op, 0);  // until an admin releases it
    } else if (type == "login_release") {
      link_->del_login(op.value("login", ""));
    } else if (type == "sent") {
      const std::string id = link_->add_sent(op.value("login", ""), op.value("count", 1u),
                                             op.value("at", int64_t{0}), 3600LL * 1000);
      op["id"] = id;
      seen(id);
    }
    link_->publish(std::move(op));
  }
}

// ---------------------------------------------------------------- others' decisions

bool SharedSync::seen(const std::string& id) {
  if (id.empty()) return false;
  if (!seen_.insert(id).second) return true;
  seen_order_.push_back(id);
  if (seen_order_.size() > kMaxSeen) {
    seen_.erase(seen_order_.front());
    seen_order_.pop_front();
  }
  return false;
}

void SharedSync::apply(const nlohmann::json& event) {
  const std::string type = event.value("type", "");
  const UnixMillis now = unix_now();
  try {
    state_.with([&](SharedState::Data& d) {
      const Policy& p = *d.policy;
      if (type == "ban") {
        auto e = ban_of(event.at("ban"));
        if (!e || e->until <= now || protected_address(p, e->ip)) return;
        d.bans.restore(*e);
        if (d.journal) d.journal->record_ban(*e);  // the state file keeps it too
      } else if (type == "unban") {
        auto ip = IpAddress::parse(event.value("ip", ""));
        if (ip && d.bans.unban(*ip) && d.journal) d.journal->record_unban(*ip);
      } else if (type == "fail") {
        if (seen(event.value("id", ""))) return;
        const std::string kind = event.value("kind", "");
        const std::string key = event.value("key", "");
        const UnixMillis at = event.value("at", now);
        if (kind == "ip") {
          auto ip = IpAddress::parse(key);
          if (ip && !protected_address(p, *ip)) d.bans.record_failure(*ip, at, p.brute_force);
        } else if (kind == "login" && p.brute_force.per_login) {
          d.logins.guard().record_failure(key, at, *p.brute_force.per_login);
        }
      } else if (type == "login_lock") {
        d.logins.guard().restore_lock(event.value("login", ""), event.value("until", int64_t{0}),
                                      event.value("failures", 0u), now);
      } else if (type == "suspend") {
        Suspension s;
        s.login = event.value("login", "");
        s.since = event.value("since", now);
        s.trigger = event.value("trigger", "");
        s.value = event.value("value", 0u);
        s.threshold = event.value("threshold", 0u);
        if (s.login.empty()) return;
        d.logins.breaker().restore(s);
        if (d.journal) d.journal->record_suspension(s);
      } else if (type == "login_release") {
        const std::string login = event.value("login", "");
        const bool had = d.logins.guard().release(login) | d.logins.breaker().release(login);
        if (had && d.journal) d.journal->record_login_release(login);
      } else if (type == "known_good") {
        auto ip = IpAddress::parse(event.value("ip", ""));
        const std::string login = event.value("login", "");
        if (!ip || login.empty()) return;
        d.logins.guard().restore_known_good(login, *ip, event.value("at", now));
        if (d.journal) d.journal->record_known_good(login, *ip, event.value("at", now));
      } else if (type == "sent") {
        if (seen(event.value("id", ""))) return;
        // Steady time for the sending counters: "at" is wall time, so as long ago as it was.
        const int64_t ago = std::max<int64_t>(0, now - event.value("at", now));
        d.sending.record_message(event.value("login", ""), event.value("count", 1u),
                                 Gateway::now_ms() - ago);
      }
    });
  } catch (const nlohmann::json::exception&) {
    // A malformed event from another instance changes nothing here.
  }
}

void SharedSync::apply_snapshot(SharedSnapshot& snap) {
  const UnixMillis now = unix_now();
  state_.with([&](SharedState::Data& d) {
    const Policy& p = *d.policy;
    for (const auto& b : snap.bans) {
      auto e = ban_of(b.value);
      if (!e || e->until <= now || protected_address(p, e->ip)) continue;
      if (d.bans.banned(e->ip, now)) continue;
      d.bans.restore(*e);
      if (d.journal) d.journal->record_ban(*e);
    }
    for (const auto& l : snap.logins) {
      const std::string type = l.value.value("type", "");
      if (type == "login_lock") {
        d.logins.guard().restore_lock(l.login, l.value.value("until", int64_t{0}),
                                      l.value.value("failures", 0u), now);
      } else if (type == "suspend" && !d.logins.breaker().suspended(l.login)) {
        Suspension s;
        s.login = l.login;
        s.since = l.value.value("since", now);
        s.trigger = l.value.value("trigger", "");
        s.value = l.value.value("value", 0u);
        s.threshold = l.value.value("threshold", 0u);
        d.logins.breaker().restore(s);
        if (d.journal) d.journal->record_suspension(s);
      }
    }
    for (const auto& w : snap.sent) {
      for (const auto& f : w.entries) {
        if (seen(f.id)) continue;
        const int64_t ago = std::max<int64_t>(0, now - f.at_ms);
        d.sending.record_message(w.key, f.count, Gateway::now_ms() - ago);
      }
    }
    for (const auto& w : snap.failures) {
      for (const auto& f : w.entries) {
        if (seen(f.id)) continue;  // counted already (its event, or this instance's own)
        if (w.kind == "ip") {
          auto ip = IpAddress::parse(w.key);
          if (ip && !protected_address(p, *ip)) d.bans.record_failure(*ip, f.at_ms, p.brute_force);
        } else if (w.kind == "login" && p.brute_force.per_login) {
          d.logins.guard().record_failure(w.key, f.at_ms, *p.brute_force.per_login);
        }
      }
    }
  });
}

}  // namespace smtpgate
