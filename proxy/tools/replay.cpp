#include "proxy/tools/replay.h"

#include <algorithm>

#include "proxy/smtp/dialogue.h"
#include "proxy/smtp/scripted_session.h"

namespace smtpgate {
namespace {

std::string field(const nlohmann::json& doc, const char* key) {
  auto it = doc.find(key);
  return it != doc.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// The new decision to show for a changed transaction: the refusal that stopped it, or, for
// one now accepted, the last decision at the stage where the old policy had ended it.
Decision deciding(const std::vector<Decision>& ds, bool accepted, std::string_view old_stage) {
  if (ds.empty()) return Decision{};
  if (!accepted) {
    for (const auto& d : ds)
      if (d.blocks()) return d;
    for (auto it = ds.rbegin(); it != ds.rend(); ++it)
      if (!it->allowed()) return *it;
  } else {
    for (auto it = ds.rbegin(); it != ds.rend(); ++it)
      if (to_string(it->stage) == old_stage) return *it;
  }
  return ds.back();
}

}  // namespace

Replayer::Replayer(const Policy& policy, ReplayOptions options)
    : policy_(policy), options_(options) {}

void Replayer::decision(const nlohmann::json& doc) {
  // Only an enforced refusal of a recipient kept it from the backend; in dry-run the backend
  // was asked, and its answer is in the transaction's `accepted`.
  auto enforced = doc.find("enforced");
  if (enforced == doc.end() || !enforced->is_boolean() || !enforced->get<bool>()) return;
  if (field(doc, "stage") != "rcpt" || field(doc, "verdict") == "allow") return;
  const std::string session = field(doc, "session"), rcpt = field(doc, "rcpt");
  if (session.empty() || rcpt.empty()) return;
  auto it = refused_.find(session);
  if (it == refused_.end()) {
    if (refused_.size() >= options_.max_open_sessions) refused_.erase(refused_.begin());
    it = refused_.emplace(session, std::set<std::string>{}).first;
  }
  if (it->second.size() < smtp::Dialogue::kMaxRecordedRecipients) it->second.insert(rcpt);
}

void Replayer::session_close(const nlohmann::json& doc) {
  refused_.erase(field(doc, "session"));
}

void Replayer::transaction(const TransactionEvent& t) {
  ReplayReport& r = report_;
  ++r.transactions;
  std::set<std::string> refused;
  if (auto it = refused_.find(t.session); it != refused_.end()) {
    refused = std::move(it->second);
    refused_.erase(it);  // the session's next transaction starts afresh
  }
  const Listener* listener = policy_.find_listener(t.listener);
  if (!listener) {
    ++r.missing_listeners[t.listener];
    return;
  }
  auto client = parse_client_address(t.client);
  std::optional<MailPath> sender;
  if (t.from.empty() || t.from == "<>") {
    sender = MailPath{};
    sender->null = true;
  } else if (auto s = parse_mail_path(t.from)) {
    sender = std::move(*s);
  }
  if (!client || !sender) {
    ++r.unreplayable;
    return;
  }
  ++r.replayed;

  smtp::ScriptedSession s;
  s.client = *client;
  s.listener = listener;
  s.starttls = t.tls;
  s.helo = t.helo.empty() ? "unknown" : t.helo;
  if (t.auth == "ok" || t.auth == "failed") {
    s.auth_user = t.login.empty() ? "unknown" : t.login;
    s.auth_ok = t.auth == "ok";
  }
  s.continue_after_auth_refusal = true;  // the recorded client went on to MAIL
  s.sender = std::move(sender);
  s.rcpts = t.recipients;
  // A recipient the backend accepted is accepted again; one the old policy refused never
  // reached it, so the scripted backend accepts it; one it refused is refused again.
  s.backend_accepts_rcpt = [&](size_t i) {
    return contains(t.accepted, t.recipients[i]) || refused.contains(t.recipients[i]);
  };
  s.session_id = "replay";
  const smtp::ScriptedResult run = smtp::run_scripted_session(policy_, s);

  for (const auto& d : run.decisions)
    ++r.decisions[{d.stage, d.verdict, std::string(d.rule), d.enforced}];
  const bool before = !t.accepted.empty() && t.outcome != "rejected";
  // A MAIL the old policy refused named no recipients: it counts as accepted now when the
  // new policy lets MAIL through (its recipients are unknown).
  const bool refused_at_mail =
      t.recipients.empty() && t.outcome == "rejected" && t.stage == "mail" && !t.rule.empty();
  const bool now =
      !run.stopped && (run.rcpt_accepted > 0 || (refused_at_mail && run.mail_forwarded));
  r.accepted_before += before;
  r.accepted_now += now;
  if (before == now) return;
  ++(now ? r.to_accepted : r.to_rejected);
  if (r.differences.size() >= options_.max_differences) {
    ++r.differences_omitted;
    return;
  }
  r.differences.push_back({now, t, deciding(run.decisions, now, t.stage)});
}

Result<ReplayReport> replay_files(const Policy& policy, const std::vector<std::string>& paths,
                                  const ReplayOptions& options) {
  Replayer replayer(policy, options);
  LogScan scan(paths, {"transaction", "decision", "session_close"});
  auto ok = scan.run([&](std::string_view event, const nlohmann::json& doc) {
    if (event == "decision") return replayer.decision(doc);
    if (event == "session_close") return replayer.session_close(doc);
    if (auto t = parse_transaction(doc)) {
      replayer.transaction(*t);
    } else {
      ++scan.counts.malformed;
    }
  });
  if (!ok) return Result<ReplayReport>::fail(ok.error());
  ReplayReport r = std::move(replayer.report());
  r.counts = scan.counts;
  r.warnings = std::move(scan.warnings);
  return Result<ReplayReport>::ok(std::move(r));
}

}  // namespace smtpgate
