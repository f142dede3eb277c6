// The monotonic clock as of the current loop iteration, read at most once per iteration.
#pragma once

#include <uv.h>

#include <cstdint>

namespace smtpgate {

// Every backend command and reply takes a timestamp (reply latency); reading the clock is
// not free (a VM's clock source costs tens of ns), and one read per loop iteration is as
// precise as the events it times: all callbacks of an iteration see the same poll.
// The gateway calls next_iteration() from a prepare handle, i.e. right before each poll,
// so a cached value is never older than the work of one iteration.
class LoopClock {
 public:
  static uint64_t now_ns() {
    if (cached_ns_ == 0) cached_ns_ = uv_hrtime();
    return cached_ns_;
  }
  static void next_iteration() { cached_ns_ = 0; }

 private:
  static inline thread_local uint64_t cached_ns_ = 0;  // each worker loop has its own
};

}  // namespace smtpgate
