// What every worker loop counts once for the whole process (SPEC §8): bans and AUTH failure
// counts, connection caps and rates per address, sending counters per login, login locks and
// suspensions — and the policy they are judged by, swapped by a reload.
//
// How it is shared: one mutex, and no other way in than with(), which holds it for the length
// of one short call. What runs under it is map lookups and updates, a state-file record queued
// (StateJournal::record_*, its own queue) and a log line queued (the writer thread's queue):
// never I/O, never a wait on another thread. A worker therefore never blocks for long, and a
// newcomer adding a counter adds a member here and reaches it the same way.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "policy/ban_list.h"
#include "policy/ip_address.h"
#include "policy/policy.h"
#include "policy/rate_limiter.h"
#include "proxy/login_defence.h"

namespace smtpgate {

class Logger;
class StateJournal;
class SharedSync;

class SharedState {
 public:
  struct Data {
    explicit Data(Logger& log) : logins(log) {}

    PolicySnapshot policy;  // the current policy (sessions in flight keep their own)
    BanList bans;
    LoginDefence logins;
    SendingLimiter sending;                 // steady milliseconds
    ConnectionRateLimiter connection_rate;  // steady milliseconds
    std::map<IpAddress, uint32_t> per_ip;   // admitted sessions by client address
    uint32_t admitted = 0;                  // admitted sessions in all
    StateJournal* journal = nullptr;        // with brute_force.state_file
    SharedSync* sync = nullptr;             // with shared.redis: tells the other instances

    // What a ban of `ip` covers (brute_force.ipv6_prefix): an IPv6 client's network, an IPv4
    // address itself; and that prefix length (0 for the address alone).
    IpAddress ban_key(const IpAddress& ip) const {
      return ip.is_v6() ? ip.masked(policy->brute_force.ipv6_prefix) : ip;
    }
    uint8_t ban_prefix(const IpAddress& ip) const {
      return ip.is_v6() && policy->brute_force.ipv6_prefix < 128 ? policy->brute_force.ipv6_prefix
                                                                 : 0;
    }
  };

  explicit SharedState(Logger& log) : data_(log) {}
  SharedState(const SharedState&) = delete;
  SharedState& operator=(const SharedState&) = delete;

  // Runs f(Data&) under the lock and returns what it returns. f must not call with() again.
  template <class F>
  decltype(auto) with(F&& f) {
    std::lock_guard lock(mu_);
    return std::forward<F>(f)(data_);
  }

 private:
  std::mutex mu_;
  Data data_;
};

}  // namespace smtpgate
