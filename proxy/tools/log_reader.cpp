#include "proxy/tools/log_reader.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>

namespace smtpgate {
namespace {

// A word the shell takes literally: '...' with every ' written as '\''.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

}  // namespace

std::string LogReader::check(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rbe");
  if (!f) return path + ": " + std::strerror(errno);
  struct stat st {};
  const bool dir = ::fstat(::fileno(f), &st) == 0 && S_ISDIR(st.st_mode);
  std::fclose(f);
  return dir ? path + ": is a directory" : "";
}

Result<std::unique_ptr<LogReader>> LogReader::open(const std::string& path) {
  using R = Result<std::unique_ptr<LogReader>>;
  std::unique_ptr<LogReader> r(new LogReader());
  r->path_ = path;
  r->in_ = std::fopen(path.c_str(), "rbe");
  if (!r->in_) return R::fail(path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(::fileno(r->in_), &st) == 0 && S_ISDIR(st.st_mode))
    return R::fail(path + ": is a directory");
  // The magic decides, not the name: logrotate's delaycompress leaves both kinds around.
  r->len_ = std::fread(r->buf_, 1, 2, r->in_);
  if (std::ferror(r->in_)) return R::fail(path + ": " + std::strerror(errno));
  if (r->len_ == 2 && static_cast<unsigned char>(r->buf_[0]) == 0x1f &&
      static_cast<unsigned char>(r->buf_[1]) == 0x8b) {
    std::fclose(r->in_);
    r->in_ = nullptr;
    r->len_ = 0;
    std::fflush(nullptr);  // nothing of ours is written twice by the child
    r->in_ = ::popen(("exec gzip -dc -- " + shell_quote(path)).c_str(), "re");
    if (!r->in_) return R::fail(path + ": cannot run gzip -dc: " + std::strerror(errno));
    r->gzip_ = true;
  }
  return R::ok(std::move(r));
}

LogReader::~LogReader() {
  if (!in_) return;
  if (gzip_) {
    ::pclose(in_);
  } else {
    std::fclose(in_);
  }
}

bool LogReader::fill() {
  if (!in_ || failed_) return false;
  pos_ = 0;
  len_ = std::fread(buf_, 1, sizeof buf_, in_);
  if (len_ == 0 && std::ferror(in_)) failed_ = true;
  return len_ > 0;
}

bool LogReader::next(std::string& line) {
  line.clear();
  bool skipping = false;  // the line outgrew kMaxLine: read to its end, return nothing of it
  for (;;) {
    if (pos_ == len_ && !fill()) {
      if (skipping) ++too_long_;
      if (skipping || line.empty()) return false;
      break;  // the last line has no newline
    }
    const char* start = buf_ + pos_;
    const void* nl = std::memchr(start, '\n', len_ - pos_);
    const size_t n = nl ? static_cast<size_t>(static_cast<const char*>(nl) - start) : len_ - pos_;
    if (!skipping) {
      if (line.size() + n > kMaxLine) {
        skipping = true;
        line.clear();
        line.shrink_to_fit();
      } else {
        line.append(start, n);
      }
    }
    pos_ += n;
    if (!nl) continue;
    ++pos_;  // the newline
    if (!skipping) break;
    ++too_long_;
    skipping = false;
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return true;
}

std::string LogReader::finish() {
  std::string why;
  if (failed_) why = path_ + ": read error: " + std::strerror(errno);
  if (in_ && gzip_) {
    const int status = ::pclose(in_);
    in_ = nullptr;
    if (why.empty() && status != 0) {
      why = path_ + ": gzip -dc " +
            (WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                               : std::string("was killed")) +
            " (corrupt or truncated, or gzip missing)";
    }
  } else if (in_) {
    std::fclose(in_);
    in_ = nullptr;
  }
  return why;
}

}  // namespace smtpgate
