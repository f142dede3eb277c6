// Settings a running gateway keeps from its start, because they name sockets and files it
// opened then (listeners, the log file, the admin endpoint, the ban state file). A reload
// that changes one applies everything else and names these, so "loaded" never hides a change
// that did not take effect.
#pragma once

#include <string>
#include <vector>

#include "policy/policy.h"

namespace smtpgate {

// One line per change that needs a restart, e.g.
// `listeners[0] "mx": listen 0.0.0.0:25 -> 0.0.0.0:2525 (needs a restart)`.
std::vector<std::string> changes_needing_restart(const Policy& running, const Policy& loaded);

}  // namespace smtpgate
