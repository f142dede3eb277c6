// `smtpgate run`: the event loop with its listeners, sessions, signals and admin endpoint.
#pragma once

#include <optional>
#include <string>

#include "policy/policy.h"

namespace smtpgate {

struct RunOptions {
  std::string policy_path;
  bool dry_run = false;                 // --dry-run: every section in dry-run
  std::optional<LogFormat> log_format;  // --log-format overrides log.format
};

// Runs until SIGTERM/SIGINT (drain) and returns the process exit code.
int run_gateway(const RunOptions& options);

}  // namespace smtpgate
