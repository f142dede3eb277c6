// Writing a whole buffer to a descriptor with blocking write(2): for the threads that own
// the disk and the log sink (never the event loop once it runs).
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string_view>

namespace smtpgate {

// Writes all of `data`, retrying after EINTR and short writes; false on any other error.
inline bool write_all(int fd, std::string_view data) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace smtpgate
