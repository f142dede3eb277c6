#include "proxy/timer.h"

namespace smtpgate {

HandlePtr<Timer> Timer::create(uv_loop_t* loop, Handler* handler) {
  auto* t = new Timer();
  uv_timer_init(loop, &t->timer_);
  t->timer_.data = t;
  t->handler_ = handler;
  return HandlePtr<Timer>(t);
}

void Timer::start(std::chrono::milliseconds after) {
  if (!handler_) return;
  uv_timer_start(&timer_, on_fire, static_cast<uint64_t>(after.count()), 0);
  active_ = true;
}

void Timer::stop() {
  if (!active_) return;
  uv_timer_stop(&timer_);
  active_ = false;
}

void Timer::on_fire(uv_timer_t* h) {
  auto* t = static_cast<Timer*>(h->data);
  t->active_ = false;
  if (t->handler_) t->handler_->on_timer(*t);
}

void Timer::close() {
  if (!handler_) return;
  handler_ = nullptr;
  active_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_),
           [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
}

}  // namespace smtpgate
