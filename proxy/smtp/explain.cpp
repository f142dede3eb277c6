#include "proxy/smtp/explain.h"

#include <nlohmann/json.hpp>

#include "policy/mail_address.h"
#include "proxy/smtp/dialogue.h"
#include "proxy/smtp/sasl.h"

namespace smtpgate {
namespace {

Result<MailPath> parse_arg_path(std::string_view text) {
  if (text.size() >= 2 && text.front() == '<' && text.back() == '>')
    text = text.substr(1, text.size() - 2);
  return parse_mail_path(text);
}

// The session's world, scripted: a backend that accepts every command (and the credentials
// as --auth-ok/--auth-fail says), a fresh gateway (no failures counted yet), no network.
class Script final : public smtp::DialogueIo, public smtp::DialogueServices {
 public:
  std::vector<Decision> decisions;
  std::vector<smtp::BackendCommand> owed;  // commands the backend has not answered yet
  uint32_t recipients_forwarded = 0;
  bool closed = false, tls_started = false;

  bool blocked() const {
    if (closed) return true;
    for (const auto& d : decisions)
      if (d.blocks()) return true;
    return false;
  }

  // DialogueIo
  void write(std::string_view) override {}
  size_t peek_client(char*, size_t) override { return 0; }
  bool backend_open() override { return true; }
  bool backend_idle() const override { return false; }
  void backend_send(smtp::BackendCommand cmd, std::string_view, bool) override {
    if (cmd == smtp::BackendCommand::Rcpt) ++recipients_forwarded;
    if (cmd != smtp::BackendCommand::Rset) owed.push_back(cmd);
  }
  bool backend_auth(std::string_view, std::string_view) override {
    owed.push_back(smtp::BackendCommand::Auth);
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
  void ban(const IpAddress&, const std::string&) override {}
  void would_ban(const IpAddress&, const std::string&) override {}
  void decision(const Decision& d, const smtp::DecisionFacts&) override { decisions.push_back(d); }
  void connection_refused(const Decision&) override {}
  void auth(std::string_view, smtp::AuthOutcome, std::string_view) override {}
  void transaction(const smtp::TransactionRecord&) override {}
  void class_changed() override {}

 private:
  uint32_t failures_ = 0;
};

std::string base64_plain(std::string_view login) {
  std::string blob;
  blob += '\0';
  blob += login;
  blob += '\0';
  blob += "explain";  // any password: the scripted backend judges by --auth-ok/--auth-fail
  return smtp::base64_encode(blob);
}

}  // namespace

Result<ExplainResult> explain(const Policy& policy, const ExplainInput& in) {
  const Listener* listener = policy.find_listener(in.listener);
  if (!listener) {
    std::string names;
    for (const auto& l : policy.listeners) names += (names.empty() ? "" : ", ") + l.name;
    return Result<ExplainResult>::fail("no listener named \"" + in.listener +
                                       "\" (the policy has: " + names + ")");
  }
  if (in.tls && listener->tls == TlsMode::None)
    return Result<ExplainResult>::fail("--tls: listener " + listener->name + " has no TLS");
  if (!in.mail_from && !in.rcpts.empty())
    return Result<ExplainResult>::fail(
        "--rcpt needs --mail-from (a session names its sender first; \"<>\" for a bounce)");
  std::optional<MailPath> sender;
  if (in.mail_from) {
    auto s = parse_arg_path(*in.mail_from);
    if (!s) return Result<ExplainResult>::fail("--mail-from: " + s.error());
    sender = std::move(*s);
  }
  std::vector<std::string> rcpts;
  for (const auto& r : in.rcpts) {
    auto rcpt = parse_arg_path(r);
    if (!rcpt) return Result<ExplainResult>::fail("--rcpt " + r + ": " + rcpt.error());
    rcpts.push_back(rcpt->address());
  }

  // The live session's own dialogue, fed the commands such a client sends; every decision it
  // takes is reported, allows too.
  Script script;
  smtp::Dialogue::Setup setup;
  setup.policy = &policy;
  setup.listener = listener;
  setup.tls_available = listener->tls != TlsMode::None;
  setup.client = in.client;
  setup.report_allows = true;
  setup.session_id = "explain";
  smtp::Dialogue dialogue(setup, script, script);
  auto answer_backend = [&](bool auth_ok) {
    while (!script.owed.empty()) {
      const smtp::BackendCommand cmd = script.owed.front();
      script.owed.erase(script.owed.begin());
      const bool ok = cmd != smtp::BackendCommand::Auth || auth_ok;
      const std::string_view raw = !ok ? "535 5.7.8 Authentication credentials invalid\r\n"
                                   : cmd == smtp::BackendCommand::Auth ? "235 2.7.0 Ok\r\n"
                                   : cmd == smtp::BackendCommand::Data ? "354 go ahead\r\n"
                                                                       : "250 2.0.0 Ok\r\n";
      smtp::BackendReply reply;
      reply.code = (raw[0] - '0') * 100 + (raw[1] - '0') * 10 + (raw[2] - '0');
      reply.raw = raw;
      dialogue.on_backend_reply(cmd, reply);
    }
  };
  auto say = [&](const std::string& line) {
    dialogue.on_line(line, false);
    answer_backend(in.auth_ok);
    return !script.blocked();
  };

  ExplainResult out;
  auto done = [&](bool accepted) {
    out.decisions = std::move(script.decisions);
    out.accepted = accepted;
    return Result<ExplainResult>::ok(std::move(out));
  };
  dialogue.open(nullptr);
  if (script.blocked()) return done(false);
  if (script.tls_started) dialogue.on_tls_ready("TLS", "explain");  // an implicit-TLS listener
  if (!say("EHLO " + in.helo)) return done(false);
  Decision helo;
  helo.stage = Stage::Helo;
  helo.reason = "HELO " + in.helo + " (no HELO rules)";
  script.decisions.push_back(helo);
  if (in.tls && listener->tls == TlsMode::StartTls) {
    if (!say("STARTTLS")) return done(false);
    dialogue.on_tls_ready("TLS", "explain");
    Decision tls;
    tls.stage = Stage::StartTls;
    tls.reason = "STARTTLS on listener " + listener->name;
    script.decisions.push_back(tls);
    if (!say("EHLO " + in.helo)) return done(false);
  }
  if (in.auth_user && !say("AUTH PLAIN " + base64_plain(*in.auth_user))) return done(false);
  if (!sender) return done(true);
  if (!say("MAIL FROM:<" + sender->address() + ">")) return done(false);
  for (const auto& r : rcpts) say("RCPT TO:<" + r + ">");
  return done(rcpts.empty() || script.recipients_forwarded > 0);
}

std::string explain_text(const ExplainResult& r) {
  std::string out;
  for (const auto& d : r.decisions) {
    char head[96];
    std::snprintf(head, sizeof head, "%-9.*s %-8.*s %-26.*s ",
                  static_cast<int>(to_string(d.stage).size()), to_string(d.stage).data(),
                  static_cast<int>(to_string(d.verdict).size()), to_string(d.verdict).data(),
                  static_cast<int>(d.rule.size()), d.rule.data());
    out.append(head);
    out.append(d.reason);
    if (!d.allowed()) {
      out.push_back('\n');
      out.append(46, ' ');
      out.append("reply: ");
      out.append(d.reply.line());
      if (!d.enforced) out.append("  (dry-run: not enforced)");
    }
    out.push_back('\n');
  }
  out.append("outcome: ");
  out.append(r.accepted ? "accepted" : "rejected");
  out.push_back('\n');
  return out;
}

std::string explain_json(const ExplainResult& r) {
  nlohmann::json doc;
  doc["decisions"] = nlohmann::json::array();
  for (const auto& d : r.decisions) {
    doc["decisions"].push_back(
        {{"stage", to_string(d.stage)},
         {"rule", d.rule},
         {"verdict", to_string(d.verdict)},
         {"enforced", d.enforced},
         {"reason", d.reason},
         {"reply", d.allowed() ? nlohmann::json(nullptr) : nlohmann::json(d.reply.line())}});
  }
  doc["outcome"] = r.accepted ? "accepted" : "rejected";
  // Arguments are any bytes: invalid UTF-8 is replaced, never thrown.
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace smtpgate
