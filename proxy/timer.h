// A one-shot timer on the loop that frees itself in its close callback.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>

namespace smtpgate {

class Timer {
 public:
  class Handler {
   public:
    virtual void on_timer(Timer& t) = 0;

   protected:
    ~Handler() = default;
  };

  static Timer* create(uv_loop_t* loop, Handler* handler);
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

}  // namespace smtpgate
