#include "proxy/log_writer.h"

#include "proxy/fd_write.h"

#include <unistd.h>

#include <fcntl.h>

#include <cerrno>
#include <cstring>

namespace smtpgate {

struct LogWriter::State {
  int fd = -1;
  DropNotice notice;
  std::mutex mu;
  std::condition_variable wake;  // the writer: lines are queued, or stop
  std::condition_variable idle;  // drain(): the queue was written
  std::string queue;             // guarded by mu
  bool writer_waiting = false;   // guarded by mu: idle, the next line must wake it
  bool writing = false;          // guarded by mu: a batch is on its way to the sink
  bool stop = false;             // guarded by mu
  std::atomic<uint64_t> dropped{0};
  std::atomic<uint64_t> unreported{0};
  std::atomic<uint64_t> errors{0};
  std::string reopen_path;  // guarded by mu: a reopen is asked for when not empty
  ReopenDone reopen_done;   // guarded by mu
};

namespace {

uint64_t count_lines(std::string_view s) {
  uint64_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

LogWriter::LogWriter(int fd, DropNotice notice) : st_(std::make_shared<State>()) {
  st_->fd = fd;
  st_->notice = std::move(notice);
  thread_ = std::thread(run, st_);
}

LogWriter::~LogWriter() {
  const bool written = drain(kStopWait);
  {
    std::lock_guard lock(st_->mu);
    st_->stop = true;
  }
  st_->wake.notify_one();
  // A sink stuck for good keeps its thread in write(2): leave it to the process's exit.
  if (written) {
    thread_.join();
  } else {
    thread_.detach();
  }
}

bool LogWriter::push(std::string_view line) {
  bool notify = false;
  {
    std::lock_guard lock(st_->mu);
    if (st_->queue.size() + line.size() > kMaxQueuedBytes) {
      st_->dropped.fetch_add(1, std::memory_order_relaxed);
      st_->unreported.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    const size_t before = st_->queue.size();
    st_->queue.append(line);
    // A gathering writer takes the line with its next batch, unless the queue fills up.
    notify = st_->writer_waiting ||
             (before < kMaxQueuedBytes / 2 && st_->queue.size() >= kMaxQueuedBytes / 2);
    st_->writer_waiting = false;
  }
  if (notify) st_->wake.notify_one();
  return true;
}

bool LogWriter::drain(std::chrono::milliseconds timeout) {
  std::unique_lock lock(st_->mu);
  return st_->idle.wait_for(lock, timeout, [this] { return st_->queue.empty() && !st_->writing; });
}

void LogWriter::reopen(std::string path, ReopenDone on_reopen) {
  {
    std::lock_guard lock(st_->mu);
    st_->reopen_path = std::move(path);
    st_->reopen_done = std::move(on_reopen);
  }
  st_->wake.notify_one();
}

namespace {

// Points `fd` at a fresh open of `path` (logrotate has moved the old file away).
std::string reopen_fd(int fd, const std::string& path) {
  const int fresh = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fresh < 0) return "cannot reopen log file " + path + ": " + std::strerror(errno);
  const int rc = ::dup3(fresh, fd, O_CLOEXEC);
  const int err = errno;
  ::close(fresh);
  if (rc < 0) return "cannot reopen log file " + path + ": " + std::strerror(err);
  return {};
}

}  // namespace

uint64_t LogWriter::dropped_total() const {
  return st_->dropped.load(std::memory_order_relaxed);
}

uint64_t LogWriter::write_errors() const {
  return st_->errors.load(std::memory_order_relaxed);
}

void LogWriter::run(std::shared_ptr<State> st) {
  std::string batch;
  bool gather = false;  // a batch was just written: give the next lines a moment to come
  for (;;) {
    std::string reopen_path;
    ReopenDone reopen_done;
    {
      std::unique_lock lock(st->mu);
      st->writing = false;
      if (gather && !st->stop) {
        st->wake.wait_for(lock, kGatherTime,
                          [&] { return st->stop || st->queue.size() >= kMaxQueuedBytes / 2; });
      }
      if (st->queue.empty()) st->idle.notify_all();
      while (st->queue.empty() && !st->stop && st->reopen_path.empty()) {
        st->writer_waiting = true;
        st->wake.wait(lock);
      }
      st->writer_waiting = false;
      reopen_path.swap(st->reopen_path);
      reopen_done.swap(st->reopen_done);
      if (st->queue.empty() && reopen_path.empty()) return;  // stop, and everything is written
      batch.clear();
      batch.swap(st->queue);
      st->writing = true;
      gather = true;
    }
    if (!reopen_path.empty()) {
      const std::string error = reopen_fd(st->fd, reopen_path);
      if (!error.empty()) st->errors.fetch_add(1, std::memory_order_relaxed);
      if (reopen_done) {
        const std::string line = reopen_done(error);
        if (!line.empty() && !write_all(st->fd, line))
          st->errors.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (batch.empty()) continue;
    if (!write_all(st->fd, batch)) {
      // The lines of a failed write are lost (a partial write's rest too): count them all.
      st->errors.fetch_add(1, std::memory_order_relaxed);
      const uint64_t lost = count_lines(batch);
      st->dropped.fetch_add(lost, std::memory_order_relaxed);
      st->unreported.fetch_add(lost, std::memory_order_relaxed);
      continue;
    }
    // The sink takes lines again: say how many it missed.
    if (const uint64_t lost = st->unreported.exchange(0, std::memory_order_relaxed); lost > 0) {
      const std::string notice = st->notice ? st->notice(lost) : std::string();
      if (!notice.empty() && !write_all(st->fd, notice))
        st->unreported.fetch_add(lost, std::memory_order_relaxed);
    }
    if (batch.capacity() > 4 * kMaxQueuedBytes) std::string().swap(batch);
  }
}

}  // namespace smtpgate
