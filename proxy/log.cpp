#include "proxy/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

namespace smtpgate {

Logger::~Logger() {
  if (own_fd_) ::close(fd_);
}

std::string Logger::open(const std::string& path, LogFormat format) {
  format_ = format;
  if (path == "-") return {};
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return "cannot open log file " + path + ": " + std::strerror(errno);
  if (own_fd_) ::close(fd_);
  fd_ = fd;
  own_fd_ = true;
  return {};
}

std::string iso_timestamp() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

void Logger::write(std::string_view event, const nlohmann::ordered_json& fields) {
  std::string line;
  std::string ts = iso_timestamp();
  if (format_ == LogFormat::Json) {
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
        line += quote ? nlohmann::json(s).dump(-1, ' ', false,
                                               nlohmann::json::error_handler_t::replace)
                      : s;
      } else {
        line += it.value().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
    }
  }
  line += '\n';
  // One write per line, straight to the descriptor: lines are never held back in a buffer
  // and concurrent writers (none today) would not interleave within a line.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // a log sink that fails must not take the gateway down
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace smtpgate
