// Reads a log file line by line, plain or gzip (recognised by its 1f 8b magic and read through
// a `gzip -dc` child process: the gateway links no zlib), in bounded memory whatever its size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "policy/result.h"

namespace smtpgate {

class LogReader {
 public:
  // Longer lines are skipped (counted in too_long()): no log line of the gateway comes close.
  static constexpr size_t kMaxLine = size_t{1} << 20;

  // Opens `path` (an error names the file and why: missing, a directory, unreadable).
  static Result<std::unique_ptr<LogReader>> open(const std::string& path);
  // What open() would say, without starting anything: "" when it can be read.
  static std::string check(const std::string& path);
  ~LogReader();
  LogReader(const LogReader&) = delete;
  LogReader& operator=(const LogReader&) = delete;

  // The next line, without its line end ("\n" or "\r\n"); false at the end of the input.
  bool next(std::string& line);
  // After next() returned false: "" or why the input ended early (gzip's exit status for a
  // corrupt or truncated file, a read error). Closes the input.
  std::string finish();

  bool gzip() const { return gzip_; }
  uint64_t too_long() const { return too_long_; }
  const std::string& path() const { return path_; }

 private:
  LogReader() = default;
  bool fill();  // reads more bytes into buf_; false at the end or on an error

  std::string path_;
  std::FILE* in_ = nullptr;
  bool gzip_ = false;  // in_ is a popen() pipe
  bool failed_ = false;
  char buf_[65536];
  size_t pos_ = 0, len_ = 0;
  uint64_t too_long_ = 0;
};

}  // namespace smtpgate
