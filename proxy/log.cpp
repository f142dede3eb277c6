#include "proxy/log.h"

#include <array>

#include "proxy/fd_write.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <ctime>

namespace smtpgate {

Logger::~Logger() {
  // Writes what is queued (bounded wait). A sink stuck for good keeps the writer thread: the
  // descriptor stays open for it (the process is exiting) rather than be reused under it.
  const bool stuck = writer_ && !writer_->drain(LogWriter::kStopWait);
  writer_.reset();
  if (own_fd_ && !stuck) ::close(fd_);
}

void Logger::reopen() {
  if (!writer_ || path_.empty()) return;
  const LogFormat f = format();
  const std::string path = path_;
  writer_->reopen(path_, [f, path](const std::string& error) {
    // On the writer thread, between batches.
    const std::string ts = iso_timestamp_uncached();
    std::string line;
    if (f == LogFormat::Json) {
      line = "{\"ts\":\"" + ts + "\",\"event\":" +
             (error.empty() ? "\"log_reopen\",\"path\":\""
                            : "\"error\",\"component\":\"log\",\"reason\":\"");
      append_json_escaped(line, error.empty() ? path : error);
      line += "\"}\n";
    } else {
      line =
          ts + (error.empty() ? " log_reopen     path=" : " error          component=log reason=");
      line += '"';
      append_json_escaped(line, error.empty() ? path : error);
      line += "\"\n";
    }
    return line;
  });
}

std::string Logger::open(const std::string& path, LogFormat format) {
  set_format(format);
  if (path != "-") {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return "cannot open log file " + path + ": " + std::strerror(errno);
    writer_.reset();
    if (own_fd_) ::close(fd_);
    fd_ = fd;
    own_fd_ = true;
    path_ = path;
  }
  const LogFormat f = format;
  writer_ = std::make_unique<LogWriter>(fd_, [f](uint64_t dropped) {
    // On the writer thread: its own timestamp, not the loop's cached one.
    std::string ts = iso_timestamp_uncached();
    std::string reason =
        std::to_string(dropped) + " log lines dropped: the log sink did not keep up";
    if (f == LogFormat::Json)
      return "{\"ts\":\"" + ts + "\",\"event\":\"error\",\"component\":\"log\",\"reason\":\"" +
             reason + "\",\"dropped\":" + std::to_string(dropped) + "}\n";
    return ts + " error          component=log reason=\"" + reason +
           "\" dropped=" + std::to_string(dropped) + "\n";
  });
  return {};
}

namespace {

void append_timestamp_of(std::string& out, int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  out.append(buf);
}

// The date and time to the second change rarely: format them once per second (per thread).
void append_timestamp(std::string& out) {
  thread_local std::time_t cached_secs = -1;  // per loop thread (workers)
  thread_local char cached[64];
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  if (secs != cached_secs) {
    std::tm tm{};
    gmtime_r(&secs, &tm);
    std::snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_secs = secs;
  }
  out.append(cached);
  int m = static_cast<int>(ms % 1000);
  out += static_cast<char>('0' + m / 100);
  out += static_cast<char>('0' + m / 10 % 10);
  out += static_cast<char>('0' + m % 10);
  out += 'Z';
}

size_t utf8_sequence(std::string_view s, size_t i) {
  auto b = static_cast<unsigned char>(s[i]);
  size_t n = b >= 0xf0 && b <= 0xf4 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 && b < 0xe0 ? 2 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  auto b1 = static_cast<unsigned char>(s[i + 1]);
  if (n == 3 && ((b == 0xe0 && b1 < 0xa0) || (b == 0xed && b1 >= 0xa0))) return 0;
  if (n == 4 && ((b == 0xf0 && b1 < 0x90) || (b == 0xf4 && b1 >= 0x90))) return 0;
  return n;
}

bool needs_text_quotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    if (u <= ' ' || c == '"' || c == '=' || c == '\\' || u >= 0x7f) return true;
  }
  return false;
}

void append_field(std::string& out, bool json, std::string_view key, std::string_view value) {
  if (json) {
    out += ",\"";
    out.append(key);
    out += "\":\"";
    append_json_escaped(out, value);
    out += '"';
  } else {
    out += ' ';
    out.append(key);
    out += '=';
    if (needs_text_quotes(value)) {
      out += '"';
      append_json_escaped(out, value);
      out += '"';
    } else {
      out.append(value);
    }
  }
}

}  // namespace

std::string& Logger::scratch() {
  thread_local std::string line;
  return line;
}

std::string iso_timestamp() {
  std::string s;
  append_timestamp(s);
  return s;
}

std::string iso_time(int64_t unix_ms) {
  std::string s;
  append_timestamp_of(s, unix_ms);
  return s;
}

std::string iso_timestamp_uncached() {
  std::string s;
  append_timestamp_of(s, std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count());
  return s;
}

namespace {

// Bytes copied as they are: printable ASCII but '"' and '\\' (a table lookup per byte keeps
// the common case, a run of plain text, a tight loop).
constexpr std::array<bool, 256> kPlainJson = [] {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x80; ++c) t[static_cast<size_t>(c)] = c != '"' && c != '\\';
  return t;
}();

}  // namespace

void append_json_escaped(std::string& out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  size_t run = 0;  // start of bytes that need no escaping, copied in one go
  for (size_t i = 0; i < s.size();) {
    while (i < s.size() && kPlainJson[static_cast<unsigned char>(s[i])]) ++i;
    if (i == s.size()) break;
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      size_t n = utf8_sequence(s, i);
      if (n > 0) {
        i += n;
        continue;
      }
    }
    out.append(s.data() + run, i - run);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c >= 0x80) {
          out += "\\ufffd";
        } else {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        }
    }
    ++i;
    run = i;
  }
  out.append(s.data() + run, s.size() - run);
}

std::string Logger::render_fields(
    std::initializer_list<std::pair<std::string_view, std::string_view>> f) const {
  std::string out;
  for (const auto& [k, v] : f) append_field(out, format() == LogFormat::Json, k, v);
  return out;
}

LogLine::LogLine(Logger& log, std::string_view event, std::string_view prefix)
    : log_(log), line_(Logger::scratch()), json_(log.format() == LogFormat::Json) {
  line_.clear();
  if (json_) {
    line_ += "{\"ts\":\"";
    append_timestamp(line_);
    line_ += "\",\"event\":\"";
    line_.append(event);
    line_ += '"';
  } else {
    append_timestamp(line_);
    line_ += ' ';
    line_.append(event);
    if (event.size() < 14) line_.append(14 - event.size(), ' ');
  }
  line_.append(prefix);
}

LogLine& LogLine::str(std::string_view key, std::string_view value) {
  append_field(line_, json_, key, value);
  return *this;
}

LogLine& LogLine::num(std::string_view key, int64_t value) {
  line_ += json_ ? ",\"" : " ";
  line_.append(key);
  line_ += json_ ? "\":" : "=";
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, value);
  line_.append(buf, r.ptr);
  return *this;
}

LogLine& LogLine::boolean(std::string_view key, bool value) {
  line_ += json_ ? ",\"" : " ";
  line_.append(key);
  line_ += json_ ? "\":" : "=";
  line_ += value ? "true" : "false";
  return *this;
}

void LogLine::list_begin(std::string_view key) {
  line_ += json_ ? ",\"" : " ";
  line_.append(key);
  line_ += json_ ? "\":[" : "=";
}

void LogLine::list_item(std::string_view value, bool first) {
  if (!first) line_ += ',';
  if (json_ || needs_text_quotes(value) || value.find(',') != std::string_view::npos) {
    line_ += '"';
    append_json_escaped(line_, value);
    line_ += '"';
  } else {
    line_.append(value);
  }
}

void LogLine::list_end() {
  if (json_) line_ += ']';
}

void LogLine::write() {
  if (json_) line_ += '}';
  log_.emit(line_);
}

void Logger::write(std::string_view event, const nlohmann::ordered_json& fields) {
  std::string line;
  std::string ts = iso_timestamp();
  if (format() == LogFormat::Json) {
    nlohmann::ordered_json doc;
    doc["ts"] = ts;
    doc["event"] = event;
    for (auto it = fields.begin(); it != fields.end(); ++it) doc[it.key()] = it.value();
    // Replace, not throw, on invalid UTF-8 from a client (HELO names, addresses).
    line = doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    char head[64];
    std::snprintf(head, sizeof head, "%s %-14s", ts.c_str(), std::string(event).c_str());
    line = head;
    for (auto it = fields.begin(); it != fields.end(); ++it) {
      line += ' ';
      line += it.key();
      line += '=';
      if (it.value().is_string()) {
        const auto& s = it.value().get_ref<const std::string&>();
        bool quote = s.empty() || s.find_first_of(" \"=") != std::string::npos;
        line +=
            quote ? nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                  : s;
      } else {
        line += it.value().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
    }
  }
  emit(line);
}

void Logger::emit(std::string& line) {
  line += '\n';
  // Whole lines to the writer thread: never a write(2) on the loop, never half a line.
  if (writer_) {
    writer_->push(line);
    return;
  }
  // Before the writer starts (start-up errors): a failing sink must not take the gateway down.
  (void)write_all(fd_, line);
}

}  // namespace smtpgate
