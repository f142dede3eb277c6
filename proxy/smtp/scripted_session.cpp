#include "proxy/smtp/scripted_session.h"

#include <ctime>

#include <deque>

#include "proxy/smtp/command.h"
#include "proxy/smtp/dialogue.h"
#include "proxy/smtp/sasl.h"

namespace smtpgate::smtp {
namespace {

// The session's world, scripted: a backend that answers every command at once (the
// credentials and recipients as the caller says), a fresh gateway, no network.
class Script final : public DialogueIo, public DialogueServices {
 public:
  struct Owed {
    BackendCommand cmd;
    size_t rcpt;  // for Rcpt: the index of the recipient being sent
  };
  std::vector<Decision> decisions;
  std::deque<Owed> owed;  // commands the backend has not answered yet
  size_t current_rcpt = 0;
  uint32_t recipients_forwarded = 0;
  bool closed = false, tls_started = false, mail_sent = false;

  // A refusal the session must act on since decisions[from], or the session is closing.
  bool blocked_since(size_t from) const {
    if (closed) return true;
    for (size_t i = from; i < decisions.size(); ++i)
      if (decisions[i].blocks()) return true;
    return false;
  }

  // DialogueIo
  void write(std::string_view) override {}
  size_t peek_client(char*, size_t) override { return 0; }
  bool backend_open() override { return true; }
  bool backend_idle() const override { return false; }
  void backend_send(BackendCommand cmd, std::string_view, bool) override {
    if (cmd == BackendCommand::Rcpt) ++recipients_forwarded;
    if (cmd == BackendCommand::Mail) mail_sent = true;
    if (cmd != BackendCommand::Rset) owed.push_back({cmd, current_rcpt});
  }
  bool backend_auth(std::string_view, std::string_view) override {
    owed.push_back({BackendCommand::Auth, 0});
    return true;
  }
  void backend_abort() override {}
  void backend_quit() override {}
  void start_body(std::string_view) override {}
  void discard_body() override {}
  uint64_t body_bytes() const override { return 0; }
  void start_tls() override { tls_started = true; }
  void set_deadline(std::chrono::milliseconds) override {}
  void clear_deadline() override {}
  void close_after_output(std::string_view) override { closed = true; }

  // DialogueServices
  uint64_t now_ms() override { return 0; }
  uint32_t messages_last_hour(std::string_view) override { return 0; }
  uint32_t recipients_last_hour(std::string_view) override { return 0; }
  uint32_t record_auth_failure(const IpAddress&) override { return ++failures_; }
  uint64_t password_key(const IpAddress&, std::string_view, std::string_view) override {
    return 0;  // every failure counts here
  }
  bool repeated_failure(uint64_t) override { return false; }
  std::string login_locked(std::string_view login, const IpAddress& ip) override {
    const auto& bf = policy->brute_force;
    if (!state->logins || !bf.per_login || bf.never_ban.lookup(ip)) return {};
    const IpAddress key = ip.is_v6() ? ip.masked(bf.ipv6_prefix) : ip;
    if (!state->logins->locked_for(login, key, state->now, *bf.per_login)) return {};
    const std::time_t until = state->logins->locked_until(login, state->now) / 1000;
    std::tm tm{};
    gmtime_r(&until, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
  }
  void record_login_failure(std::string_view) override {}
  void record_login_success(std::string_view, const IpAddress&) override {}
  // A fresh gateway counts nothing toward the breaker; a suspension it remembers applies.
  std::optional<BreakerTrip> breaker_login(std::string_view, const IpAddress&) override {
    return std::nullopt;
  }
  std::optional<BreakerTrip> breaker_recipient(std::string_view, std::string_view) override {
    return std::nullopt;
  }
  std::optional<BreakerTrip> breaker_refused(std::string_view) override { return std::nullopt; }
  std::optional<Suspension> login_suspended(std::string_view login) override {
    const Suspension* s = state->breaker ? state->breaker->suspended(login) : nullptr;
    return s ? std::optional<Suspension>(*s) : std::nullopt;
  }
  void suspend(std::string_view, const BreakerTrip&) override {}
  void would_suspend(std::string_view, const BreakerTrip&) override {}
  const Policy* policy = nullptr;
  const ScriptedSession* state = nullptr;
  void ban(const IpAddress&, const std::string&) override {}
  void would_ban(const IpAddress&, const std::string&) override {}
  void decision(const Decision& d, const DecisionFacts&) override { decisions.push_back(d); }
  void connection_refused(const Decision&) override {}
  void auth(std::string_view, AuthOutcome, std::string_view) override {}
  void transaction(const TransactionRecord&) override {}
  void class_changed() override {}

 private:
  uint32_t failures_ = 0;
};

std::string base64_plain(std::string_view login) {
  std::string blob;
  blob += '\0';
  blob += login;
  blob += '\0';
  blob += "explain";  // any password: the scripted backend judges by ScriptedSession::auth_ok
  return base64_encode(blob);
}

}  // namespace

ScriptedResult run_scripted_session(const Policy& policy, const ScriptedSession& s) {
  const Listener& listener = *s.listener;
  Script script;
  script.policy = &policy;
  script.state = &s;
  Dialogue::Setup setup;
  setup.policy = &policy;
  setup.listener = &listener;
  setup.tls_available = listener.tls != TlsMode::None;
  setup.client = s.client;
  setup.report_allows = true;
  setup.session_id = s.session_id;
  Dialogue dialogue(setup, script, script);
  ScriptedResult out;

  auto answer_backend = [&] {
    while (!script.owed.empty()) {
      const Script::Owed o = script.owed.front();
      script.owed.pop_front();
      bool ok = true;
      if (o.cmd == BackendCommand::Auth) ok = s.auth_ok;
      if (o.cmd == BackendCommand::Rcpt) {
        ok = !s.backend_accepts_rcpt || s.backend_accepts_rcpt(o.rcpt);
        if (ok) ++out.rcpt_accepted;
      }
      const std::string_view raw =
          !ok ? (o.cmd == BackendCommand::Rcpt ? "550 5.1.1 Recipient rejected\r\n"
                                               : "535 5.7.8 Authentication credentials invalid\r\n")
          : o.cmd == BackendCommand::Auth ? "235 2.7.0 Ok\r\n"
          : o.cmd == BackendCommand::Data ? "354 go ahead\r\n"
                                          : "250 2.0.0 Ok\r\n";
      BackendReply reply;
      reply.code = (raw[0] - '0') * 100 + (raw[1] - '0') * 10 + (raw[2] - '0');
      reply.raw = raw;
      dialogue.on_backend_reply(o.cmd, reply);
    }
  };
  // False: the line was refused (or the session is closing).
  auto say = [&](const std::string& line) {
    const size_t before = script.decisions.size();
    dialogue.on_line(line, false);
    answer_backend();
    return !script.blocked_since(before);
  };
  auto done = [&](bool stopped) {
    out.decisions = std::move(script.decisions);
    out.stopped = stopped;
    out.mail_forwarded = script.mail_sent;
    out.rcpt_forwarded = script.recipients_forwarded;
    return std::move(out);
  };

  dialogue.open(nullptr);
  if (script.blocked_since(0)) return done(true);
  if (script.tls_started) dialogue.on_tls_ready("TLS", "explain");  // an implicit-TLS listener
  if (!say("EHLO " + s.helo)) return done(true);
  Decision helo;
  helo.stage = Stage::Helo;
  helo.reason = "HELO " + s.helo + " (no HELO rules)";
  script.decisions.push_back(helo);
  if (s.starttls && listener.tls == TlsMode::StartTls) {
    if (!say("STARTTLS")) return done(true);
    dialogue.on_tls_ready("TLS", "explain");
    Decision tls;
    tls.stage = Stage::StartTls;
    tls.reason = "STARTTLS on listener " + listener.name;
    script.decisions.push_back(tls);
    if (!say("EHLO " + s.helo)) return done(true);
  }
  if (s.auth_user && !say("AUTH PLAIN " + base64_plain(*s.auth_user)) &&
      (!s.continue_after_auth_refusal || script.closed))
    return done(true);
  if (!s.sender) return done(false);
  const std::string from = s.sender->address();
  bool utf8 = has_non_ascii(from);
  for (const auto& r : s.rcpts) utf8 = utf8 || has_non_ascii(r);
  if (!say("MAIL FROM:<" + from + ">" + (utf8 ? " SMTPUTF8" : ""))) return done(true);
  for (size_t i = 0; i < s.rcpts.size(); ++i) {
    script.current_rcpt = i;
    say("RCPT TO:<" + s.rcpts[i] + ">");
  }
  return done(false);
}

}  // namespace smtpgate::smtp
