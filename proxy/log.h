// The event log: one JSON object (or one aligned text line) per event, written at once.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "policy/decision.h"
#include "policy/policy.h"

namespace smtpgate {

class Logger {
 public:
  Logger() = default;
  ~Logger();
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;

  // path "-" = standard error. Returns an error message or "".
  std::string open(const std::string& path, LogFormat format);
  void set_format(LogFormat f) { format_ = f; }

  // Writes one event. `fields` is a JSON object; "ts" and "event" are added first.
  void write(std::string_view event, const nlohmann::ordered_json& fields);

 private:
  int fd_ = 2;
  bool own_fd_ = false;
  LogFormat format_ = LogFormat::Json;
};

std::string iso_timestamp();  // 2026-11-27T10:49:17.123Z

}  // namespace smtpgate
