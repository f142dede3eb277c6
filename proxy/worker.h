// One event loop serving sessions (SPEC §8 `workers`). Worker 0 runs on the gateway's own loop
// in the main thread, which also accepts every connection, serves the admin endpoint and takes
// the signals; each other worker runs a loop of its own in a thread of its own.
//
// A worker owns the sessions it started and everything of theirs (sockets, timers, backend
// connections, the sessions waiting for a state-file record). Other threads never touch them:
// they reach a worker only through post(), which queues a task and wakes its loop. What the
// sessions of all workers count together lives in SharedState (proxy/shared_state.h).
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "proxy/session_registry.h"

namespace smtpgate {

class Gateway;
struct ListenerRuntime;
class Session;

class Worker {
 public:
  // `loop`: the main thread's loop (worker 0), or null for a loop and thread of its own.
  Worker(Gateway& gw, uv_loop_t* loop, unsigned index);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void start();  // a worker with its own loop starts its thread
  unsigned index() const { return index_; }
  uv_loop_t* loop() { return loop_; }

  // From any thread: runs `task` on this worker's loop, soon; false once the worker stopped
  // (the task is dropped).
  bool post(std::function<void()> task);

  // On this worker's loop. A session for the connection libuv holds on `server` (worker 0,
  // the accepting loop), or for a socket accepted elsewhere and handed over as `fd`.
  void start_session(ListenerRuntime& lr, uv_stream_t* server);
  void adopt(ListenerRuntime& lr, int fd);
  void retire(Session& s) { sessions_.retire(s); }

  // A session whose reply waits until a state-file record is on disk; told by
  // journal_progress() (posted by the gateway whenever the journal thread wrote).
  void wait_for_record(Session* s);
  void forget_waiter(Session* s);
  void journal_progress();

  // Shutdown, on this worker's loop: drain() asks every session to finish (`on_empty` runs
  // once no session is left); abandon() closes what remains; stop() closes the worker's own
  // handles so its loop can end (its thread then exits).
  void drain(std::function<void()> on_empty);
  void abandon();
  void stop();
  void join();  // from the main thread, after stop() was posted

  size_t sessions() const { return session_count_.load(std::memory_order_relaxed); }

 private:
  static void on_check(uv_check_t* h);
  void run_posted();

  Gateway& gw_;
  unsigned index_;
  uv_loop_t own_loop_{};
  uv_loop_t* loop_;
  bool own_ = false;
  std::thread thread_;
  SessionRegistry sessions_;
  std::atomic<size_t> session_count_{0};
  std::vector<Session*> waiters_;   // sessions holding a reply until their record is on disk
  std::function<void()> on_empty_;  // set while draining
  uv_check_t reaper_{};
  uv_prepare_t clock_tick_{};  // LoopClock::next_iteration() before each poll
  uv_async_t wake_{};
  std::mutex mu_;
  std::vector<std::function<void()>> tasks_;  // guarded by mu_
  bool stopped_ = false;
};

}  // namespace smtpgate
