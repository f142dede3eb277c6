// A one-shot timer on the loop that frees itself in its close callback.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>

#include "proxy/handle_ptr.h"

namespace smtpgate {

class Timer {
 public:
  class Handler {
   public:
    virtual void on_timer(Timer& t) = 0;

   protected:
    ~Handler() = default;
  };

  static HandlePtr<Timer> create(uv_loop_t* loop, Handler* handler);
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void start(std::chrono::milliseconds after);  // replaces a running deadline
  void stop();
  bool active() const { return active_; }
  void close();  // no callback after this; frees itself later

 private:
  Timer() = default;
  ~Timer() = default;
  static void on_fire(uv_timer_t* t);
  uv_timer_t timer_{};
  Handler* handler_ = nullptr;
  bool active_ = false;
};

// A deadline kept by one Timer that is restarted only when it would fire too late: moving
// the deadline later (each command does) costs no restart, which costs more than the
// command's own work; the timer fires at the old time and re-arms itself for the rest.
// Times are loop milliseconds (uv_now).
class Deadline {
 public:
  void set(Timer& timer, uint64_t now, std::chrono::milliseconds after) {
    at_ = now + static_cast<uint64_t>(after.count());
    if (!timer.active() || due_ > at_) {
      timer.start(after);
      due_ = at_;
    }
  }
  void clear() { at_ = kNone; }  // the timer may still fire; expired() then says no
  // When the timer fires: true if the deadline has passed. Otherwise the timer is re-armed
  // for what is left (or stays quiet after clear()).
  bool expired(Timer& timer, uint64_t now) {
    if (at_ == kNone) return false;
    if (now < at_) {
      timer.start(std::chrono::milliseconds(at_ - now));
      due_ = at_;
      return false;
    }
    return true;
  }

 private:
  static constexpr uint64_t kNone = UINT64_MAX;
  uint64_t at_ = kNone;
  uint64_t due_ = 0;  // when the timer fires next
};

}  // namespace smtpgate
