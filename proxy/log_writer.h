// The log's way to its sink. Event loops queue complete lines; one thread writes them. A
// sink that stalls (a pipe nobody reads, journald throttling, a full disk, a slow NFS
// mount) then holds that thread, never a loop. The queue is bounded: when it is full a line
// is dropped and counted, and once the sink takes lines again one more line says how many
// were lost.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace smtpgate {

class LogWriter {
 public:
  // Lines queued and not yet written, at most (a burst of about 3,000 session lines).
  static constexpr size_t kMaxQueuedBytes = 1 << 20;
  // At shutdown, how long the queue may take to reach a stalled sink before it is given up.
  static constexpr std::chrono::milliseconds kStopWait{2000};
  // After a write the thread gathers lines this long before the next one, so a busy
  // gateway wakes it about once a millisecond, not once a line. The first line after a
  // quiet spell is written at once.
  static constexpr std::chrono::microseconds kGatherTime{1000};

  // Renders the line that reports `dropped` lost lines, in the log's format. Called on the
  // writer thread.
  using DropNotice = std::function<std::string(uint64_t dropped)>;

  // Writes to `fd` (not closed here). Starts the thread.
  LogWriter(int fd, DropNotice notice);
  // Writes what is queued, waiting at most kStopWait for a stalled sink, then stops.
  ~LogWriter();
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  // Queues one complete line (newline included). Any thread; never blocks on the sink.
  // Returns false when the line was dropped (queue full).
  bool push(std::string_view line);
  // Waits until every line queued so far is written or `timeout` passed; true if written.
  bool drain(std::chrono::milliseconds timeout);
  // Opens `path` anew (append, create) on the writer thread and writes there from then on,
  // under the same descriptor number; the next batch goes to the new file. A failure keeps
  // the old file. `on_reopen` (called on the writer thread with "" or why it failed) returns a
  // line to write at once, to the file now in use.
  using ReopenDone = std::function<std::string(const std::string& error)>;
  void reopen(std::string path, ReopenDone on_reopen);

  uint64_t dropped_total() const;
  uint64_t write_errors() const;  // failed write(2) calls (the lines they held are dropped)

 private:
  // Shared with the thread, which may outlive this object when the sink never recovers.
  struct State;
  static void run(std::shared_ptr<State> st);
  std::shared_ptr<State> st_;
  std::thread thread_;
};

}  // namespace smtpgate
