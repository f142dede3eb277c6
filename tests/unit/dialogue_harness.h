// The dialogue test harness: a policy assembled from replaceable sections, one session with
// its fakes (dialogue_fake.h), and the shell's handling of client input (proxy/session.cpp's
// part: one line at a time while commands are read, held input run later, plaintext after
// STARTTLS dropped). Shared by the test_dialogue*.cpp files.
#pragma once

#include <catch2/catch.hpp>

#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include "dialogue_fake.h"
#include "policy/loader.h"
#include "policy/replies.h"
#include "policy/rule_ids.h"
#include "proxy/smtp/line_reader.h"
#include "proxy/smtp/sasl.h"

namespace smtpgate::smtp::testing {
using namespace std::chrono_literals;

// ---------------------------------------------------------------- the policy

// Sections of the policy file a test may replace; the rest is fixed. The tls section names
// files that need not exist (check_files is off): listeners default to STARTTLS.
struct PolicyParts {
  std::string mx = R"({ "access": { "default": "allow", "deny": ["198.51.100.0/24"] },
                        "reject_local_sender": true, "max_recipients": 2 })";
  std::string submission = R"({ "require_tls": false,
                                "access": { "default": "deny", "allow": ["192.0.2.0/24"] },
                                "limits": { "messages_per_hour": 10,
                                            "recipients_per_hour": 50 } })";
  std::string brute_force = R"({ "max_failures": 3 })";
  std::string message = R"({ "max_bytes": 1000 })";
};

inline std::shared_ptr<Policy> load(const PolicyParts& parts) {
  std::string text = R"({
    "version": 1, "hostname": "mx.example.com",
    "local_domains": ["example.com"],
    "listeners": [
      { "name": "mx", "listen": "127.0.0.1:25", "class": "mx" },
      { "name": "submission", "listen": "127.0.0.1:587", "class": "submission" },
      { "name": "legacy", "listen": "127.0.0.1:2525", "class": "auto" },
      { "name": "submissions", "listen": "127.0.0.1:465", "class": "submission",
        "tls": "implicit" },
      { "name": "plain", "listen": "127.0.0.1:26", "class": "mx", "tls": "none" }
    ],
    "tls": { "cert": "/etc/smtpgate/cert.pem", "key": "/etc/smtpgate/key.pem" },
    "backend": { "address": "127.0.0.1:10025" })";
  text += ", \"mx\": " + parts.mx;
  text += ", \"submission\": " + parts.submission;
  text += ", \"brute_force\": " + parts.brute_force;
  text += ", \"message\": " + parts.message;
  text += "}";
  LoadOptions o;
  o.check_files = false;
  auto r = load_policy_text(text, "dialogue.json", o);
  for (const auto& e : r.errors) UNSCOPED_INFO(e.to_string());
  REQUIRE(r.ok());
  return r.policy;
}

inline constexpr const char* kClient = "192.0.2.10";    // allowed everywhere
inline constexpr const char* kDenied = "198.51.100.7";  // denied by mx.access and submission.access
inline constexpr const char* kOutsider = "203.0.113.5";  // mx allows, submission.access denies

// ---------------------------------------------------------------- the harness

struct Options {
  explicit Options(std::string l = "mx", std::string c = kClient)
      : listener(std::move(l)), client(std::move(c)) {}
  std::string listener;
  std::string client;
  PolicyParts parts;
  bool tls_available = true;
  bool banned = false;
  bool report_allows = false;
};

// One session: the dialogue, its fakes, and the shell's handling of the client's input.
struct Harness {
  std::shared_ptr<Policy> policy;
  FakeIo io;
  FakeServices services;
  std::unique_ptr<Dialogue> d;
  std::deque<std::string> held;  // lines read from the client, not yet given to the dialogue

  Harness() : Harness(Options()) {}
  explicit Harness(const Options& o) : policy(load(o.parts)) {
    Dialogue::Setup s;
    s.policy = policy.get();
    s.listener = policy->find_listener(o.listener);
    REQUIRE(s.listener);
    s.tls_available = o.tls_available;
    s.client = *IpAddress::parse(o.client);
    s.banned = o.banned;
    s.report_allows = o.report_allows;
    s.session_id = "s1";
    services.policy = policy.get();
    d = std::make_unique<Dialogue>(s, io, services);
  }
  explicit Harness(std::string listener) : Harness(Options{std::move(listener)}) {}

  // The connection is accepted; returns what the client got.
  std::string connect(const Decision* admission = nullptr) {
    d->open(admission);
    return io.take();
  }

  // The client's bytes arrive in one read: whole lines, each ending in CRLF. Returns what
  // the client got meanwhile.
  std::string send(std::string_view wire) {
    if (!d->on_client_input()) return io.take();  // refused: the bytes are never read
    while (!wire.empty()) {
      const size_t end = wire.find("\r\n");
      REQUIRE(end != std::string_view::npos);
      held.emplace_back(wire.substr(0, end));
      wire.remove_prefix(end + 2);
    }
    run();
    return io.take();
  }

  // The backend's reply to `cmd` (one complete reply, CRLF-terminated).
  std::string backend(BackendCommand cmd, const std::string& raw) {
    BackendReply r;
    r.code = std::stoi(raw.substr(0, 3));
    r.raw = raw;
    d->on_backend_reply(cmd, r);
    run();
    return io.take();
  }

  // The backend connection is gone (the shell has dropped it).
  std::string backend_fails(bool protocol_error) {
    io.backend_connected = false;
    d->on_backend_failed(protocol_error);
    run();
    return io.take();
  }

  // The body filter reached the end of the body.
  std::string body_end(BodyFilter::Status status, uint64_t size) {
    d->on_body_end(status, size);
    run();
    return io.take();
  }

  // Lines held while the dialogue waited, as the shell runs them once it reads again.
  void run() {
    while (!held.empty() && d->reading_commands() && !d->closing()) {
      const std::string line = std::move(held.front());
      held.pop_front();
      const int tls_before = io.tls_starts;
      d->on_line(line, !held.empty());
      // STARTTLS: what the client sent after it in the clear is dropped unread.
      if (io.tls_starts != tls_before) held.clear();
    }
  }

  std::string ehlo() { return send("EHLO client.example\r\n"); }

  // The backend's last command, CRLF included.
  std::string last_sent() const { return io.backend.empty() ? "" : io.backend.back().line; }
  BackendCommand last_cmd() const { return io.backend.back().cmd; }
};

// Backend replies used throughout.
inline const std::string kMailOk = "250 2.1.0 Ok\r\n";
inline const std::string kRcptOk = "250 2.1.5 Ok\r\n";
inline const std::string kRcptUnknown =
    "550 5.1.1 <nobody@example.com>: Recipient address rejected\r\n";
inline const std::string kGoAhead = "354 End data with <CR><LF>.<CR><LF>\r\n";
inline const std::string kQueued = "250 2.0.0 Ok: queued as 4XyzQ1\r\n";
inline const std::string kAuthOk = "235 2.7.0 Authentication successful\r\n";
inline const std::string kAuthBad = "535 5.7.8 Error: authentication failed: bad password\r\n";

// The gateway's own replies (README "Protocol replies", SPEC §3).
inline const std::string kOk = "250 2.0.0 Ok\r\n";
inline const std::string kSyncError = "554 5.5.0 Error: SMTP protocol synchronization\r\n";
inline const std::string kBackendUnavailable = "421 4.4.1 backend unavailable, try later\r\n";
inline const std::string kBackendProtocolError = "451 4.3.0 Error: backend protocol error\r\n";
inline const std::string kAuthTempfail = "454 4.7.0 Temporary authentication failure\r\n";
inline const std::string kNeedHelo = "503 5.5.1 Error: send HELO/EHLO first\r\n";
inline const std::string kNeedMail = "503 5.5.1 Error: need MAIL command\r\n";

inline std::string plain_response(std::string_view login, std::string_view password) {
  std::string msg;
  msg.push_back('\0');
  msg.append(login);
  msg.push_back('\0');
  msg.append(password);
  return base64_encode(msg);
}

// AUTH PLAIN with an initial response, judged by the backend with `backend_reply`.
inline std::string auth_plain(Harness& h, std::string_view login, std::string_view password,
                              const std::string& backend_reply) {
  CHECK(h.send("AUTH PLAIN " + plain_response(login, password) + "\r\n") == "");
  return h.backend(BackendCommand::Auth, backend_reply);
}

// EHLO, MAIL and RCPTs, each accepted by the backend.
inline void start_transaction(Harness& h, std::string_view from = "sender@example.org",
                              std::initializer_list<std::string_view> rcpts = {"u1@example.com"}) {
  CHECK(h.send("MAIL FROM:<" + std::string(from) + ">\r\n") == "");
  CHECK(h.backend(BackendCommand::Mail, kMailOk) == kMailOk);
  for (auto r : rcpts) {
    CHECK(h.send("RCPT TO:<" + std::string(r) + ">\r\n") == "");
    CHECK(h.backend(BackendCommand::Rcpt, kRcptOk) == kRcptOk);
  }
}

// ... and DATA, answered 354: the body is flowing.
inline void start_body(Harness& h, std::string_view from = "sender@example.org",
                       std::initializer_list<std::string_view> rcpts = {"u1@example.com"}) {
  start_transaction(h, from, rcpts);
  CHECK(h.send("DATA\r\n") == "");
  CHECK(h.backend(BackendCommand::Data, kGoAhead) == kGoAhead);
  REQUIRE(h.d->in_body());
}

}  // namespace smtpgate::smtp::testing
