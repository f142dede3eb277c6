#include "proxy/smtp/explain.h"

#include <nlohmann/json.hpp>

#include "policy/mail_address.h"
#include "proxy/smtp/scripted_session.h"

namespace smtpgate {
namespace {

Result<MailPath> parse_arg_path(std::string_view text) {
  if (text.size() >= 2 && text.front() == '<' && text.back() == '>')
    text = text.substr(1, text.size() - 2);
  return parse_mail_path(text);
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
  smtp::ScriptedSession session;
  session.client = in.client;
  session.listener = listener;
  session.starttls = in.tls;
  session.helo = in.helo;
  session.auth_user = in.auth_user;
  session.auth_ok = in.auth_ok;
  session.sender = std::move(sender);
  session.rcpts = std::move(rcpts);
  session.logins = in.logins;
  session.breaker = in.breaker;
  session.now = in.now;
  smtp::ScriptedResult run = smtp::run_scripted_session(policy, session);
  ExplainResult out;
  out.decisions = std::move(run.decisions);
  out.accepted =
      !run.stopped && (!session.sender || session.rcpts.empty() || run.rcpt_forwarded > 0);
  return Result<ExplainResult>::ok(std::move(out));
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
