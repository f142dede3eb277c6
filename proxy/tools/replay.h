// `smtpgate replay`: every recorded transaction (the `transaction` log lines) run again under a
// new policy, through the live session's own dialogue with a scripted backend, as `explain`
// runs a hypothetical one (proxy/smtp/scripted_session.h). Reports the new decisions by rule
// and verdict, and the transactions whose outcome changes (SPEC §11).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/decision.h"
#include "policy/policy.h"
#include "policy/result.h"
#include "proxy/tools/log_events.h"

namespace smtpgate {

struct ReplayOptions {
  size_t max_differences = 10000;  // kept for the report; the rest are counted
  // Sessions whose policy refusals of recipients are remembered until their transaction
  // line (sessions interleave in a log); over it the oldest are forgotten.
  size_t max_open_sessions = 10000;
};

struct ReplayDifference {
  bool now_accepted = false;  // rejected -> accepted; else accepted -> rejected
  TransactionEvent recorded;
  Decision decision;  // the new decision that decided it
};

struct ReplayReport {
  LogCounts counts;
  std::vector<std::string> warnings;
  uint64_t transactions = 0, replayed = 0;
  std::map<std::string, uint64_t> missing_listeners;  // listener name -> transactions
  uint64_t unreplayable = 0;  // a client or sender the log cannot have written
  // (stage, verdict, rule, enforced) -> decisions taken under the new policy
  std::map<std::tuple<Stage, Verdict, std::string, bool>, uint64_t> decisions;
  uint64_t accepted_before = 0, accepted_now = 0;  // of the replayed ones
  uint64_t to_rejected = 0, to_accepted = 0;
  std::vector<ReplayDifference> differences;  // in log order, at most max_differences
  uint64_t differences_omitted = 0;
};

class Replayer {
 public:
  explicit Replayer(const Policy& policy, ReplayOptions options = {});
  // The log's events, in order: decisions (which recipients the old policy refused, so were
  // never forwarded), transactions, session ends.
  void decision(const nlohmann::json& doc);
  void transaction(const TransactionEvent& t);
  void session_close(const nlohmann::json& doc);
  ReplayReport& report() { return report_; }

 private:
  const Policy& policy_;
  ReplayOptions options_;
  ReplayReport report_;
  // session id -> recipients the old policy refused (enforced) in its open transaction
  std::map<std::string, std::set<std::string>> refused_;
};

Result<ReplayReport> replay_files(const Policy& policy, const std::vector<std::string>& paths,
                                  const ReplayOptions& options = {});

std::string replay_text(const ReplayReport& r);
std::string replay_json(const ReplayReport& r);

}  // namespace smtpgate
