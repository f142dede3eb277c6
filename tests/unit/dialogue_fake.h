// Fakes for driving a smtp::Dialogue without sockets (tests/unit/test_dialogue.cpp): a DialogueIo
// that records everything the dialogue asks of the connections, and DialogueServices with
// counters the test sets and reports it can read back.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "policy/login_breaker.h"
#include "proxy/smtp/dialogue.h"

namespace smtpgate::smtp::testing {

// The connections and the clock, as the session shell would carry them out.
class FakeIo final : public DialogueIo {
 public:
  struct Sent {
    BackendCommand cmd;
    std::string line;  // as it goes on the wire, CRLF included
  };

  // --- configuration
  std::string client_waiting;       // bytes peek_client() sees (sent before the greeting)
  bool backend_available = true;    // what backend_open() answers
  bool backend_offers_auth = true;  // what backend_auth() answers
  uint64_t body_so_far = 0;         // what body_bytes() answers

  // --- what the dialogue did
  std::string out;            // every reply byte for the client, in order
  std::vector<Sent> backend;  // commands for the backend, in order
  bool backend_connected = false;
  int backend_opens = 0;     // backend_open() calls
  int backend_connects = 0;  // of those, the ones that opened a new connection
  int backend_aborts = 0;
  int backend_quits = 0;
  std::vector<std::pair<std::string, std::string>> auths;  // backend_auth(login, password)
  int tls_starts = 0;
  std::vector<std::string> body_prefixes;  // start_body(prefix)
  int body_discards = 0;
  std::optional<std::chrono::milliseconds> deadline;  // armed now; nullopt = cleared
  int deadline_clears = 0;
  std::optional<std::string> closed;  // the first close_after_output(state)
  int close_calls = 0;

  // The client's output written since the last call (and forgotten here).
  std::string take() {
    std::string s;
    s.swap(out);
    return s;
  }

  void write(std::string_view bytes) override { out.append(bytes); }
  size_t peek_client(char* buf, size_t n) override {
    const size_t k = std::min(n, client_waiting.size());
    client_waiting.copy(buf, k);
    return k;
  }
  bool backend_open() override {
    ++backend_opens;
    if (!backend_available) return false;
    if (!backend_connected) ++backend_connects;
    backend_connected = true;
    return true;
  }
  bool backend_idle() const override { return !backend_connected; }
  void backend_send(BackendCommand cmd, std::string_view line, bool add_crlf) override {
    backend.push_back({cmd, std::string(line) + (add_crlf ? "\r\n" : "")});
  }
  bool backend_auth(std::string_view login, std::string_view password) override {
    auths.emplace_back(login, password);
    return backend_offers_auth;
  }
  void backend_abort() override {
    ++backend_aborts;
    backend_connected = false;
  }
  void backend_quit() override {
    ++backend_quits;
    backend_connected = false;
  }
  void start_body(std::string_view prefix) override { body_prefixes.emplace_back(prefix); }
  void discard_body() override { ++body_discards; }
  uint64_t body_bytes() const override { return body_so_far; }
  void start_tls() override { ++tls_starts; }
  void set_deadline(std::chrono::milliseconds after) override { deadline = after; }
  void clear_deadline() override {
    deadline.reset();
    ++deadline_clears;
  }
  void close_after_output(std::string_view state) override {
    ++close_calls;
    if (!closed) closed = std::string(state);
  }
};

// The gateway's shared state and its reports.
class FakeServices final : public DialogueServices {
 public:
  struct Auth {
    std::string login;
    AuthOutcome outcome;
    std::string reply;
  };
  struct Message {
    std::string from;
    uint64_t size;
    uint32_t recipients;
    std::string reply;
    bool delivered;
  };
  struct Ban {
    IpAddress ip;
    std::string reason;
  };
  struct Facts {  // DecisionFacts, kept
    std::string helo, login, from, rcpt;
  };
  struct Transaction {  // TransactionRecord, kept
    std::string from;
    std::vector<std::string> recipients, accepted;
    std::string outcome;
    Stage stage = Stage::Mail;
    std::string rule, reply;
    uint64_t size = 0;
  };

  // --- configuration
  uint64_t now = 1'700'000'000'000;  // the injected clock (ms)
  uint32_t messages_sent = 0;        // messages_last_hour() for any login
  uint32_t recipients_sent = 0;      // recipients_last_hour() for any login
  uint32_t failures_before = 0;      // failed logins counted for the IP before this session

  // --- what the dialogue reported
  std::vector<Decision> decisions;
  std::vector<Facts> decision_facts;  // one per decision
  std::vector<Transaction> transactions;
  std::vector<Decision> refused;  // connection_refused()
  std::vector<Auth> auths;
  std::vector<Message> messages;
  std::vector<Ban> bans;
  std::vector<Ban> would_bans;
  std::vector<std::string> counter_logins;  // logins whose sending counters were asked for
  uint32_t failures = 0;                    // record_auth_failure() calls
  int class_changes = 0;

  uint64_t now_ms() override { return now; }
  uint32_t messages_last_hour(std::string_view login) override {
    counter_logins.emplace_back(login);
    return messages_sent;
  }
  uint32_t recipients_last_hour(std::string_view login) override {
    counter_logins.emplace_back(login);
    return recipients_sent;
  }
  uint32_t record_auth_failure(const IpAddress&) override { return failures_before + ++failures; }
  // Stale passwords: a plain hash stands in for the gateway's keyed one.
  uint64_t password_key(const IpAddress& ip, std::string_view login,
                        std::string_view password) override {
    return std::hash<std::string>{}(ip.to_string() + '\0' + std::string(login) + '\0' +
                                    std::string(password)) |
           1;
  }
  bool repeated_failure(uint64_t key) override { return !failed_keys.insert(key).second; }
  // per_login: a lock the test sets, failures and successes recorded.
  std::string locked_until;  // non-empty: every address is a stranger
  std::vector<std::string> login_failures, login_successes;
  std::string login_locked(std::string_view, const IpAddress&) override { return locked_until; }
  void record_login_failure(std::string_view login) override { login_failures.emplace_back(login); }
  void record_login_success(std::string_view login, const IpAddress&) override {
    login_successes.emplace_back(login);
  }
  std::set<uint64_t> failed_keys;
  // submission.breaker: the real bookkeeping on the injected clock; suspensions recorded.
  LoginBreaker breaker;
  struct Suspended {
    std::string login;
    BreakerTrip trip;
  };
  std::vector<Suspended> suspended, would_suspend_calls;
  std::optional<BreakerTrip> breaker_login(std::string_view login, const IpAddress& ip) override {
    return policy && policy->submission.breaker
               ? breaker.login(login, ip, now, *policy->submission.breaker)
               : std::nullopt;
  }
  std::optional<BreakerTrip> breaker_recipient(std::string_view login,
                                               std::string_view domain) override {
    return policy && policy->submission.breaker
               ? breaker.recipient(login, domain, now, *policy->submission.breaker)
               : std::nullopt;
  }
  std::optional<BreakerTrip> breaker_refused(std::string_view login) override {
    return policy && policy->submission.breaker
               ? breaker.refused_recipient(login, now, *policy->submission.breaker)
               : std::nullopt;
  }
  std::optional<Suspension> login_suspended(std::string_view login) override {
    const Suspension* s = breaker.suspended(login);
    return s ? std::optional<Suspension>(*s) : std::nullopt;
  }
  void suspend(std::string_view login, const BreakerTrip& trip) override {
    breaker.suspend(login, trip, now);
    suspended.push_back({std::string(login), trip});
  }
  void would_suspend(std::string_view login, const BreakerTrip& trip) override {
    would_suspend_calls.push_back({std::string(login), trip});
  }
  const Policy* policy = nullptr;  // the breaker's thresholds (set by the harness)
  void ban(const IpAddress& ip, const std::string& reason) override {
    bans.push_back({ip, reason});
  }
  void would_ban(const IpAddress& ip, const std::string& reason) override {
    would_bans.push_back({ip, reason});
  }
  void decision(const Decision& d, const DecisionFacts& f) override {
    decisions.push_back(d);
    decision_facts.push_back(
        {std::string(f.helo), std::string(f.login), std::string(f.from), std::string(f.rcpt)});
  }
  void connection_refused(const Decision& d) override { refused.push_back(d); }
  void auth(std::string_view login, AuthOutcome outcome, std::string_view reply) override {
    auths.push_back({std::string(login), outcome, std::string(reply)});
  }
  void transaction(const TransactionRecord& t) override {
    Transaction r;
    r.from = t.from;
    r.recipients.assign(t.recipients.begin(), t.recipients.end());
    r.accepted.assign(t.accepted.begin(), t.accepted.end());
    r.outcome = t.outcome;
    r.stage = t.stage;
    r.rule = t.rule;
    r.reply = t.reply;
    r.size = t.size;
    transactions.push_back(r);
    // A message line is logged for a body that went to the backend (sent, or failed).
    if (t.message)
      messages.push_back({std::string(t.from), t.size, t.accepted_count,
                          std::string(t.reply) + "\r\n", t.outcome == "delivered"});
  }
  void class_changed() override { ++class_changes; }

  // The decision with this rule, if one was reported.
  const Decision* find(std::string_view rule) const {
    for (const auto& d : decisions)
      if (d.rule == rule) return &d;
    return nullptr;
  }
};

}  // namespace smtpgate::smtp::testing
