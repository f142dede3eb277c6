// The event log: one JSON object (or one aligned text line) per event, written at once.
#pragma once

#include <cstdint>
#include <cstdio>
#include <initializer_list>
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
  LogFormat format() const { return format_; }
  // Renders string fields as a prefix for LogLine: ,"k":"v"... (JSON) or " k=v" (text).
  std::string render_fields(
      std::initializer_list<std::pair<std::string_view, std::string_view>> f) const;

 private:
  friend class LogLine;
  void emit(std::string& line);
  std::string line_;  // reused for every LogLine
  int fd_ = 2;
  bool own_fd_ = false;
  LogFormat format_ = LogFormat::Json;
};

std::string iso_timestamp();  // 2026-11-27T10:49:17.123Z

// Appends `s` as the body of a JSON string: escapes, and invalid UTF-8 becomes U+FFFD.
void append_json_escaped(std::string& out, std::string_view s);

// One log line built in place (no JSON tree): the hot path for session events.
//   LogLine(log, "message", session_prefix).str("from", a).num("size", n).write();
// `prefix` is a pre-rendered run of fields (Logger::render_fields) in the logger's format.
class LogLine {
 public:
  LogLine(Logger& log, std::string_view event, std::string_view prefix = {});
  LogLine& str(std::string_view key, std::string_view value);
  LogLine& num(std::string_view key, int64_t value);
  LogLine& boolean(std::string_view key, bool value);
  void write();

 private:
  Logger& log_;
  std::string& line_;
  bool json_;
};

}  // namespace smtpgate
