// The ban list's state file, kept as an append-only journal: each ban or unban is one JSON
// record a line, appended and fdatasync'ed by a thread of its own, so a ban costs the same
// whatever the number of bans, and the event loop never waits on the disk. The thread keeps
// its own copy of the list and rewrites the file compacted (temp file, fsync, rename) when
// the records appended since the last rewrite outgrow it.
//
// Records, one per line:
//   {"v":2}                                                  first line of a rewritten file
//   {"ban":"IP","since":MS,"until":MS,"offense":N,"reason":"..."}      times: Unix ms
//   {"unban":"IP"}
//   {"history":"IP","offenses":N,"last_until":MS}   offenses of an address not banned now
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "policy/ban_list.h"
#include "policy/policy.h"

namespace smtpgate {

class BanJournal {
 public:
  // A rewrite happens once the appended records are this big and twice the rewritten file.
  static constexpr uint64_t kMinCompactBytes = 64 * 1024;

  // Reads the state at `path` into `bans`: a journal, or the one-document format (version 1)
  // of earlier releases. A missing file is an empty state. A torn last record (a crash in the
  // middle of an append) is ignored. Any other damage moves the file aside
  // (PATH.corrupt-TIME) and leaves `bans` empty; it is never fatal. Returns "" or a message
  // for the log. Blocking: for the start only.
  static std::string load(const std::string& path, BanList* bans);

  // Starts the thread, which first rewrites `path` from `initial` (dropping a torn record or
  // an old format). `on_progress` runs on `loop` after records were written or failed.
  // `errors_to_stderr`: also report failed writes on standard error (the log may live on the
  // same full disk).
  BanJournal(uv_loop_t* loop, std::string path, const BanList& initial, const BruteForcePolicy& bf,
             bool errors_to_stderr, std::function<void()> on_progress);
  ~BanJournal();
  BanJournal(const BanJournal&) = delete;
  BanJournal& operator=(const BanJournal&) = delete;

  // Queues a record; returns its sequence number (1, 2, ...). Never blocks on the disk.
  uint64_t record_ban(const BanEntry& e);
  uint64_t record_unban(const IpAddress& ip);
  // max_ban decides when a compaction forgets an address's offenses.
  void set_brute_force(const BruteForcePolicy& bf);

  // Every record up to this one has been written and synced, or its write failed.
  uint64_t done() const;
  uint64_t write_errors() const;
  std::string last_error() const;  // "" while writes succeed

  // Writes what is queued (waiting at most a few seconds for a stalled disk), stops the
  // thread and closes the loop handle. Call before the loop closes.
  void close();

 private:
  struct State;
  static void run(std::shared_ptr<State> st);
  uint64_t push(std::string line, const BanEntry* ban, const IpAddress* unban);

  std::shared_ptr<State> st_;
  uv_async_t* async_ = nullptr;  // owned; freed in its close callback
  std::function<void()> on_progress_;
  std::thread thread_;
  bool closed_ = false;
};

}  // namespace smtpgate
