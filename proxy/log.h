// The event log: one JSON object (or one aligned text line) per event, handed at once to
// the writer thread (LogWriter), which writes it within microseconds unless the sink stalls.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "policy/decision.h"
#include "policy/policy.h"
#include "proxy/log_writer.h"

namespace smtpgate {

class Logger {
 public:
  Logger() = default;
  ~Logger();
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;

  // path "-" = standard error. Returns an error message or "". From then on lines go through
  // the writer thread; before (start-up errors) they are written directly.
  std::string open(const std::string& path, LogFormat format);
  // Lines lost because the sink did not keep up (or failed).
  uint64_t dropped_total() const { return writer_ ? writer_->dropped_total() : 0; }
  // Waits (bounded) until every line so far reached the sink: tests and shutdown.
  bool drain(std::chrono::milliseconds timeout) { return !writer_ || writer_->drain(timeout); }
  void set_format(LogFormat f) { format_.store(f, std::memory_order_relaxed); }
  // SIGUSR1 (logrotate's postrotate): the log file is opened anew by the writer thread, then
  // a `log_reopen` line says so in the new file (or an `error` line why not, in the old one).
  // Nothing to do when the log is standard error.
  void reopen();

  // Writes one event. `fields` is a JSON object; "ts" and "event" are added first.
  void write(std::string_view event, const nlohmann::ordered_json& fields);
  LogFormat format() const { return format_.load(std::memory_order_relaxed); }
  // Renders string fields as a prefix for LogLine: ,"k":"v"... (JSON) or " k=v" (text).
  std::string render_fields(
      std::initializer_list<std::pair<std::string_view, std::string_view>> f) const;

 private:
  friend class LogLine;
  void emit(std::string& line);
  // Reused for every LogLine: one per thread (each worker loop renders its own lines).
  static std::string& scratch();
  int fd_ = 2;
  bool own_fd_ = false;
  std::string path_;                                // the log file, when not standard error
  std::atomic<LogFormat> format_{LogFormat::Json};  // set on reload, read by every worker
  std::unique_ptr<LogWriter> writer_;
};

std::string iso_timestamp();            // 2026-11-27T10:49:17.123Z (the loop thread's cached form)
std::string iso_timestamp_uncached();   // the same, safe on any thread
std::string iso_time(int64_t unix_ms);  // any instant, in the same form

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
  // A list of strings: a JSON array, or `key=a,b` in the text format.
  template <class Range>
  LogLine& list(std::string_view key, const Range& values) {
    list_begin(key);
    bool first = true;
    for (const auto& v : values) {
      list_item(v, first);
      first = false;
    }
    list_end();
    return *this;
  }
  void write();

 private:
  void list_begin(std::string_view key);
  void list_item(std::string_view value, bool first);
  void list_end();

  Logger& log_;
  std::string& line_;
  bool json_;
};

}  // namespace smtpgate
