#include "proxy/state_journal.h"

#include "proxy/fd_write.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/domain_set.h"

namespace smtpgate {
namespace {

constexpr std::string_view kHeader = "{\"v\":2}\n";
constexpr std::chrono::seconds kCloseWait{5};

int64_t unix_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string errno_text(const std::string& what) {
  return what + ": " + std::strerror(errno);
}

std::string dump(const nlohmann::json& j) {
  // Reasons hold client-supplied text: invalid UTF-8 is replaced, never thrown.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string ban_record(const BanEntry& e) {
  nlohmann::json j = {{"ban", e.ip.to_string()},
                      {"since", e.since},
                      {"until", e.until},
                      {"offense", e.offense},
                      {"reason", e.reason}};
  if (e.prefix) j["prefix"] = e.prefix;  // an IPv6 ban covering the client's /prefix
  return dump(j);
}

std::string lock_record(std::string_view login, UnixMillis until, uint32_t failures) {
  return dump({{"login_lock", ascii_lower(login)}, {"until", until}, {"failures", failures}});
}

std::string known_good_record(std::string_view login, const IpAddress& ip, UnixMillis at) {
  return dump({{"known_good", ascii_lower(login)}, {"ip", ip.to_string()}, {"at", at}});
}

std::string suspension_record(const Suspension& s) {
  return dump({{"suspend", s.login},
               {"since", s.since},
               {"trigger", s.trigger},
               {"value", s.value},
               {"threshold", s.threshold}});
}

// Where records go: the loop's state at load, the thread's copy after.
struct Targets {
  BanList* bans;
  LoginGuard* logins;  // null: login records are read and dropped
  LoginBreaker* breaker;
  UnixMillis now;
};

std::string login_of(const nlohmann::json& j, const char* key) {
  const auto& v = j.at(key);
  return v.is_string() ? v.get<std::string>() : std::string();
}

// One journal line into `t`; "" or what is wrong with it.
std::string apply_record(std::string_view line, const Targets& t) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return "not a JSON object";
  auto ip_of = [&](const char* key) -> std::optional<IpAddress> {
    const auto& v = j.at(key);
    return v.is_string() ? IpAddress::parse(v.get<std::string>()) : std::nullopt;
  };
  try {
    if (j.contains("v")) return j.at("v") == 2 ? "" : "unknown journal version";
    if (j.contains("ban")) {
      auto ip = ip_of("ban");
      if (!ip) return "bad IP address";
      BanEntry e;
      e.ip = *ip;
      e.since = j.at("since").get<int64_t>();
      e.until = j.at("until").get<int64_t>();
      e.offense = j.at("offense").get<uint32_t>();
      e.reason = j.value("reason", "");
      e.prefix = j.value("prefix", uint8_t{0});
      t.bans->restore(e);
      return "";
    }
    if (j.contains("unban")) {
      auto ip = ip_of("unban");
      if (!ip) return "bad IP address";
      t.bans->unban(*ip);
      return "";
    }
    if (j.contains("history")) {
      auto ip = ip_of("history");
      if (!ip) return "bad IP address";
      t.bans->restore_history(*ip, j.at("offenses").get<uint32_t>(),
                              j.at("last_until").get<int64_t>());
      return "";
    }
    if (j.contains("login_lock")) {
      const std::string login = login_of(j, "login_lock");
      if (login.empty()) return "bad login";
      if (t.logins)
        t.logins->restore_lock(login, j.at("until").get<int64_t>(),
                               j.at("failures").get<uint32_t>(), t.now);
      return "";
    }
    if (j.contains("known_good")) {
      const std::string login = login_of(j, "known_good");
      auto ip = ip_of("ip");
      if (login.empty() || !ip) return "bad login or IP address";
      if (t.logins) t.logins->restore_known_good(login, *ip, j.at("at").get<int64_t>());
      return "";
    }
    if (j.contains("suspend")) {
      Suspension sus;
      sus.login = login_of(j, "suspend");
      if (sus.login.empty()) return "bad login";
      sus.since = j.at("since").get<int64_t>();
      sus.trigger = j.at("trigger").get<std::string>();
      sus.value = j.at("value").get<uint32_t>();
      sus.threshold = j.at("threshold").get<uint32_t>();
      if (t.breaker) t.breaker->restore(std::move(sus));
      return "";
    }
    if (j.contains("login_release")) {
      const std::string login = login_of(j, "login_release");
      if (login.empty()) return "bad login";
      if (t.logins) t.logins->release(login);
      if (t.breaker) t.breaker->release(login);
      return "";
    }
  } catch (const nlohmann::json::exception& e) {
    return e.what();
  }
  return "unknown record";
}

std::string parse_state(const std::string& text, const Targets& out) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  // Version 1: one document with "version" (it may span lines; a journal line never does).
  if (auto doc = nlohmann::json::parse(text, nullptr, false);
      !doc.is_discarded() && doc.is_object() && doc.contains("version"))
    return out.bans->from_json(doc);
  // A journal starts with its header, written before any record can be appended.
  if (!text.starts_with(kHeader)) return "not a ban journal (no {\"v\":2} header line)";
  size_t at = 0;
  size_t line_no = 0;
  while (at < text.size()) {
    const size_t nl = text.find('\n', at);
    if (nl == std::string::npos) break;  // a torn last record: the crash came mid-append
    ++line_no;
    std::string_view line(text.data() + at, nl - at);
    at = nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    if (auto err = apply_record(line, out); !err.empty())
      return "record " + std::to_string(line_no) + ": " + err;
  }
  return "";
}

}  // namespace

std::string StateJournal::load(const std::string& path, BanList* bans, LoginGuard* logins,
                               LoginBreaker* breaker, bool read_only) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errno == ENOENT ? "" : "cannot read ban state " + path + ": " + std::strerror(errno);
  std::stringstream ss;
  ss << in.rdbuf();
  BanList loaded_bans;
  LoginGuard loaded_logins;
  LoginBreaker loaded_breaker;
  std::string problem =
      parse_state(ss.str(), Targets{&loaded_bans, &loaded_logins, &loaded_breaker, unix_now_ms()});
  if (problem.empty()) {
    *bans = std::move(loaded_bans);
    if (logins) *logins = std::move(loaded_logins);
    if (breaker) *breaker = std::move(loaded_breaker);
    return {};
  }
  *bans = BanList{};
  if (logins) *logins = LoginGuard{};
  if (breaker) *breaker = LoginBreaker{};
  if (read_only) return "ban state " + path + " is corrupt (" + problem + ")";
  std::string aside = path + ".corrupt-" + std::to_string(std::time(nullptr));
  std::rename(path.c_str(), aside.c_str());
  return "ban state " + path + " is corrupt (" + problem + "); moved to " + aside +
         ", starting with no bans";
}

// ---------------------------------------------------------------- the thread

struct StateJournal::Record {
  uint64_t seq = 0;
  std::string line;  // the thread's copy applies it as load() would
};

struct StateJournal::State {
  std::string path;
  bool errors_to_stderr = false;

  std::mutex mu;
  std::condition_variable wake, idle;
  std::vector<Record> queue;  // guarded by mu
  BruteForcePolicy bf;        // guarded by mu
  bool stop = false;          // guarded by mu
  bool busy = false;          // guarded by mu: a batch is being written
  std::string last_error;     // guarded by mu
  uint64_t next_seq = 0;      // guarded by mu
  std::atomic<uint64_t> done{0};
  std::atomic<uint64_t> errors{0};

  // Telling the loop: the handle may be gone (close) while a stuck thread lives on.
  std::mutex async_mu;
  uv_async_t* async = nullptr;  // guarded by async_mu

  // The thread's own.
  BanList mirror;
  LoginGuard logins;
  LoginBreaker breaker;
  int fd = -1;
  uint64_t journal_bytes = 0;    // size of the file
  uint64_t compacted_bytes = 0;  // its size right after the last rewrite

  void notify_loop() {
    std::lock_guard lock(async_mu);
    if (async) uv_async_send(async);
  }
  void fail(const std::string& why) {
    errors.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard lock(mu);
      last_error = why;
    }
    if (errors_to_stderr) {
      std::string line = "smtpgate: state file not written: " + why + "\n";
      (void)!::write(2, line.data(), line.size());
    }
    if (fd >= 0) ::close(fd);
    fd = -1;  // the next batch rewrites the whole file
  }
  bool compact(const BruteForcePolicy& policy);
  bool append(const std::string& bytes);
};

bool StateJournal::State::compact(const BruteForcePolicy& policy) {
  const UnixMillis now = unix_now_ms();
  mirror.expire(now, policy);
  std::string data(kHeader);
  mirror.visit(
      [&](const BanEntry& e) { data += ban_record(e); },
      [&](const IpAddress& ip, uint32_t offenses, UnixMillis last_until) {
        data +=
            dump({{"history", ip.to_string()}, {"offenses", offenses}, {"last_until", last_until}});
      });
  const Seconds known_good =
      policy.per_login ? policy.per_login->known_good : PerLoginPolicy{}.known_good;
  logins.visit(
      now, now - known_good.count() * 1000,
      [&](const std::string& login, UnixMillis until, uint32_t failures) {
        data += lock_record(login, until, failures);
      },
      [&](const std::string& login, const IpAddress& ip, UnixMillis at) {
        data += known_good_record(login, ip, at);
      });
  for (const Suspension& sus : breaker.suspensions()) data += suspension_record(sus);
  // Beside the file, hidden: a leftover from a crash is never taken for the state.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const std::string tmp = (slash == std::string::npos ? std::string() : dir) + "." +
                          path.substr(slash == std::string::npos ? 0 : slash + 1) + ".tmp";
  int tfd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (tfd < 0) {
    fail(errno_text("cannot write " + tmp));
    return false;
  }
  if (!write_all(tfd, data) || ::fsync(tfd) != 0) {
    std::string why = errno_text("cannot write " + tmp);
    ::close(tfd);
    ::unlink(tmp.c_str());
    fail(why);
    return false;
  }
  ::close(tfd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = errno_text("rename " + tmp);
    ::unlink(tmp.c_str());
    fail(why);
    return false;
  }
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  if (fd >= 0) ::close(fd);
  fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) {
    fail(errno_text("cannot open " + path));
    return false;
  }
  journal_bytes = compacted_bytes = data.size();
  return true;
}

bool StateJournal::State::append(const std::string& bytes) {
  if (!write_all(fd, bytes) || ::fdatasync(fd) != 0) {
    // Whatever part made it is a torn record at worst: the next rewrite replaces the file.
    fail(errno_text("cannot append to " + path));
    return false;
  }
  journal_bytes += bytes.size();
  return true;
}

void StateJournal::run(std::shared_ptr<State> st) {
  std::vector<Record> batch;
  bool first = true;
  for (;;) {
    BruteForcePolicy bf;
    {
      std::unique_lock lock(st->mu);
      st->busy = false;
      if (st->queue.empty()) st->idle.notify_all();
      st->wake.wait(lock, [&] { return first || !st->queue.empty() || st->stop; });
      if (!first && st->queue.empty()) return;  // stopped, and everything is written
      batch.clear();
      batch.swap(st->queue);
      bf = st->bf;
      st->busy = true;
    }
    std::string bytes;
    const Targets mirror{&st->mirror, &st->logins, &st->breaker, unix_now_ms()};
    for (const auto& r : batch) {
      apply_record(std::string_view(r.line).substr(0, r.line.size() - 1), mirror);
      bytes += r.line;
    }
    // The first pass rewrites the file that was loaded; a failed write (full disk) makes the
    // next batch rewrite it whole; a journal that outgrew its last rewrite is compacted.
    const bool rewrite = first || st->fd < 0 ||
                         (st->journal_bytes + bytes.size() > kMinCompactBytes &&
                          st->journal_bytes + bytes.size() > 2 * st->compacted_bytes);
    first = false;
    const bool ok = rewrite ? st->compact(bf) : (bytes.empty() || st->append(bytes));
    if (ok) {
      std::lock_guard lock(st->mu);
      st->last_error.clear();
    }
    if (!batch.empty()) {
      st->done.store(batch.back().seq, std::memory_order_release);
      st->notify_loop();
    }
  }
}

// ---------------------------------------------------------------- the loop's side

StateJournal::StateJournal(uv_loop_t* loop, std::string path, const BanList& initial,
                           const BruteForcePolicy& bf, bool errors_to_stderr,
                           std::function<void()> on_progress, const LoginGuard* logins,
                           const LoginBreaker* breaker)
    : st_(std::make_shared<State>()), on_progress_(std::move(on_progress)) {
  st_->path = std::move(path);
  st_->errors_to_stderr = errors_to_stderr;
  st_->bf = bf;
  st_->mirror = initial;
  if (logins) st_->logins = *logins;
  if (breaker) st_->breaker = *breaker;
  async_ = new uv_async_t;
  uv_async_init(loop, async_, [](uv_async_t* h) {
    auto* self = static_cast<StateJournal*>(h->data);
    if (self && self->on_progress_) self->on_progress_();
  });
  async_->data = this;
  st_->async = async_;
  thread_ = std::thread(run, st_);
}

StateJournal::~StateJournal() {
  close();
}

uint64_t StateJournal::push(Record r) {
  uint64_t seq;
  {
    std::lock_guard lock(st_->mu);
    seq = r.seq = ++st_->next_seq;
    st_->queue.push_back(std::move(r));
  }
  st_->wake.notify_one();
  return seq;
}

uint64_t StateJournal::record_ban(const BanEntry& e) {
  return push({0, ban_record(e)});
}

uint64_t StateJournal::record_unban(const IpAddress& ip) {
  return push({0, dump({{"unban", ip.to_string()}})});
}

uint64_t StateJournal::record_login_lock(std::string_view login, UnixMillis until,
                                         uint32_t failures) {
  return push({0, lock_record(login, until, failures)});
}

uint64_t StateJournal::record_known_good(std::string_view login, const IpAddress& ip,
                                         UnixMillis at) {
  return push({0, known_good_record(login, ip, at)});
}

uint64_t StateJournal::record_suspension(const Suspension& s) {
  return push({0, suspension_record(s)});
}

uint64_t StateJournal::record_login_release(std::string_view login) {
  return push({0, dump({{"login_release", ascii_lower(login)}})});
}

void StateJournal::set_brute_force(const BruteForcePolicy& bf) {
  std::lock_guard lock(st_->mu);
  st_->bf = bf;
}

uint64_t StateJournal::done() const {
  return st_->done.load(std::memory_order_acquire);
}

uint64_t StateJournal::write_errors() const {
  return st_->errors.load(std::memory_order_relaxed);
}

std::string StateJournal::last_error() const {
  std::lock_guard lock(st_->mu);
  return st_->last_error;
}

void StateJournal::close() {
  if (closed_) return;
  closed_ = true;
  bool finished;
  {
    std::unique_lock lock(st_->mu);
    st_->stop = true;
    st_->wake.notify_one();
    finished =
        st_->idle.wait_for(lock, kCloseWait, [&] { return st_->queue.empty() && !st_->busy; });
  }
  {
    std::lock_guard lock(st_->async_mu);
    st_->async = nullptr;
  }
  // A disk that hangs for good keeps its thread: leave it to the process's exit.
  if (finished) {
    thread_.join();
  } else {
    thread_.detach();
  }
  async_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(async_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  async_ = nullptr;
}

}  // namespace smtpgate
