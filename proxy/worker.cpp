#include "proxy/worker.h"

#include <unistd.h>

#include <algorithm>

#include "proxy/gateway.h"
#include "proxy/loop_clock.h"
#include "proxy/session.h"

namespace smtpgate {

Worker::Worker(Gateway& gw, uv_loop_t* loop, unsigned index) : gw_(gw), index_(index), loop_(loop) {
  if (!loop_) {
    uv_loop_init(&own_loop_);
    loop_ = &own_loop_;
    own_ = true;
  }
  uv_async_init(loop_, &wake_, [](uv_async_t* h) { static_cast<Worker*>(h->data)->run_posted(); });
  wake_.data = this;
  uv_check_init(loop_, &reaper_);
  reaper_.data = this;
  uv_check_start(&reaper_, on_check);
  uv_prepare_init(loop_, &clock_tick_);
  uv_prepare_start(&clock_tick_, [](uv_prepare_t*) { LoopClock::next_iteration(); });
  uv_unref(reinterpret_cast<uv_handle_t*>(&clock_tick_));
}

Worker::~Worker() {
  join();
  if (own_) {
    // Close callbacks of the last sessions and handles, then the loop itself.
    uv_run(&own_loop_, UV_RUN_DEFAULT);
    sessions_.delete_retired();
    uv_loop_close(&own_loop_);
  }
}

void Worker::start() {
  if (!own_) return;
  thread_ = std::thread([this] {
    uv_run(loop_, UV_RUN_DEFAULT);
    sessions_.delete_retired();
  });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

bool Worker::post(std::function<void()> task) {
  // Sent under the lock: stop() sets stopped_ under it before closing the handle, so no
  // wake-up can reach a closed one.
  std::lock_guard lock(mu_);
  if (stopped_) return false;
  tasks_.push_back(std::move(task));
  uv_async_send(&wake_);
  return true;
}

void Worker::run_posted() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(tasks_);
  }
  for (auto& t : batch) t();
}

void Worker::start_session(ListenerRuntime& lr, uv_stream_t* server) {
  Session& s = sessions_.add(std::make_unique<Session>(gw_, *this, lr, gw_.current_config()));
  session_count_.store(sessions_.size(), std::memory_order_relaxed);
  s.start(server);
}

void Worker::adopt(ListenerRuntime& lr, int fd) {
  if (stopped_) {
    ::close(fd);
    return;
  }
  Session& s = sessions_.add(std::make_unique<Session>(gw_, *this, lr, gw_.current_config()));
  session_count_.store(sessions_.size(), std::memory_order_relaxed);
  s.start_adopted(fd);
}

void Worker::on_check(uv_check_t* h) {
  auto* w = static_cast<Worker*>(h->data);
  if (!w->sessions_.has_retired()) return;
  w->sessions_.delete_retired();
  w->session_count_.store(w->sessions_.size(), std::memory_order_relaxed);
  if (w->on_empty_ && w->sessions_.empty()) {
    auto done = std::move(w->on_empty_);
    w->on_empty_ = nullptr;
    done();
  }
}

void Worker::wait_for_record(Session* s) {
  if (std::find(waiters_.begin(), waiters_.end(), s) == waiters_.end()) waiters_.push_back(s);
}

void Worker::forget_waiter(Session* s) {
  std::erase(waiters_, s);
}

void Worker::journal_progress() {
  if (waiters_.empty()) return;
  std::vector<Session*> waiting;
  waiting.swap(waiters_);
  for (Session* s : waiting) s->on_ban_recorded();  // waits again if its record is later
}

void Worker::drain(std::function<void()> on_empty) {
  for (Session* s : sessions_.snapshot()) s->drain();
  if (sessions_.empty()) {
    on_empty();
  } else {
    on_empty_ = std::move(on_empty);
  }
}

void Worker::abandon() {
  on_empty_ = nullptr;
  for (Session* s : sessions_.snapshot()) s->abandon();
  waiters_.clear();  // their sessions were abandoned above
  sessions_.delete_retired();
  session_count_.store(sessions_.size(), std::memory_order_relaxed);
}

void Worker::stop() {
  abandon();
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    tasks_.clear();
  }
  auto close = [](auto* h) {
    auto* handle = reinterpret_cast<uv_handle_t*>(h);
    if (handle->loop && !uv_is_closing(handle)) uv_close(handle, nullptr);
  };
  close(&reaper_);
  close(&clock_tick_);
  close(&wake_);
}

}  // namespace smtpgate
