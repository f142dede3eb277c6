// `smtpgate explain`: a hypothetical session evaluated stage by stage, without network.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "policy/decision.h"
#include "policy/ip_address.h"
#include "policy/login_breaker.h"
#include "policy/login_guard.h"
#include "policy/policy.h"

namespace smtpgate {

struct ExplainInput {
  IpAddress client;
  std::string listener;  // listener name
  bool tls = false;
  std::string helo = "client.example";
  std::optional<std::string> auth_user;
  bool auth_ok = true;                   // --auth-ok (default) or --auth-fail
  std::optional<std::string> mail_from;  // with or without <>
  std::vector<std::string> rcpts;
  // The gateway's remembered locks and suspensions (from brute_force.state_file), at `now`.
  const LoginGuard* logins = nullptr;
  const LoginBreaker* breaker = nullptr;
  UnixMillis now = 0;
};

struct ExplainResult {
  std::vector<Decision> decisions;
  bool accepted = false;
};

// Errors (unknown listener, --tls on a listener without TLS, unparsable addresses) come
// back as a message; the policy's verdicts never do.
Result<ExplainResult> explain(const Policy& policy, const ExplainInput& input);

std::string explain_text(const ExplainResult& r);
std::string explain_json(const ExplainResult& r);  // {"decisions": [...], "outcome": ...}

}  // namespace smtpgate
