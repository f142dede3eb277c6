// Wall-clock time in milliseconds since the epoch: ban times (they outlive the process).
#pragma once

#include <chrono>

#include "policy/ban_list.h"

namespace smtpgate {

inline UnixMillis unix_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace smtpgate
