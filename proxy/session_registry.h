// Owns the sessions of a loop. A session is added when its connection is accepted and
// retired once it has closed its handles; a retired session is deleted on a later loop turn,
// never under its own call stack (Envoy's deferred delete).
#pragma once

#include <list>
#include <memory>
#include <vector>

#include "proxy/session.h"

namespace smtpgate {

class SessionRegistry {
 public:
  SessionRegistry() = default;
  SessionRegistry(const SessionRegistry&) = delete;
  SessionRegistry& operator=(const SessionRegistry&) = delete;

  Session& add(std::unique_ptr<Session> s) {
    live_.push_back(std::move(s));
    Session& added = *live_.back();
    added.registry_pos_ = std::prev(live_.end());
    return added;
  }
  // O(1): a connection flood must not walk every session.
  void retire(Session& s) {
    retired_.push_back(std::move(*s.registry_pos_));
    live_.erase(s.registry_pos_);
  }
  bool has_retired() const { return !retired_.empty(); }
  void delete_retired() { retired_.clear(); }

  size_t size() const { return live_.size(); }
  bool empty() const { return live_.empty(); }
  // The live sessions at this moment, for calling into each (drain, abandon) while some
  // retire themselves.
  std::vector<Session*> snapshot() const {
    std::vector<Session*> out;
    out.reserve(live_.size());
    for (const auto& s : live_) out.push_back(s.get());
    return out;
  }

 private:
  std::list<std::unique_ptr<Session>> live_;
  std::vector<std::unique_ptr<Session>> retired_;
};

}  // namespace smtpgate
