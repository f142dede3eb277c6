// The gateway's JSON log as `learn` and `replay` read it: every line of every file in turn,
// the events they want parsed, the rest counted (README "Logs").
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/ip_address.h"
#include "policy/result.h"

namespace smtpgate {

// What the scan read, for the reports.
struct LogCounts {
  uint64_t files = 0;
  uint64_t lines = 0;         // blank lines not counted
  uint64_t not_json = 0;      // not a JSON object (a text-format log, a cut line, garbage)
  uint64_t too_long = 0;      // over LogReader::kMaxLine
  uint64_t other_events = 0;  // JSON objects of events nobody asked for
  uint64_t malformed = 0;     // a wanted event missing a field it must have (see below)
  uint64_t events = 0;        // wanted events handed over
};

// One `transaction` line (README "Logs"), with its session fields.
struct TransactionEvent {
  std::string ts, session, client, listener, cls;
  std::string outcome, stage, rule, reply, from;
  std::vector<std::string> recipients, accepted;
  uint64_t recipients_omitted = 0;
  uint64_t size = 0;
  std::string helo;
  bool tls = false;
  std::string auth = "none";  // ok, failed, none
  std::string login;
};

// Reads outcome, client, listener (required: nullopt without them); the rest as present.
std::optional<TransactionEvent> parse_transaction(const nlohmann::json& doc);

// The `client` field: "192.0.2.1:4567" or "[2001:db8::1]:4567" (a bare address too).
std::optional<IpAddress> parse_client_address(std::string_view text);

// Scans `paths` in order. Every file is checked first (an unreadable one is an error before
// anything is read); then `on_event(name, doc)` is called for each JSON object whose "event"
// is one of `wanted`. A file cut short (a corrupt or truncated gzip) does not stop the scan:
// its reason is in `warnings`.
class LogScan {
 public:
  using Handler = std::function<void(std::string_view event, const nlohmann::json& doc)>;
  LogScan(std::vector<std::string> paths, std::vector<std::string> wanted);
  Result<bool> run(const Handler& on_event);  // fails only on a file it cannot open

  LogCounts counts;
  std::vector<std::string> warnings;

 private:
  void line(const std::string& text, const Handler& on_event);
  std::vector<std::string> paths_, wanted_;
  std::vector<std::string> quoted_;  // "\"transaction\"": lines without one are not parsed
};

// A short English summary of what was skipped, e.g. "2 lines not JSON, 120 other events";
// "" when nothing was.
std::string skipped_summary(const LogCounts& c);
// The counts as a JSON object (for --json).
nlohmann::ordered_json counts_json(const LogCounts& c);

}  // namespace smtpgate
