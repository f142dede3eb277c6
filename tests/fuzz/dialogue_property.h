// The properties the SMTP dialogue must keep whatever a client sends and whatever a backend
// answers (within what the backend client lets through: replies that fit their command),
// shared by the libFuzzer target and the seeded replay in the unit tests. The bytes drive a
// session: which listener, then events (client lines from a pool of commands and addresses,
// raw lines, backend replies, body ends, backend failures, TLS, timeouts, drain).
//
// Properties, each checked against what the dialogue asked of the backend:
// * no open relay: an unauthenticated session forwards no RCPT to a foreign address;
// * AUTH never reaches the backend from an mx listener;
// * DATA only after a RCPT of the current MAIL was accepted by the backend; the body only
//   after a 354; the final dot only after the body ended at CRLF.CRLF;
// * nothing is sent to the backend after the session closed;
// * the password appears in no report (decision, auth line, message line).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "policy/loader.h"
#include "policy/login_breaker.h"
#include "proxy/smtp/dialogue.h"
#include "proxy/smtp/sasl.h"

namespace smtpgate::fuzz {

inline constexpr std::string_view kPassword = "s3cret-Pw";

inline std::shared_ptr<Policy> dialogue_policy() {
  static std::shared_ptr<Policy> policy = [] {
    LoadOptions o;
    o.check_files = false;
    auto r = load_policy_text(R"({
      "version": 1, "hostname": "mx.example.com",
      "local_domains": ["example.com", "*.example.net"],
      "listeners": [
        { "name": "mx", "listen": "127.0.0.1:25", "class": "mx" },
        { "name": "sub", "listen": "127.0.0.1:587", "class": "submission" },
        { "name": "auto", "listen": "127.0.0.1:2525", "class": "auto" }
      ],
      "backend": { "address": "127.0.0.1:10025" },
      "submission": { "require_tls": false, "access": { "default": "allow" },
                      "breaker": { "max_rcpt_domains_per_hour": 3,
                                   "max_rejected_rcpts_per_hour": 2 } },
      "brute_force": { "max_failures": 3 },
      "mx": { "max_recipients": 5 }
    })",
                              "fuzz.json", o);
    return r.policy;
  }();
  return policy;
}

class DialogueHarness final : public smtp::DialogueIo, public smtp::DialogueServices {
 public:
  std::string broken;  // the first property broken, or ""

  explicit DialogueHarness(const Listener& listener) : listener_(listener) {}

  void fail(std::string why) {
    if (broken.empty()) broken = std::move(why);
  }

  struct Owed {
    smtp::BackendCommand cmd;
    size_t mail;  // the MAIL (its index in mails_) this command belongs to
  };
  std::deque<Owed> owed;
  bool closed = false, tls_requested = false, body_started = false, body_ended = false;
  const smtp::Dialogue* dialogue = nullptr;

  // The backend's reply to the oldest owed command was 2xx/354/...: what the oracle learns.
  void delivered(const Owed& o, int code) {
    if (o.cmd == smtp::BackendCommand::Rcpt && code >= 200 && code < 300 && o.mail == mails_)
      rcpt_accepted_ = true;
    if (o.cmd == smtp::BackendCommand::Data && code == 354) data_ok_ = true;
  }

  // DialogueIo
  void write(std::string_view bytes) override {
    if (trace) *trace += "  to client: " + std::string(bytes);
  }
  size_t peek_client(char*, size_t) override { return 0; }
  bool backend_open() override {
    if (!backend_up_ && !backend_refuses_) backend_up_ = true;
    return backend_up_;
  }
  bool backend_idle() const override { return !backend_up_; }
  void backend_send(smtp::BackendCommand cmd, std::string_view line, bool) override {
    if (trace) *trace += "  to backend: " + std::string(line) + "\n";
    if (closed && cmd != smtp::BackendCommand::Rset) fail("command sent after the close");
    const bool authenticated = dialogue && dialogue->facts().authenticated;
    if (authenticated && cmd != smtp::BackendCommand::Rset &&
        breaker.suspended(dialogue->facts().login))
      fail("a suspended login reached the backend: " + std::string(line));
    switch (cmd) {
      case smtp::BackendCommand::Mail:
        ++mails_;
        rcpt_accepted_ = false;
        break;
      case smtp::BackendCommand::Rcpt:
        if (!authenticated && is_foreign(line)) fail("relay: " + std::string(line));
        break;
      case smtp::BackendCommand::Data:
        if (!rcpt_accepted_) fail("DATA without an accepted recipient");
        break;
      case smtp::BackendCommand::DataEnd:
        if (!body_ended) fail("final dot without the end of the body");
        body_ended = false;
        break;
      default:
        break;
    }
    if (cmd != smtp::BackendCommand::Rset) owed.push_back({cmd, mails_});
  }
  bool backend_auth(std::string_view, std::string_view password) override {
    if (listener_.cls == ListenerClass::Mx) fail("AUTH forwarded from an mx listener");
    if (password != kPassword) fail("password changed on the way");
    owed.push_back({smtp::BackendCommand::Auth, mails_});
    return true;
  }
  void backend_abort() override { drop_backend(); }
  void backend_quit() override { drop_backend(); }
  void start_body(std::string_view) override {
    if (!data_ok_) fail("body started without a 354");
    data_ok_ = false;
    body_started = true;
  }
  void discard_body() override {}
  uint64_t body_bytes() const override { return 0; }
  void start_tls() override { tls_requested = true; }
  void set_deadline(std::chrono::milliseconds) override {}
  void clear_deadline() override {}
  void close_after_output(std::string_view state) override {
    closed = true;
    if (trace) *trace += "  close: " + std::string(state) + "\n";
  }
  std::string* trace = nullptr;

  // DialogueServices
  uint64_t now_ms() override { return 0; }
  uint32_t messages_last_hour(std::string_view) override { return 0; }
  uint32_t recipients_last_hour(std::string_view) override { return 0; }
  uint32_t record_auth_failure(const IpAddress&) override { return ++failures_; }
  uint64_t password_key(const IpAddress&, std::string_view, std::string_view) override {
    return 0;  // every failure counts here
  }
  bool repeated_failure(uint64_t) override { return false; }
  std::string login_locked(std::string_view, const IpAddress&) override { return {}; }
  void record_login_failure(std::string_view) override {}
  void record_login_success(std::string_view, const IpAddress&) override {}
  // submission.breaker: the real bookkeeping (the policy may set thresholds); once a login is
  // suspended nothing of it may reach the backend (checked in backend_send).
  std::optional<BreakerTrip> breaker_login(std::string_view login, const IpAddress& ip) override {
    const auto& b = dialogue_policy()->submission.breaker;
    return b ? breaker.login(login, ip, 0, *b) : std::nullopt;
  }
  std::optional<BreakerTrip> breaker_recipient(std::string_view login,
                                               std::string_view domain) override {
    const auto& b = dialogue_policy()->submission.breaker;
    return b ? breaker.recipient(login, domain, 0, *b) : std::nullopt;
  }
  std::optional<BreakerTrip> breaker_refused(std::string_view login) override {
    const auto& b = dialogue_policy()->submission.breaker;
    return b ? breaker.refused_recipient(login, 0, *b) : std::nullopt;
  }
  std::optional<Suspension> login_suspended(std::string_view login) override {
    const Suspension* s = breaker.suspended(login);
    return s ? std::optional<Suspension>(*s) : std::nullopt;
  }
  void suspend(std::string_view login, const BreakerTrip& trip) override {
    breaker.suspend(login, trip, 0);
  }
  void would_suspend(std::string_view, const BreakerTrip&) override {}
  LoginBreaker breaker;
  void ban(const IpAddress&, const std::string& reason) override { check_text(reason); }
  void would_ban(const IpAddress&, const std::string& reason) override { check_text(reason); }
  void decision(const Decision& d, const smtp::DecisionFacts& f) override {
    check_text(d.reason);
    check_text(d.reply.text);
    for (std::string_view v : {f.helo, f.login, f.from, f.rcpt}) check_text(v);
  }
  void connection_refused(const Decision&) override {}
  void auth(std::string_view login, smtp::AuthOutcome, std::string_view reply) override {
    check_text(login);
    check_text(reply);
  }
  void transaction(const smtp::TransactionRecord& t) override {
    check_text(t.from);
    check_text(t.reply);
    for (const auto& r : t.recipients) check_text(r);
    if (t.recipients.size() > smtp::Dialogue::kMaxRecordedRecipients)
      fail("more recipients recorded than the cap");
    if (t.accepted.size() > t.accepted_count) fail("more recipients accepted than counted");
  }
  void class_changed() override {}

  // The backend connection drops (a failure, or the dialogue's abort/quit).
  void drop_backend() {
    backend_up_ = false;
    owed.clear();
  }
  void refuse_backend(bool refuse) { backend_refuses_ = refuse; }

 private:
  static bool is_foreign(std::string_view line) {
    // Every foreign address of the pool names one of these; no local one does.
    for (std::string_view f : {"elsewhere.test", "evil.test", "[192.0.2.1]"})
      if (line.find(f) != std::string_view::npos) return true;
    return false;
  }
  void check_text(std::string_view text) {
    if (text.find(kPassword) != std::string_view::npos) fail("password in a report");
  }

  const Listener& listener_;
  bool backend_up_ = false, backend_refuses_ = false;
  size_t mails_ = 0;
  bool rcpt_accepted_ = false, data_ok_ = false;
  uint32_t failures_ = 0;
};

// Runs one session from the bytes; "" when every property held. `trace`, if given, gets
// one line per event (to read a finding).
inline std::string check_dialogue_bytes(const uint8_t* data, size_t size,
                                        std::string* trace = nullptr) {
  static const char* const kAddresses[] = {"a@example.com",
                                           "c@EXAMPLE.COM",
                                           "d@sub.example.net",
                                           "postmaster",
                                           "",
                                           "b@elsewhere.test",
                                           "x@[192.0.2.1]",
                                           "\"q r\"@elsewhere.test",
                                           "@route.example.com:g@evil.test",
                                           "f%evil.test@example.com",
                                           "e@evil.test",
                                           "postmaster@evil.test",
                                           "h@example.com.evil.test"};
  static const int kCodes[] = {235, 250, 251, 354, 421, 450, 451, 452, 454, 503, 535, 550, 554};
  const std::string plain =
      smtp::base64_encode(std::string("\0user@example.com\0", 18) + std::string(kPassword));
  const std::string login = smtp::base64_encode("user@example.com");
  const std::string password = smtp::base64_encode(kPassword);

  size_t at = 0;
  auto next = [&]() -> uint8_t { return at < size ? data[at++] : 0; };
  const std::shared_ptr<Policy> policy = dialogue_policy();
  if (!policy) return "the fuzz policy does not load";
  const Listener& listener = policy->listeners[next() % policy->listeners.size()];
  DialogueHarness h(listener);
  smtp::Dialogue::Setup setup;
  setup.policy = policy.get();
  setup.listener = &listener;
  setup.tls_available = true;
  setup.client = *IpAddress::parse("192.0.2.77");
  setup.session_id = "fuzz";
  smtp::Dialogue d(setup, h, h);
  h.dialogue = &d;
  h.trace = trace;
  d.open(nullptr);

  int sasl_answers = 0;
  auto address = [&]() { return std::string(kAddresses[next() % std::size(kAddresses)]); };
  for (int steps = 0; at < size && steps < 400 && h.broken.empty(); ++steps) {
    const uint8_t op = next();
    const bool more = (op & 0x80) != 0;
    switch (op % 10) {
      case 0:
      case 1:
      case 2:
      case 3: {
        if (!d.reading_commands()) break;  // the shell reads no command then
        std::string line;
        // While an AUTH LOGIN exchange waits, the client answers it in order (username, then
        // password) or cancels: a secret is never sent as the wrong answer.
        const bool sasl = d.line_limit() == smtp::kMaxSaslLine;
        if (!sasl) sasl_answers = 0;
        const uint8_t pick = sasl ? (next() % 8 == 0 ? 14 : 11) : next() % 16;
        switch (pick) {
          case 0:
            line = "EHLO client.example";
            break;
          case 1:
            line = "HELO client.example";
            break;
          case 2:
          case 3:
            line = "MAIL FROM:<" + address() + ">";
            break;
          case 4:
          case 5:
          case 6:
            line = "RCPT TO:<" + address() + ">";
            break;
          case 7:
            line = "DATA";
            break;
          case 8:
            line = "RSET";
            break;
          case 9:
            line = "AUTH PLAIN " + plain;
            break;
          case 10:
            line = "AUTH LOGIN";
            break;
          case 11:
            // Answers in order (username, then password) while a LOGIN exchange waits for
            // them; elsewhere a stray base64 line that holds no secret.
            line = sasl && sasl_answers++ == 1 ? password : login;
            break;
          case 12:
            line = "STARTTLS";
            break;
          case 13:
            line = next() % 2 ? "NOOP" : "QUIT";
            break;
          case 14:
            line = "*";
            break;
          default: {
            const size_t n = next() % 24;
            for (size_t i = 0; i < n && at < size; ++i) line.push_back(static_cast<char>(next()));
          }
        }
        if (trace) *trace += "client: " + line + (more ? " (more)\n" : "\n");
        if (!d.on_client_input()) break;
        d.on_line(line, more);
        break;
      }
      case 4:
      case 5: {
        if (h.owed.empty()) break;
        const auto o = h.owed.front();
        const int code = kCodes[next() % std::size(kCodes)];
        if (!smtp::reply_fits(o.cmd, code)) break;  // the backend client drops the backend
        h.owed.pop_front();
        h.delivered(o, code);
        const std::string raw = std::to_string(code) + " 4.0.0 fuzz\r\n";
        if (trace) *trace += "backend: " + raw;
        smtp::BackendReply r;
        r.code = code;
        r.raw = raw;
        d.on_backend_reply(o.cmd, r);
        break;
      }
      case 6:
        if (!d.in_body()) break;
        if (next() % 4 == 0) {
          if (trace) *trace += "body ends at a bare LF\n";
          d.on_body_end(smtp::BodyFilter::Status::BareNewline, next());
        } else {
          if (trace) *trace += "body ends\n";
          h.body_ended = true;
          d.on_body_end(smtp::BodyFilter::Status::End, next() * 1000u);
          h.body_ended = false;
        }
        break;
      case 7:
        if (trace) *trace += "backend fails\n";
        h.drop_backend();
        d.on_backend_failed(next() % 2 == 0);
        break;
      case 8:
        h.refuse_backend(next() % 4 == 0);
        if (h.tls_requested) {
          h.tls_requested = false;
          d.on_tls_ready("TLSv1.3", "fuzz");
        }
        break;
      default:
        if (next() % 8 == 0) {
          if (trace) *trace += "timeout\n";
          d.on_timeout();
        } else if (next() % 8 == 0) {
          if (trace) *trace += "drain\n";
          d.drain();
        }
        break;
    }
  }
  return h.broken;
}

}  // namespace smtpgate::fuzz
