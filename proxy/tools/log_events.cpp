#include "proxy/tools/log_events.h"

#include <algorithm>
#include <memory>

#include "proxy/tools/log_reader.h"

namespace smtpgate {
namespace {

using json = nlohmann::json;

std::string str(const json& doc, const char* key) {
  auto it = doc.find(key);
  return it != doc.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::vector<std::string> strings(const json& doc, const char* key) {
  std::vector<std::string> out;
  auto it = doc.find(key);
  if (it == doc.end() || !it->is_array()) return out;
  for (const auto& v : *it)
    if (v.is_string()) out.push_back(v.get<std::string>());
  return out;
}

uint64_t number(const json& doc, const char* key) {
  auto it = doc.find(key);
  return it != doc.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

}  // namespace

std::optional<TransactionEvent> parse_transaction(const json& doc) {
  TransactionEvent t;
  t.outcome = str(doc, "outcome");
  t.client = str(doc, "client");
  t.listener = str(doc, "listener");
  if (t.outcome.empty() || t.client.empty() || t.listener.empty()) return std::nullopt;
  t.ts = str(doc, "ts");
  t.session = str(doc, "session");
  t.cls = str(doc, "class");
  t.stage = str(doc, "stage");
  t.rule = str(doc, "rule");
  t.reply = str(doc, "reply");
  t.from = str(doc, "from");
  t.recipients = strings(doc, "recipients");
  t.accepted = strings(doc, "accepted");
  t.recipients_omitted = number(doc, "recipients_omitted");
  t.size = number(doc, "size");
  t.helo = str(doc, "helo");
  auto tls = doc.find("tls");
  t.tls = tls != doc.end() && tls->is_boolean() && tls->get<bool>();
  const std::string auth = str(doc, "auth");
  if (!auth.empty()) t.auth = auth;
  t.login = str(doc, "login");
  return t;
}

std::optional<IpAddress> parse_client_address(std::string_view text) {
  if (text.starts_with('[')) {
    auto close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    return IpAddress::parse(text.substr(1, close - 1));
  }
  if (auto ip = IpAddress::parse(text)) return ip;  // no port
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  return IpAddress::parse(text.substr(0, colon));
}

LogScan::LogScan(std::vector<std::string> paths, std::vector<std::string> wanted)
    : paths_(std::move(paths)), wanted_(std::move(wanted)) {
  for (const auto& w : wanted_) quoted_.push_back("\"" + w + "\"");
}

Result<bool> LogScan::run(const Handler& on_event) {
  for (const auto& p : paths_) {
    std::string why = LogReader::check(p);
    if (!why.empty()) return Result<bool>::fail(why);
  }
  std::string text;
  for (const auto& p : paths_) {
    auto r = LogReader::open(p);
    if (!r) return Result<bool>::fail(r.error());
    ++counts.files;
    LogReader& reader = **r;
    while (reader.next(text)) line(text, on_event);
    counts.too_long += reader.too_long();
    std::string why = reader.finish();
    if (!why.empty()) warnings.push_back(std::move(why));
  }
  return Result<bool>::ok(true);
}

void LogScan::line(const std::string& text, const Handler& on_event) {
  if (text.find_first_not_of(" \t") == std::string::npos) return;
  ++counts.lines;
  // Most lines are events nobody asked for: those are only validated (no tree is built).
  const bool maybe = std::any_of(quoted_.begin(), quoted_.end(), [&](const std::string& w) {
    return text.find(w) != std::string::npos;
  });
  if (!maybe) {
    if (text[text.find_first_not_of(" \t")] == '{' && json::accept(text)) {
      ++counts.other_events;
    } else {
      ++counts.not_json;
    }
    return;
  }
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    ++counts.not_json;
    return;
  }
  const std::string event = str(doc, "event");
  if (std::find(wanted_.begin(), wanted_.end(), event) == wanted_.end()) {
    ++counts.other_events;
    return;
  }
  ++counts.events;
  on_event(event, doc);
}

std::string skipped_summary(const LogCounts& c) {
  std::string out;
  auto add = [&](uint64_t n, std::string_view one, std::string_view many) {
    if (n == 0) return;
    if (!out.empty()) out += ", ";
    out += std::to_string(n) + " " + std::string(n == 1 ? one : many);
  };
  add(c.not_json, "line not JSON", "lines not JSON");
  add(c.too_long, "line too long", "lines too long");
  add(c.malformed, "malformed event", "malformed events");
  add(c.other_events, "other event", "other events");
  return out;
}

nlohmann::ordered_json counts_json(const LogCounts& c) {
  return {{"files", c.files},       {"lines", c.lines},         {"not_json", c.not_json},
          {"too_long", c.too_long}, {"malformed", c.malformed}, {"other_events", c.other_events}};
}

}  // namespace smtpgate
