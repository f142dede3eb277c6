// Durations ("90s", "10m", "1h30m", "30d", or integer seconds) and rates ("60/m").
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "policy/result.h"

namespace smtpgate {

using Seconds = std::chrono::seconds;

// Units: s, m, h, d (and w); compound forms like "1h30m" allowed; must be > 0 unless allow_zero.
Result<Seconds> parse_duration(std::string_view text, bool allow_zero = false);
std::string format_duration(Seconds d);  // "1h30m", "45s", "0s"

struct Rate {
  uint32_t count = 0;
  Seconds per{1};  // 1s, 60s or 3600s
};
Result<Rate> parse_rate(std::string_view text);  // "N/s", "N/m", "N/h"; N > 0

}  // namespace smtpgate
