#include "policy/explain.h"

#include <nlohmann/json.hpp>

#include "policy/engine.h"
#include "policy/mail_address.h"

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

  ExplainResult out;
  SessionFacts s;
  s.client = in.client;
  s.listener = listener;
  s.cls = engine::initial_class(*listener);
  s.tls = in.tls || listener->tls == TlsMode::Implicit;

  auto stop = [&out](const Decision& d) {
    out.decisions.push_back(d);
    return d.blocks();
  };

  if (stop(engine::connect(policy, s))) return Result<ExplainResult>::ok(std::move(out));

  Decision helo;
  helo.stage = Stage::Helo;
  helo.reason = "HELO " + in.helo + " (no HELO rules)";
  out.decisions.push_back(helo);

  if (s.tls && listener->tls == TlsMode::StartTls) {
    Decision tls;
    tls.stage = Stage::StartTls;
    tls.reason = "STARTTLS on listener " + listener->name;
    out.decisions.push_back(tls);
  }

  if (in.auth_user) {
    s.login = *in.auth_user;
    Decision attempt = engine::auth_attempt(policy, s);
    bool blocked = stop(attempt);
    bool failed = !attempt.allowed();
    if (!blocked) {
      Decision result = engine::auth_result(policy, s, in.auth_ok);
      blocked = stop(result);
      failed = failed || !in.auth_ok;
      s.authenticated = in.auth_ok;
    }
    if (failed && attempt.verdict != Verdict::Ban &&
        (engine::auth_refusal_counts_as_failure(attempt) || !in.auth_ok))
      out.decisions.push_back(engine::brute_force(policy, s, 1));
    if (blocked) return Result<ExplainResult>::ok(std::move(out));
  }

  if (!in.mail_from) {
    out.accepted = true;
    return Result<ExplainResult>::ok(std::move(out));
  }
  auto sender = parse_arg_path(*in.mail_from);
  if (!sender) return Result<ExplainResult>::fail("--mail-from: " + sender.error());
  s.cls = engine::class_at_mail(s);
  Counters counters;
  if (stop(engine::mail(policy, s, *sender, 0, counters)))
    return Result<ExplainResult>::ok(std::move(out));

  bool any_rcpt = in.rcpts.empty();
  for (const auto& r : in.rcpts) {
    auto rcpt = parse_arg_path(r);
    if (!rcpt) return Result<ExplainResult>::fail("--rcpt " + r + ": " + rcpt.error());
    Decision d = engine::rcpt(policy, s, *sender, *rcpt, counters);
    if (!d.blocks()) {
      any_rcpt = true;
      ++counters.recipients_in_message;
    }
    out.decisions.push_back(std::move(d));
  }
  out.accepted = any_rcpt;
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
