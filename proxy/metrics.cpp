#include "proxy/metrics.h"

#include <charconv>
#include <cmath>

namespace smtpgate {
namespace {

constexpr std::array<std::string_view, 4> kRefusedNames = {"ban", "access", "limit", "rate"};
constexpr std::array<std::string_view, 4> kAuthNames = {"ok", "failed", "tempfail", "refused"};
constexpr std::array<std::string_view, 2> kMessageNames = {"delivered", "rejected"};

std::string format_double(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip form
  return ec == std::errc() ? std::string(buf, end) : std::string("NaN");
}

// Builds the exposition text family by family.
class Writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    // HELP text escapes backslash and newline only.
    for (char c : help) {
      if (c == '\\')
        out_ += "\\\\";
      else if (c == '\n')
        out_ += "\\n";
      else
        out_ += c;
    }
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }

  template <size_t N>
  void sample(std::string_view name, const std::array<std::string_view, N>& label_names,
              const std::array<std::string_view, N>& label_values, std::string_view value) {
    out_ += name;
    if constexpr (N > 0) {
      out_ += '{';
      for (size_t i = 0; i < N; ++i) {
        if (i) out_ += ',';
        out_ += label_names[i];
        out_ += "=\"";
        out_ += prometheus_escape_label(label_values[i]);
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }

  void sample(std::string_view name, uint64_t value) {
    sample<0>(name, {}, {}, std::to_string(value));
  }

  template <size_t N>
  void counter(std::string_view name, const std::array<std::string_view, N>& label_names,
               const LabeledCounter<N>& c) {
    for (const auto& [key, value] : c.values()) {
      std::array<std::string_view, N> views;
      for (size_t i = 0; i < N; ++i) views[i] = key[i];
      sample(name, label_names, views, std::to_string(value));
    }
  }

  // A family with a fixed set of label values: every value is exported, zeros included.
  template <size_t M>
  void fixed(std::string_view name, std::string_view label,
             const std::array<std::string_view, M>& names, const std::array<uint64_t, M>& values) {
    for (size_t i = 0; i < M; ++i) sample<1>(name, {label}, {names[i]}, std::to_string(values[i]));
  }

  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace

std::string prometheus_escape_label(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void MetricsRegistry::connection_opened(std::string_view listener) {
  std::lock_guard lock(mu_);
  connections_.add({listener});
  ++connections_active_;
}

void MetricsRegistry::connection_closed() {
  std::lock_guard lock(mu_);
  if (connections_active_ > 0) --connections_active_;
}

void MetricsRegistry::connection_refused(RefusedReason reason) {
  std::lock_guard lock(mu_);
  ++refused_[static_cast<size_t>(reason)];
}

void MetricsRegistry::session(std::string_view listener, std::string_view session_class) {
  std::lock_guard lock(mu_);
  sessions_.add({listener, session_class});
}

void MetricsRegistry::decision(std::string_view stage, std::string_view rule,
                               std::string_view verdict, bool enforced) {
  std::lock_guard lock(mu_);
  decisions_.add({stage, rule, verdict, enforced ? "true" : "false"});
}

void MetricsRegistry::auth(AuthResult result) {
  std::lock_guard lock(mu_);
  ++auth_[static_cast<size_t>(result)];
}

void MetricsRegistry::message_delivered(uint64_t bytes) {
  std::lock_guard lock(mu_);
  ++messages_[static_cast<size_t>(MessageResult::Delivered)];
  message_bytes_ += bytes;
}

void MetricsRegistry::message_rejected() {
  std::lock_guard lock(mu_);
  ++messages_[static_cast<size_t>(MessageResult::Rejected)];
}

void MetricsRegistry::backend_error(std::string_view reason) {
  std::lock_guard lock(mu_);
  backend_errors_.add({reason});
}

void MetricsRegistry::observe_backend_reply(double seconds) {
  std::lock_guard lock(mu_);
  if (std::isnan(seconds)) return;
  if (seconds < 0) seconds = 0;  // a clock step must not produce a negative latency
  size_t i = 0;
  while (i < kReplyBuckets.size() && seconds > kReplyBuckets[i]) ++i;
  ++reply_buckets_[i];
  reply_sum_ += seconds;
  ++reply_count_;
}

void MetricsRegistry::policy_reload(std::string_view result) {
  std::lock_guard lock(mu_);
  reloads_.add({result});
}

std::string MetricsRegistry::render_prometheus() const {
  std::lock_guard lock(mu_);
  Writer w;
  w.family("smtpgate_connections_total", "counter", "TCP connections accepted, by listener.");
  w.counter<1>("smtpgate_connections_total", {"listener"}, connections_);

  w.family("smtpgate_connections_active", "gauge", "TCP connections currently open.");
  w.sample("smtpgate_connections_active", connections_active_);

  w.family("smtpgate_workers", "gauge", "Event loops serving sessions.");
  w.sample("smtpgate_workers", workers_);
  if (shared_up_) {
    w.family("smtpgate_shared_up", "gauge", "1 while the shared state (Redis) is reachable.");
    w.sample("smtpgate_shared_up", *shared_up_ ? 1 : 0);
  }

  w.family("smtpgate_connections_refused_total", "counter",
           "Connections refused before the session started, by reason.");
  w.fixed<4>("smtpgate_connections_refused_total", "reason", kRefusedNames, refused_);

  w.family("smtpgate_sessions_total", "counter", "SMTP sessions, by listener and class.");
  w.counter<2>("smtpgate_sessions_total", {"listener", "class"}, sessions_);

  w.family("smtpgate_decisions_total", "counter",
           "Policy decisions, by stage, rule, verdict and whether they were enforced.");
  w.counter<4>("smtpgate_decisions_total", {"stage", "rule", "verdict", "enforced"}, decisions_);

  w.family("smtpgate_bans_active", "gauge", "Client IPs currently banned.");
  w.sample("smtpgate_bans_active", bans_active_);
  w.family("smtpgate_logins_locked", "gauge",
           "Logins locked for unknown addresses (brute_force.per_login).");
  w.sample("smtpgate_logins_locked", logins_locked_);
  w.family("smtpgate_logins_suspended", "gauge",
           "Logins suspended by submission.breaker until an admin releases them.");
  w.sample("smtpgate_logins_suspended", logins_suspended_);

  w.family("smtpgate_bans_issued_total", "counter", "Bans issued.");
  w.sample("smtpgate_bans_issued_total", bans_issued_);

  w.family("smtpgate_auth_total", "counter", "AUTH attempts, by result.");
  w.fixed<4>("smtpgate_auth_total", "result", kAuthNames, auth_);

  w.family("smtpgate_messages_total", "counter", "Messages, by result of the final reply.");
  w.fixed<2>("smtpgate_messages_total", "result", kMessageNames, messages_);

  w.family("smtpgate_message_bytes_total", "counter", "Bytes of messages the backend accepted.");
  w.sample("smtpgate_message_bytes_total", message_bytes_);

  w.family("smtpgate_backend_errors_total", "counter", "Backend failures, by reason.");
  w.counter<1>("smtpgate_backend_errors_total", {"reason"}, backend_errors_);
  w.family("smtpgate_proxy_protocol_total", "counter",
           "Connections on proxy_protocol listeners, by how their PROXY header went.");
  w.counter<1>("smtpgate_proxy_protocol_total", {"result"}, proxy_protocol_);

  w.family("smtpgate_backend_reply_seconds", "histogram",
           "Time from a command forwarded to the backend's reply.");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kReplyBuckets.size(); ++i) {
    cumulative += reply_buckets_[i];
    std::string le = format_double(kReplyBuckets[i]);
    w.sample<1>("smtpgate_backend_reply_seconds_bucket", {"le"}, {le}, std::to_string(cumulative));
  }
  w.sample<1>("smtpgate_backend_reply_seconds_bucket", {"le"}, {"+Inf"},
              std::to_string(reply_count_));
  w.sample<0>("smtpgate_backend_reply_seconds_sum", {}, {}, format_double(reply_sum_));
  w.sample("smtpgate_backend_reply_seconds_count", reply_count_);

  w.family("smtpgate_policy_reloads_total", "counter", "Policy reloads, by result.");
  w.counter<1>("smtpgate_policy_reloads_total", {"result"}, reloads_);

  w.family("smtpgate_log_dropped_total", "counter",
           "Log lines dropped because the log sink did not keep up or failed.");
  w.sample("smtpgate_log_dropped_total", log_dropped_);

  w.family("smtpgate_state_write_errors_total", "counter",
           "Failed writes of the ban state file (bans stay in force in memory).");
  w.sample("smtpgate_state_write_errors_total", state_write_errors_);
  return w.take();
}

}  // namespace smtpgate
