// The gateway's counters, exported on the admin endpoint in the Prometheus text format
// (0.0.4). Plain integers without locking: everything runs on the loop thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace smtpgate {

// A counter family keyed by N label values. Lookups take string_views and allocate only
// the first time a label tuple is seen; the map owns copies, so callers may pass views of
// strings that die later (a listener name from a policy that is reloaded).
template <size_t N>
class LabeledCounter {
 public:
  using Key = std::array<std::string, N>;
  using KeyView = std::array<std::string_view, N>;

  void add(const KeyView& labels, uint64_t n = 1) {
    auto it = values_.find(labels);
    if (it == values_.end()) it = values_.emplace(owned(labels), 0).first;
    it->second += n;
  }
  uint64_t get(const KeyView& labels) const {
    auto it = values_.find(labels);
    return it == values_.end() ? 0 : it->second;
  }
  uint64_t total() const {
    uint64_t t = 0;
    for (const auto& [k, v] : values_) t += v;
    return t;
  }
  size_t size() const { return values_.size(); }

  // Element-wise comparison of owned and viewed keys, for lookups without a temporary Key.
  struct Less {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      for (size_t i = 0; i < N; ++i) {
        int c = std::string_view(a[i]).compare(std::string_view(b[i]));
        if (c != 0) return c < 0;
      }
      return false;
    }
  };
  // Sorted by label values, so the exposition is stable.
  const std::map<Key, uint64_t, Less>& values() const { return values_; }

 private:
  static Key owned(const KeyView& v) {
    Key k;
    for (size_t i = 0; i < N; ++i) k[i] = std::string(v[i]);
    return k;
  }
  std::map<Key, uint64_t, Less> values_;
};

// Why a connection was refused before its session started.
enum class RefusedReason : uint8_t { Ban, Access, Limit, Rate };
enum class AuthResult : uint8_t { Ok, Failed, Tempfail, Refused };
enum class MessageResult : uint8_t { Delivered, Rejected };

// Process totals (SPEC §8): every worker loop reports into the one registry, each call under
// its mutex (a few counter bumps per message; /metrics renders under it too).
class MetricsRegistry {
 public:
  // Upper bounds of smtpgate_backend_reply_seconds, seconds; +Inf is implicit.
  static constexpr std::array<double, 13> kReplyBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

  // An accepted TCP connection, including ones refused right after (connection_refused).
  void connection_opened(std::string_view listener);
  void connection_closed();  // every opened connection is closed exactly once
  void connection_refused(RefusedReason reason);
  // A session and the class it ended with ("mx", "submission", or "auto" if never decided).
  void session(std::string_view listener, std::string_view session_class);
  void decision(std::string_view stage, std::string_view rule, std::string_view verdict,
                bool enforced);
  void set_bans_active(uint64_t n) {
    std::lock_guard lock(mu_);
    bans_active_ = n;
  }
  void set_logins(uint64_t locked, uint64_t suspended) {
    std::lock_guard lock(mu_);
    logins_locked_ = locked;
    logins_suspended_ = suspended;
  }
  void ban_issued() {
    std::lock_guard lock(mu_);
    ++bans_issued_;
  }
  void auth(AuthResult result);
  // The backend accepted a message of `bytes` octets (as forwarded).
  void message_delivered(uint64_t bytes);
  void message_rejected();
  void backend_error(std::string_view reason);  // "connect", "timeout", "protocol", ...
  // Inbound PROXY headers: "proxied", "local", "untrusted", "invalid", "timeout", "closed".
  void proxy_protocol(std::string_view result) {
    std::lock_guard lock(mu_);
    proxy_protocol_.add({result});
  }
  void observe_backend_reply(double seconds);
  void policy_reload(std::string_view result);  // "loaded" | "rejected"
  // Read from their owners when /metrics is rendered.
  void set_log_dropped(uint64_t n) {
    std::lock_guard lock(mu_);
    log_dropped_ = n;
  }
  void set_state_write_errors(uint64_t n) {
    std::lock_guard lock(mu_);
    state_write_errors_ = n;
  }
  // With shared.redis: whether the link is up (smtpgate_shared_up, absent without Redis).
  void set_shared_up(bool up) {
    std::lock_guard lock(mu_);
    shared_up_ = up;
  }
  void set_workers(uint64_t n) {
    std::lock_guard lock(mu_);
    workers_ = n;
  }

  // Readers for tests (one thread).
  uint64_t connections_active() const { return connections_active_; }
  const LabeledCounter<1>& connections() const { return connections_; }
  uint64_t refused(RefusedReason r) const { return refused_[static_cast<size_t>(r)]; }
  uint64_t auth_count(AuthResult r) const { return auth_[static_cast<size_t>(r)]; }
  uint64_t messages(MessageResult r) const { return messages_[static_cast<size_t>(r)]; }
  uint64_t message_bytes() const { return message_bytes_; }
  uint64_t bans_issued() const { return bans_issued_; }
  const LabeledCounter<4>& decisions() const { return decisions_; }

  std::string render_prometheus() const;

 private:
  mutable std::mutex mu_;
  LabeledCounter<1> connections_;  // listener
  uint64_t connections_active_ = 0;
  std::array<uint64_t, 4> refused_{};
  LabeledCounter<2> sessions_;   // listener, class
  LabeledCounter<4> decisions_;  // stage, rule, verdict, enforced
  uint64_t bans_active_ = 0;
  uint64_t logins_locked_ = 0;
  uint64_t logins_suspended_ = 0;
  uint64_t bans_issued_ = 0;
  std::array<uint64_t, 4> auth_{};
  std::array<uint64_t, 2> messages_{};
  uint64_t message_bytes_ = 0;
  LabeledCounter<1> backend_errors_;                                // reason
  LabeledCounter<1> proxy_protocol_;                                // result
  std::array<uint64_t, kReplyBuckets.size() + 1> reply_buckets_{};  // not cumulative; last: +Inf
  double reply_sum_ = 0;
  uint64_t reply_count_ = 0;
  LabeledCounter<1> reloads_;  // result
  uint64_t log_dropped_ = 0;
  uint64_t state_write_errors_ = 0;
  uint64_t workers_ = 1;
  std::optional<bool> shared_up_;
};

// Escapes a label value for the text format: backslash, double quote and newline.
std::string prometheus_escape_label(std::string_view value);

}  // namespace smtpgate
