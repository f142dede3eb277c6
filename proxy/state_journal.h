// The state file (brute_force.state_file), kept as an append-only journal: bans and the
// logins' locks, known-good addresses and suspensions (SPEC §9), one JSON record a line, appended
// and fdatasync'ed by a thread of its own, so a ban costs the same whatever the number of bans, and
// the event loop never waits on the disk. The thread keeps its own copy of the list and rewrites
// the file compacted (temp file, fsync, rename) when the records appended since the last rewrite
// outgrow it.
//
// Records, one per line:
//   {"v":2}                                                  first line of a rewritten file
//   {"ban":"IP","since":MS,"until":MS,"offense":N,"reason":"..."}      times: Unix ms
//   {"unban":"IP"}
//   {"history":"IP","offenses":N,"last_until":MS}   offenses of an address not banned now
//   {"login_lock":"LOGIN","until":MS,"failures":N}                    brute_force.per_login
//   {"known_good":"LOGIN","ip":"IP","at":MS}         an address the login succeeded from
//   {"suspend":"LOGIN","since":MS,"trigger":"max_ips_per_hour","value":N,"threshold":N}
//   {"login_release":"LOGIN"}                        an admin lifted its lock and suspension
// Logins are written lower-cased; no password or hash of one is ever written.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "policy/ban_list.h"
#include "policy/login_breaker.h"
#include "policy/login_guard.h"
#include "policy/policy.h"

namespace smtpgate {

class StateJournal {
 public:
  // A rewrite happens once the appended records are this big and twice the rewritten file.
  static constexpr uint64_t kMinCompactBytes = 64 * 1024;

  // Reads the state at `path` into `bans` and (when given) `logins` and `breaker`: a journal,
  // or the one-document format (version 1) of earlier releases. A missing file is an empty
  // state. A torn last record (a crash in the middle of an append) is ignored. Any other
  // damage moves the file aside (PATH.corrupt-TIME, unless `read_only`) and leaves the state
  // empty; it is never fatal. Returns "" or a message for the log. Blocking: for the start
  // (and `explain`) only.
  static std::string load(const std::string& path, BanList* bans, LoginGuard* logins = nullptr,
                          LoginBreaker* breaker = nullptr, bool read_only = false);

  // Starts the thread, which first rewrites `path` from `initial` (dropping a torn record or
  // an old format). `on_progress` runs on `loop` after records were written or failed.
  // `errors_to_stderr`: also report failed writes on standard error (the log may live on the
  // same full disk).
  StateJournal(uv_loop_t* loop, std::string path, const BanList& initial,
               const BruteForcePolicy& bf, bool errors_to_stderr, std::function<void()> on_progress,
               const LoginGuard* logins = nullptr, const LoginBreaker* breaker = nullptr);
  ~StateJournal();
  StateJournal(const StateJournal&) = delete;
  StateJournal& operator=(const StateJournal&) = delete;

  // Queues a record; returns its sequence number (1, 2, ...). Never blocks on the disk.
  uint64_t record_ban(const BanEntry& e);
  uint64_t record_unban(const IpAddress& ip);
  uint64_t record_login_lock(std::string_view login, UnixMillis until, uint32_t failures);
  uint64_t record_known_good(std::string_view login, const IpAddress& ip, UnixMillis at);
  uint64_t record_suspension(const Suspension& s);
  uint64_t record_login_release(std::string_view login);
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
  struct Record;
  uint64_t push(Record r);

  std::shared_ptr<State> st_;
  uv_async_t* async_ = nullptr;  // owned; freed in its close callback
  std::function<void()> on_progress_;
  std::thread thread_;
  bool closed_ = false;
};

}  // namespace smtpgate
