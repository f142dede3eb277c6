// The Redis link's connection state machine (two hiredis async connections on the uv loop,
// reconnect with backoff) and its bounded write queue. The write commands are in
// redis_write_commands.cpp, full loads in redis_load.cpp. See redis_link.h for the model and
// the Redis layout.
#include "proxy/redis_link.h"

#include <fcntl.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <system_error>
#include <utility>

#include "proxy/redis_reply.h"
#include "proxy/redis_uv_adapter.h"

namespace smtpgate {

namespace {

std::string seconds(std::chrono::milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

// The password: the first line of the file, without its line end. Returns "" or the error.
std::string read_password(const std::string& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::error_code(errno, std::generic_category()).message();
  std::string data;
  char buf[4096];
  while (data.size() < 65536) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string why = std::error_code(errno, std::generic_category()).message();
      ::close(fd);
      return why;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.find('\n') != std::string::npos) break;
  }
  ::close(fd);
  size_t end = data.find('\n');
  if (end != std::string::npos) data.resize(end);
  if (!data.empty() && data.back() == '\r') data.pop_back();
  out = std::move(data);
  ::explicit_bzero(buf, sizeof buf);
  return out.empty() ? "its first line is empty" : "";
}

}  // namespace

RedisLinkConfig RedisLinkConfig::from(const SharedSettings& s) {
  RedisLinkConfig c;
  c.host = s.host;
  c.port = s.port;
  c.unix_path = s.unix_path;
  c.password_file = s.password_file;
  c.prefix = s.prefix;
  c.instance = s.instance;
  return c;
}

std::string RedisLinkConfig::endpoint() const {
  if (!unix_path.empty()) return "unix:" + unix_path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

RedisLink::RedisLink(uv_loop_t* loop, RedisLinkConfig config)
    : loop_(loop), cfg_(std::move(config)), timer_(Timer::create(loop, this)) {
  cfg_.max_queue = std::max<size_t>(cfg_.max_queue, 1);
  cfg_.max_in_flight = std::max<size_t>(cfg_.max_in_flight, 1);
  cfg_.max_entries_per_key = std::max<size_t>(cfg_.max_entries_per_key, 1);
  cfg_.backoff_min = std::max(cfg_.backoff_min, std::chrono::milliseconds(1));
  cfg_.backoff_max = std::max(cfg_.backoff_max, cfg_.backoff_min);
  instance_ = cfg_.instance;
  if (instance_.empty()) {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) == 0 && name[0] != '\0') instance_ = name;
    if (instance_.empty()) instance_ = "smtpgate";
  }
  uint64_t start_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                std::chrono::system_clock::now().time_since_epoch())
                                                .count());
  rng_state_ = uv_hrtime() ^ (static_cast<uint64_t>(::getpid()) << 32) ^ 0x9e3779b97f4a7c15ULL;
  // Unique across instances (the name), restarts (the start time) and two hosts given the
  // same name by mistake (the random part).
  char tag[9];
  std::snprintf(tag, sizeof tag, "%08x", static_cast<unsigned>(next_random() >> 16));
  origin_ = instance_ + "." + std::to_string(start_ms) + "." + tag;
}

RedisLink::~RedisLink() {
  closing_ = true;
  redisAsyncContext* c = cmd_;
  redisAsyncContext* s = sub_;
  cmd_ = sub_ = nullptr;
  // Pending reply callbacks run now, with no reply; closing_ keeps them from the owner.
  if (c) redisAsyncFree(c);
  if (s) redisAsyncFree(s);
  ::explicit_bzero(password_.data(), password_.size());
}

std::string RedisLink::start() {
  if (phase_ != Phase::Idle) return "";
  if (!cfg_.password_file.empty()) {
    std::string why = read_password(cfg_.password_file, password_);
    if (!why.empty()) {
      // The path, never the content. The owner reports it (and may refuse to start).
      return "cannot read the Redis password file " + cfg_.password_file + ": " + why;
    }
  }
  connect();
  return "";
}

std::chrono::milliseconds RedisLink::backoff(uint32_t failures, std::chrono::milliseconds min,
                                             std::chrono::milliseconds max) {
  std::chrono::milliseconds d = min;
  for (uint32_t i = 0; i < failures && d < max; ++i) d *= 2;
  return std::min(d, max);
}

void RedisLink::log(Level level, std::string message) const {
  if (log_ && !closing_) log_(level, message);
}

// Connection ---------------------------------------------------------------------------

redisAsyncContext* RedisLink::open_context(std::string& error) {
  redisAsyncContext* ac = cfg_.unix_path.empty() ? redisAsyncConnect(cfg_.host.c_str(), cfg_.port)
                                                 : redisAsyncConnectUnix(cfg_.unix_path.c_str());
  if (!ac) {
    error = "out of memory";
    return nullptr;
  }
  if (ac->err) {  // refused at once (a unix socket that does not exist …)
    error = ac->errstr;
    redisAsyncFree(ac);
    return nullptr;
  }
  if (!redis_uv_attach(ac, loop_)) {
    error = "cannot watch the socket";
    redisAsyncFree(ac);
    return nullptr;
  }
  // A peer that vanished without a FIN or RST is found out by TCP itself.
  if (cfg_.unix_path.empty()) redisEnableKeepAlive(&ac->c);
  ac->data = this;
  redisAsyncSetConnectCallback(ac, connect_cb);  // after attach: it starts the write watch
  redisAsyncSetDisconnectCallback(ac, disconnect_cb);
  return ac;
}

void RedisLink::connect() {
  phase_ = Phase::Connecting;
  cmd_ready_ = sub_ready_ = false;
  log(Level::Debug, "connecting to " + cfg_.endpoint());
  std::string error;
  cmd_ = open_context(error);
  if (cmd_) sub_ = open_context(error);
  if (!cmd_ || !sub_) {
    fail(error);
    return;
  }
  timer_->start(cfg_.connect_timeout);
  // Commands are buffered until the connection is made. AUTH first on both; the command
  // connection is ready when a PING is answered, the other when SUBSCRIBE is confirmed.
  bool ok = true;
  auto call = [&](CallKind kind) { return make_call(kind); };
  if (!password_.empty()) ok = send(cmd_, {"AUTH", password_}, call(CallKind::CmdAuth));
  ok = ok && send(cmd_, {"PING"}, call(CallKind::CmdReady));
  if (!password_.empty())
    ok = ok && send(sub_, {"AUTH", password_}, call(CallKind::SubAuth));
  else
    subscribe();
  if (!ok) fail("cannot queue the first commands");
}

void RedisLink::subscribe() {
  if (!sub_) return;
  std::string ch = channel();
  const char* argv[] = {"SUBSCRIBE", ch.c_str()};
  size_t lens[] = {9, ch.size()};
  // Its callback gets the confirmation and then every message, until the context is freed.
  if (redisAsyncCommandArgv(sub_, message_cb, nullptr, 2, argv, lens) != REDIS_OK)
    fail("cannot queue SUBSCRIBE");
}

std::unique_ptr<RedisLink::Call> RedisLink::make_call(CallKind kind, std::shared_ptr<Load> load) {
  auto c = std::make_unique<Call>();
  c->link = this;
  c->gen = gen_;
  c->kind = kind;
  c->load = std::move(load);
  return c;
}

bool RedisLink::send(redisAsyncContext* ac, const Argv& argv, std::unique_ptr<Call> call) {
  if (!ac) return false;
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (const std::string& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAsyncCommandArgv(ac, reply_cb, call.get(), static_cast<int>(argv.size()), ptrs.data(),
                            lens.data()) != REDIS_OK)
    return false;  // the context is going away: no callback will come
  call.release();  // hiredis calls reply_cb exactly once, which deletes it
  return true;
}

void RedisLink::connect_cb(const redisAsyncContext* ac, int status) {
  auto* link = static_cast<RedisLink*>(ac->data);
  if (!link || link->closing_) return;
  if (status == REDIS_OK) return;  // ready once AUTH/PING/SUBSCRIBE are answered
  // hiredis frees the context when this returns.
  bool ours = ac == link->cmd_ || ac == link->sub_;
  if (ac == link->cmd_) link->cmd_ = nullptr;
  if (ac == link->sub_) link->sub_ = nullptr;
  if (ours) link->fail(ac->errstr[0] ? ac->errstr : "connection failed");
}

void RedisLink::disconnect_cb(const redisAsyncContext* ac, int status) {
  auto* link = static_cast<RedisLink*>(ac->data);
  if (!link || link->closing_) return;
  // A context the link already dropped (teardown) ends here too: nothing more to do.
  bool ours = ac == link->cmd_ || ac == link->sub_;
  if (ac == link->cmd_) link->cmd_ = nullptr;
  if (ac == link->sub_) link->sub_ = nullptr;
  if (!ours) return;
  link->fail(status == REDIS_OK || !ac->errstr[0] ? "connection closed"
                                                  : std::string("connection lost: ") + ac->errstr);
}

void RedisLink::check_ready() {
  if (phase_ != Phase::Connecting || !cmd_ready_ || !sub_ready_) return;
  phase_ = Phase::Up;
  up_ = true;
  failures_ = 0;
  ping_outstanding_ = false;
  ++connects_total_;
  timer_->start(cfg_.ping_interval);
  std::string msg = "connected to " + cfg_.endpoint() + " as instance " + instance_;
  if (!queue_.empty()) msg += "; sending " + std::to_string(queue_.size()) + " queued writes";
  if (dropped_total_ > dropped_reported_) {
    msg += "; " + std::to_string(dropped_total_ - dropped_reported_) +
           " writes were dropped while down (the queue was full)";
    dropped_reported_ = dropped_total_;
  }
  log(Level::Info, msg);
  down_logged_ = false;
  pump();
  if (on_up_) on_up_();
}

void RedisLink::fail(std::string reason) {
  if (closing_ || phase_ == Phase::Waiting || phase_ == Phase::Idle) return;
  bool was_up = up_;
  // Either connection may be the first to hear it (SUBSCRIBE's refusal closes the other).
  if (reason.find("NOAUTH") != std::string::npos && password_.empty())
    reason += "; set shared.password_file";
  teardown();
  std::chrono::milliseconds delay = backoff(failures_, cfg_.backoff_min, cfg_.backoff_max);
  if (failures_ < 64) ++failures_;
  // Jitter (80-100 % of the step): instances that lost the same Redis do not all come back
  // at the same instant. Never above the step, so never above backoff_max.
  auto jitter = static_cast<int64_t>(next_random() % 21);
  delay -= std::chrono::milliseconds(delay.count() * jitter / 100);
  phase_ = Phase::Waiting;
  timer_->start(delay);
  std::string msg = (was_up ? "lost Redis at " : "cannot use Redis at ") + cfg_.endpoint() + ": " +
                    reason + "; retrying in " + seconds(delay);
  if (!queue_.empty()) msg += " (" + std::to_string(queue_.size()) + " writes queued)";
  // One error per outage; the retries that fail after it are detail.
  log(down_logged_ ? Level::Debug : Level::Error, msg);
  down_logged_ = true;
  if (was_up && on_down_) on_down_(reason);
}

void RedisLink::teardown() {
  ++gen_;
  up_ = false;
  cmd_ready_ = sub_ready_ = false;
  ping_outstanding_ = false;
  timer_->stop();
  redisAsyncContext* c = cmd_;
  redisAsyncContext* s = sub_;
  cmd_ = sub_ = nullptr;
  // Inside one of c's callbacks hiredis defers the free until the callback returns.
  if (c) redisAsyncFree(c);
  if (s) redisAsyncFree(s);
  // Writes without an answer may or may not have been done: do them again (idempotent).
  while (!in_flight_.empty()) {
    queue_.push_front(std::move(in_flight_.back()));
    in_flight_.pop_back();
  }
  while (queue_.size() > cfg_.max_queue) {
    queue_.pop_front();
    ++dropped_total_;
  }
}

void RedisLink::on_timer(Timer&) {
  switch (phase_) {
    case Phase::Connecting:
      fail("not ready within " + seconds(cfg_.connect_timeout));
      break;
    case Phase::Waiting:
      connect();
      break;
    case Phase::Up: {
      if (ping_outstanding_) {
        fail("no answer to PING within " + seconds(cfg_.ping_interval));
        break;
      }
      ping_outstanding_ = send(cmd_, {"PING"}, make_call(CallKind::Ping));
      timer_->start(cfg_.ping_interval);
      break;
    }
    case Phase::Idle:
      break;
  }
}

// Replies ------------------------------------------------------------------------------

void RedisLink::reply_cb(redisAsyncContext*, void* reply, void* privdata) {
  std::unique_ptr<Call> call(static_cast<Call*>(privdata));
  if (!call || call->link->closing_) return;
  call->link->handle_reply(*call, static_cast<redisReply*>(reply));
}

void RedisLink::handle_reply(Call& call, redisReply* r) {
  if (call.kind == CallKind::Scan || call.kind == CallKind::Mget || call.kind == CallKind::Zrange) {
    load_reply(call, r);
    return;
  }
  // No reply: the connection is going away; its disconnect (or teardown) handles the rest.
  if (call.gen != gen_ || !r) return;
  bool error = r->type == REDIS_REPLY_ERROR;
  std::string text(str_of(r));
  switch (call.kind) {
    case CallKind::CmdAuth:
    case CallKind::SubAuth:
      // Redis's message names no password ("WRONGPASS invalid username-password pair").
      if (error) {
        fail("Redis refused the password from " + cfg_.password_file + " (" + text + ")");
      } else if (call.kind == CallKind::SubAuth) {
        subscribe();
      }
      break;
    case CallKind::CmdReady:
      if (error) {
        fail(text);
      } else {
        cmd_ready_ = true;
        check_ready();
      }
      break;
    case CallKind::Ping:
      ping_outstanding_ = false;  // any answer, even an error (LOADING …), shows it is alive
      break;
    case CallKind::Write:
      write_done(r);
      break;
    default:
      break;
  }
}

void RedisLink::message_cb(redisAsyncContext* ac, void* reply, void*) {
  auto* link = static_cast<RedisLink*>(ac->data);
  if (!link || link->closing_ || !reply || ac != link->sub_) return;
  link->handle_message(static_cast<redisReply*>(reply));
}

void RedisLink::handle_message(redisReply* r) {
  if (r->type == REDIS_REPLY_ERROR) {
    fail("SUBSCRIBE refused: " + std::string(str_of(r)));
    return;
  }
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || !is_text(r->element[0])) return;
  std::string_view kind = str_of(r->element[0]);
  if (kind == "subscribe") {
    sub_ready_ = true;
    check_ready();
    return;
  }
  if (kind != "message" || r->element[2]->type != REDIS_REPLY_STRING) return;
  std::string_view payload = str_of(r->element[2]);
  auto event = nlohmann::json::parse(payload.begin(), payload.end(), nullptr, false);
  if (event.is_discarded() || !event.is_object()) {
    log(Level::Debug, "ignored a message on " + channel() + " that is not a JSON object");
    return;
  }
  // Everyone gets what they publish back: this link already applied its own events. Told
  // apart by origin, not by name: events of another host wrongly given the same name still
  // count (and that mistake is reported once).
  auto text_of = [&](const char* key) -> std::string_view {
    auto it = event.find(key);
    return it != event.end() && it->is_string()
               ? std::string_view(it->get_ref<const std::string&>())
               : std::string_view();
  };
  if (text_of("origin") == origin_) return;
  if (text_of("instance") == instance_ && !name_clash_logged_) {
    name_clash_logged_ = true;
    log(Level::Error, "another gateway publishes as instance " + instance_ +
                          ": give each instance its own shared.instance");
  }
  if (on_event_) on_event_(event);
}

// Writes -------------------------------------------------------------------------------

void RedisLink::submit(Argv argv) {
  queue_.push_back(std::move(argv));
  if (queue_.size() > cfg_.max_queue) {
    queue_.pop_front();
    ++dropped_total_;
    if (dropped_total_ == dropped_reported_ + 1)
      log(Level::Error, "write queue full (" + std::to_string(cfg_.max_queue) +
                            "): dropping the oldest writes until Redis is back");
  }
  pump();
}

void RedisLink::pump() {
  while (phase_ == Phase::Up && !queue_.empty() && in_flight_.size() < cfg_.max_in_flight) {
    if (!send(cmd_, queue_.front(), make_call(CallKind::Write))) return;
    in_flight_.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
}

void RedisLink::write_done(redisReply* r) {
  std::string command = in_flight_.empty() ? "?" : in_flight_.front().front();
  if (!in_flight_.empty()) in_flight_.pop_front();  // answers come in the order sent
  if (r->type == REDIS_REPLY_ERROR) {
    ++write_errors_total_;
    // At most one line a minute: a full Redis (OOM) refuses every write.
    uint64_t now = uv_now(loop_);
    if (write_error_logged_at_ == 0 || now - write_error_logged_at_ >= 60000) {
      write_error_logged_at_ = now;
      log(Level::Error, "Redis refused a write (" + command + "): " + std::string(str_of(r)) +
                            " (" + std::to_string(write_errors_total_) + " refused in all)");
    }
  }
  pump();
}

uint64_t RedisLink::next_random() {  // xorshift64: jitter and tags, nothing secret
  rng_state_ ^= rng_state_ << 13;
  rng_state_ ^= rng_state_ >> 7;
  rng_state_ ^= rng_state_ << 17;
  return rng_state_;
}

}  // namespace smtpgate
