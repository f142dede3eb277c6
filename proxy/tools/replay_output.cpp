// replay's report: text for the operator, JSON for machines.
#include <cstdio>

#include "proxy/tools/replay.h"

namespace smtpgate {
namespace {

using ojson = nlohmann::ordered_json;

std::string plural(uint64_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

std::string joined(const std::vector<std::string>& v, size_t max = 10) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < max; ++i) out += (i ? ", " : "") + v[i];
  if (v.size() > max) out += " (+" + std::to_string(v.size() - max) + " more)";
  return out.empty() ? "-" : out;
}

std::string difference_text(const ReplayDifference& d) {
  const TransactionEvent& t = d.recorded;
  std::string out = d.now_accepted ? "rejected -> accepted" : "accepted -> rejected";
  out += ": " + (t.ts.empty() ? std::string("(no time)") : t.ts);
  if (!t.session.empty()) out += " session " + t.session;
  out += "\n  client " + t.client + ", listener " + t.listener;
  out += t.auth == "ok"       ? ", login " + t.login
         : t.auth == "failed" ? ", login " + (t.login.empty() ? "?" : t.login) + " (AUTH failed)"
                              : std::string(", no login");
  if (t.tls) out += ", TLS";
  out +=
      "\n  from " + (t.from.empty() ? std::string("<>") : t.from) + " to " + joined(t.recipients);
  if (t.recipients_omitted) out += " (+" + std::to_string(t.recipients_omitted) + " not logged)";
  out += "\n  recorded: " + t.outcome;
  if (!t.stage.empty()) out += " at " + t.stage;
  if (!t.rule.empty()) out += " by " + t.rule;
  out += ", accepted " + std::to_string(t.accepted.size()) + " of " +
         std::to_string(t.recipients.size() + t.recipients_omitted);
  if (!t.reply.empty()) out += "; " + t.reply;
  const Decision& n = d.decision;
  out += "\n  now: " + std::string(to_string(n.stage)) + " " + std::string(to_string(n.verdict)) +
         " " + std::string(n.rule);
  if (!n.enforced) out += " (dry-run)";
  if (!n.reason.empty()) out += ": " + n.reason;
  if (!n.allowed()) out += "\n       reply: " + n.reply.line();
  out += "\n";
  return out;
}

ojson decision_json(const Decision& d) {
  return {{"stage", to_string(d.stage)},
          {"rule", d.rule},
          {"verdict", to_string(d.verdict)},
          {"enforced", d.enforced},
          {"reason", d.reason},
          {"reply", d.allowed() ? ojson(nullptr) : ojson(d.reply.line())}};
}

}  // namespace

std::string replay_text(const ReplayReport& r) {
  std::string out = "smtpgate replay: " + plural(r.transactions, "transaction", "transactions") +
                    " in " + plural(r.counts.files, "file", "files") + ", " +
                    std::to_string(r.replayed) + " replayed under the new policy.\n";
  for (const auto& [name, n] : r.missing_listeners)
    out += "Not replayed: " + plural(n, "transaction", "transactions") + " on listener \"" + name +
           "\", which the new policy does not have.\n";
  if (r.unreplayable)
    out += "Not replayed: " + plural(r.unreplayable, "transaction", "transactions") +
           " with a client or sender that does not parse.\n";
  const std::string skipped = skipped_summary(r.counts);
  if (!skipped.empty()) out += "Skipped: " + skipped + ".\n";
  for (const auto& w : r.warnings) out += "Warning: " + w + "\n";

  out += "\nDecisions under the new policy:\n";
  char line[160];
  std::snprintf(line, sizeof line, "  %-9s %-8s %-34s %8s\n", "stage", "verdict", "rule", "count");
  out += line;
  for (const auto& [key, n] : r.decisions) {
    const auto& [stage, verdict, rule, enforced] = key;
    const std::string shown = rule + (enforced ? "" : " (dry-run)");
    std::snprintf(line, sizeof line, "  %-9s %-8s %-34s %8llu\n",
                  std::string(to_string(stage)).c_str(), std::string(to_string(verdict)).c_str(),
                  shown.c_str(), static_cast<unsigned long long>(n));
    out += line;
  }
  out += "\nOutcomes: " + std::to_string(r.accepted_before) + " accepted before, " +
         std::to_string(r.accepted_now) + " now; " + std::to_string(r.to_rejected) +
         " accepted -> rejected, " + std::to_string(r.to_accepted) + " rejected -> accepted.\n";
  for (const auto& d : r.differences) out += "\n" + difference_text(d);
  if (r.differences_omitted)
    out += "\n... and " + plural(r.differences_omitted, "more difference", "more differences") +
           " not shown.\n";
  return out;
}

std::string replay_json(const ReplayReport& r) {
  ojson doc;
  doc["counts"] = counts_json(r.counts);
  doc["counts"]["transactions"] = r.transactions;
  doc["counts"]["replayed"] = r.replayed;
  doc["warnings"] = r.warnings;
  doc["not_replayed"] = {{"missing_listeners", r.missing_listeners},
                         {"unreplayable", r.unreplayable}};
  doc["decisions"] = ojson::array();
  for (const auto& [key, n] : r.decisions) {
    const auto& [stage, verdict, rule, enforced] = key;
    doc["decisions"].push_back({{"stage", to_string(stage)},
                                {"verdict", to_string(verdict)},
                                {"rule", rule},
                                {"enforced", enforced},
                                {"count", n}});
  }
  doc["outcomes"] = {{"accepted_before", r.accepted_before},
                     {"accepted_now", r.accepted_now},
                     {"accepted_to_rejected", r.to_rejected},
                     {"rejected_to_accepted", r.to_accepted}};
  doc["differences"] = ojson::array();
  for (const auto& d : r.differences) {
    const TransactionEvent& t = d.recorded;
    doc["differences"].push_back(
        {{"change", d.now_accepted ? "rejected_to_accepted" : "accepted_to_rejected"},
         {"ts", t.ts},
         {"session", t.session},
         {"client", t.client},
         {"listener", t.listener},
         {"class", t.cls},
         {"tls", t.tls},
         {"helo", t.helo},
         {"auth", t.auth},
         {"login", t.login.empty() ? ojson(nullptr) : ojson(t.login)},
         {"from", t.from},
         {"recipients", t.recipients},
         {"accepted", t.accepted},
         {"recorded",
          {{"outcome", t.outcome}, {"stage", t.stage}, {"rule", t.rule}, {"reply", t.reply}}},
         {"decision", decision_json(d.decision)}});
  }
  doc["differences_omitted"] = r.differences_omitted;
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace smtpgate
