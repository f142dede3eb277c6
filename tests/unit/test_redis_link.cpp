// RedisLink against a real redis-server: each test starts its own on a free loopback port
// with its own directory and no persistence, and kills it at the end. Skipped (with a
// warning) when /usr/bin/redis-server is not installed.
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/redis_link.h"

using namespace smtpgate;
using namespace std::chrono_literals;
using json = nlohmann::json;

extern char** environ;

namespace {

constexpr const char* kRedisServer = "/usr/bin/redis-server";

bool have_redis() {
  if (::access(kRedisServer, X_OK) == 0) return true;
  WARN("skipped: " << kRedisServer << " is not installed (apt-get install redis-server)");
  return false;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A port nobody listens on now (the kernel's pick; Redis binds it right after).
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

// One redis-server child of this test: loopback only, no RDB/AOF, its own directory.
class RedisServer {
 public:
  explicit RedisServer(std::string password = "") : password_(std::move(password)) {
    char tmpl[] = "/tmp/smtpgate-redis-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    port_ = free_port();
    start();
  }
  ~RedisServer() {
    stop();
    for (const char* f : {"/redis.log", "/redis.sock"}) ::unlink((dir_ + f).c_str());
    ::rmdir(dir_.c_str());
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  uint16_t port() const { return port_; }
  std::string socket_path() const { return dir_ + "/redis.sock"; }
  pid_t pid() const { return pid_; }

  void start() {
    REQUIRE(pid_ < 0);
    std::vector<std::string> args = {"redis-server",
                                     "--port",
                                     std::to_string(port_),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--dir",
                                     dir_,
                                     "--daemonize",
                                     "no",
                                     "--unixsocket",
                                     socket_path(),
                                     "--logfile",
                                     dir_ + "/redis.log"};
    if (!password_.empty()) {
      args.push_back("--requirepass");
      args.push_back(password_);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, kRedisServer, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    REQUIRE(rc == 0);
    pid_ = pid;
    // Ready when it answers (NOAUTH is an answer too); bounded.
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (command({"PING"}) != "(no connection)") return;
      std::this_thread::sleep_for(20ms);
    }
    FAIL("redis-server did not answer on port " << port_);
  }
  // SIGKILL: no goodbye to the clients, as when a host dies.
  void kill() { stop(); }
  void signal(int sig) { ::kill(pid_, sig); }

  // A blocking command for checks: the reply as text ("(nil)", "ERR …", integers, arrays
  // joined with ',').
  std::string command(const std::vector<std::string>& args) const {
    timeval tv{1, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    if (!c || c->err) {
      if (c) redisFree(c);
      return "(no connection)";
    }
    redisSetTimeout(c, tv);
    if (!password_.empty()) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "AUTH %s", password_.c_str()));
      if (r) freeReplyObject(r);
    }
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(args.size()), ptrs.data(), lens.data()));
    std::string out = r ? render(r) : "(no connection)";
    if (r) freeReplyObject(r);
    redisFree(c);
    return out;
  }

 private:
  static std::string render(const redisReply* r) {
    switch (r->type) {
      case REDIS_REPLY_NIL:
        return "(nil)";
      case REDIS_REPLY_INTEGER:
        return std::to_string(r->integer);
      case REDIS_REPLY_ERROR:
        return "ERR " + std::string(r->str, r->len);
      case REDIS_REPLY_ARRAY: {
        std::string out;
        for (size_t i = 0; i < r->elements; ++i) out += (i ? "," : "") + render(r->element[i]);
        return out;
      }
      default:
        return std::string(r->str, r->len);
    }
  }
  void stop() {
    if (pid_ < 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  std::string password_;
  std::string dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

// A uv loop run in steps until a condition holds, bounded.
struct Loop {
  uv_loop_t loop{};
  uv_timer_t tick{};
  Loop() {
    // Writing to a connection Redis dropped raises SIGPIPE; the gateway ignores it too.
    ::signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    uv_timer_init(&loop, &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 5, 5);  // no step waits longer than 5 ms
  }
  ~Loop() {
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    for (int i = 0; i < 100 && uv_loop_alive(&loop); ++i) uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      uv_run(&loop, UV_RUN_ONCE);
    }
    return true;
  }
  void run_for(std::chrono::milliseconds d) {
    run_until([] { return false; }, d);
  }
};

// A link with everything it reports recorded.
struct Probe {
  std::vector<std::pair<RedisLink::Level, std::string>> logs;
  std::vector<json> events;
  int ups = 0;
  int downs = 0;

  void attach(RedisLink& link) {
    link.on_log([this](RedisLink::Level l, std::string_view m) { logs.emplace_back(l, m); });
    link.on_event([this](const json& e) { events.push_back(e); });
    link.on_up([this] { ++ups; });
    link.on_down([this](std::string_view) { ++downs; });
  }
  bool logged(const std::string& part, RedisLink::Level level = RedisLink::Level::Error) const {
    for (const auto& [l, m] : logs)
      if (l == level && m.find(part) != std::string::npos) return true;
    return false;
  }
  bool mentions(const std::string& text) const {
    for (const auto& [l, m] : logs)
      if (m.find(text) != std::string::npos) return true;
    return false;
  }
  std::string all() const {
    std::string out;
    for (const auto& [l, m] : logs) out += std::to_string(static_cast<int>(l)) + " " + m + "\n";
    return out;
  }
};

RedisLinkConfig config_for(const RedisServer& server, std::string instance) {
  RedisLinkConfig c;
  c.host = "127.0.0.1";
  c.port = server.port();
  c.instance = std::move(instance);
  return c;
}

bool flushed(const RedisLink& l) {
  return l.queued() == 0 && l.in_flight() == 0;
}

std::string write_file(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::binary) << content;
  ::chmod(path.c_str(), 0600);
  return path;
}

}  // namespace

TEST_CASE("redis link: backoff doubles from 0.5 s to at most 30 s", "[redis]") {
  auto b = [](uint32_t n) { return RedisLink::backoff(n, 500ms, 30000ms).count(); };
  CHECK(b(0) == 500);
  CHECK(b(1) == 1000);
  CHECK(b(2) == 2000);
  CHECK(b(5) == 16000);
  CHECK(b(6) == 30000);
  CHECK(b(64) == 30000);
}

TEST_CASE("redis link: an event reaches the other instance and is not echoed", "[redis]") {
  if (!have_redis()) return;
  RedisServer server;
  Loop loop;
  Probe pa, pb;
  RedisLink a(&loop.loop, config_for(server, "gw-a"));
  RedisLink b(&loop.loop, config_for(server, "gw-b"));
  pa.attach(a);
  pb.attach(b);
  CHECK_FALSE(a.up());
  REQUIRE(a.start().empty());
  REQUIRE(b.start().empty());
  REQUIRE(loop.run_until([&] { return a.up() && b.up(); }, 3s));
  CHECK(pa.ups == 1);
  CHECK(pa.logged("connected to 127.0.0.1:" + std::to_string(server.port()) + " as instance gw-a",
                  RedisLink::Level::Info));

  a.publish({{"type", "ban"}, {"ip", "192.0.2.1"}});
  REQUIRE(loop.run_until([&] { return !pb.events.empty(); }, 2s));
  CHECK(pb.events[0]["type"] == "ban");
  CHECK(pb.events[0]["ip"] == "192.0.2.1");
  CHECK(pb.events[0]["instance"] == "gw-a");

  b.publish({{"type", "unban"}, {"ip", "192.0.2.1"}});
  // Not JSON, or not an object: ignored by both, no crash.
  CHECK(server.command({"PUBLISH", "smtpgate:events", "{not json"}) == "2");
  CHECK(server.command({"PUBLISH", "smtpgate:events", "[1,2]"}) == "2");
  REQUIRE(loop.run_until([&] { return !pa.events.empty(); }, 2s));
  loop.run_for(200ms);
  REQUIRE(pa.events.size() == 1);  // its own ban event never came back
  CHECK(pa.events[0]["type"] == "unban");
  CHECK(pb.events.size() == 1);  // nor did b's unban
  CHECK(a.channel() == "smtpgate:events");
  CHECK_FALSE(pa.logged("another gateway"));

  // Another host wrongly named like a: its events still count, and the mistake is logged.
  RedisLink twin(&loop.loop, config_for(server, "gw-a"));
  REQUIRE(twin.start().empty());
  REQUIRE(loop.run_until([&] { return twin.up(); }, 3s));
  twin.publish({{"type", "ban"}, {"ip", "192.0.2.2"}});
  REQUIRE(loop.run_until([&] { return pa.events.size() == 2 && pb.events.size() == 2; }, 2s));
  CHECK(pa.events[1]["ip"] == "192.0.2.2");
  CHECK(pa.logged("another gateway publishes as instance gw-a"));
}

TEST_CASE("redis link: a ban expires at its end and every name carries the prefix", "[redis]") {
  if (!have_redis()) return;
  RedisServer server;
  Loop loop;
  Probe p;
  RedisLinkConfig cfg = config_for(server, "gw-a");
  cfg.prefix = "t1:";
  RedisLink a(&loop.loop, cfg);
  p.attach(a);
  // Written before start: queued, then sent once up.
  a.set_ban("192.0.2.7", {{"until", now_ms() + 400}, {"reason", "brute_force"}}, now_ms() + 400);
  a.set_ban("192.0.2.8", {{"reason", "admin"}}, 0);  // no end: no expiry
  CHECK(a.queued() == 2);
  REQUIRE(a.start().empty());
  REQUIRE(loop.run_until([&] { return a.up() && flushed(a); }, 3s));
  CHECK(a.write_errors_total() == 0);
  CHECK(server.command({"EXISTS", "t1:ban:192.0.2.7"}) == "1");
  int64_t pttl = std::stoll(server.command({"PTTL", "t1:ban:192.0.2.7"}));
  CHECK(pttl > 0);
  CHECK(pttl <= 400);
  CHECK(json::parse(server.command({"GET", "t1:ban:192.0.2.7"}))["reason"] == "brute_force");
  CHECK(server.command({"PTTL", "t1:ban:192.0.2.8"}) == "-1");
  loop.run_for(500ms);
  CHECK(server.command({"EXISTS", "t1:ban:192.0.2.7"}) == "0");  // Redis expired it (PXAT)

  a.del_ban("192.0.2.8");
  a.set_login("bob@example.com", {{"state", "suspended"}}, 0);
  a.add_failure("ip", "192.0.2.9", now_ms(), 60000);
  a.add_sent("bob@example.com", 3, now_ms(), 60000);
  a.publish({{"type", "x"}});
  REQUIRE(loop.run_until([&] { return flushed(a); }, 2s));
  CHECK(server.command({"EXISTS", "t1:ban:192.0.2.8"}) == "0");
  // Every key is under the prefix.
  std::string keys = server.command({"KEYS", "*"});
  CHECK(keys.find("t1:login:bob@example.com") != std::string::npos);
  CHECK(keys.find("t1:fail:ip:192.0.2.9") != std::string::npos);
  CHECK(keys.find("t1:sent:bob@example.com") != std::string::npos);
  for (size_t at = 0; at != std::string::npos && at < keys.size();) {
    CHECK(keys.compare(at, 3, "t1:") == 0);
    at = keys.find(',', at);
    if (at != std::string::npos) ++at;
  }
  // A failure set expires one window after its newest entry.
  pttl = std::stoll(server.command({"PTTL", "t1:fail:ip:192.0.2.9"}));
  CHECK(pttl > 55000);
  CHECK(pttl <= 60000);
}

TEST_CASE("redis link: what one instance wrote the full load of another returns", "[redis]") {
  if (!have_redis()) return;
  RedisServer server;
  Loop loop;
  Probe pa, pb;
  RedisLink a(&loop.loop, config_for(server, "gw-a"));
  RedisLink b(&loop.loop, config_for(server, "gw-b"));
  pa.attach(a);
  pb.attach(b);
  REQUIRE(a.start().empty());
  REQUIRE(b.start().empty());
  REQUIRE(loop.run_until([&] { return a.up() && b.up(); }, 3s));
  CHECK_FALSE(RedisLink(&loop.loop, config_for(server, "idle")).load_all(0, [](bool, auto) {}));

  const int64_t now = now_ms();
  const int64_t hour = 3600000;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(a.add_failure("ip", "192.0.2.9", now - 1000 + i, hour));
  CHECK(ids[0] != ids[1]);
  CHECK(ids[0].rfind("gw-a.", 0) == 0);
  CHECK(a.add_failure("login", "bob@example.com", now, hour, "given-id") == "given-id");
  a.add_failure("login", "old@example.com", now - 2 * hour, hour);  // already past its window
  a.add_failure("bad:kind", "x", now, hour);                        // refused, not written
  CHECK(pa.logged("failure kind"));
  a.add_sent("bob@example.com", 5, now, hour);
  a.add_sent("bob@example.com", 2, now + 1, hour);
  a.set_login("bob@example.com", {{"state", "locked"}, {"failures", 10}}, now + 60000);
  a.set_ban("2001:db8::/64", {{"until", now + 60000}}, now + 60000);
  REQUIRE(loop.run_until([&] { return flushed(a); }, 2s));
  CHECK(a.write_errors_total() == 0);
  CHECK(server.command({"EXISTS", "smtpgate:fail:login:old@example.com"}) == "0");
  // Written by someone else: skipped, not a failed load.
  server.command({"SET", "smtpgate:ban:junk", "{not json"});
  server.command({"SET", "smtpgate:fail:ip:wrongtype", "x"});
  server.command({"SET", "other:ban:192.0.2.50", "{}"});  // another prefix: not read

  bool done = false;
  bool ok = false;
  SharedSnapshot snap;
  REQUIRE(b.load_all(now - hour, [&](bool k, SharedSnapshot s) {
    done = true;
    ok = k;
    snap = std::move(s);
  }));
  REQUIRE(loop.run_until([&] { return done; }, 3s));
  REQUIRE(ok);
  CHECK(snap.complete);
  CHECK(snap.skipped == 2);
  REQUIRE(snap.bans.size() == 1);
  CHECK(snap.bans[0].ip_key == "2001:db8::/64");
  CHECK(snap.bans[0].value["until"] == now + 60000);
  REQUIRE(snap.logins.size() == 1);
  CHECK(snap.logins[0].login == "bob@example.com");
  CHECK(snap.logins[0].value["state"] == "locked");
  REQUIRE(snap.failures.size() == 2);
  std::sort(snap.failures.begin(), snap.failures.end(),
            [](const auto& x, const auto& y) { return x.kind < y.kind; });
  CHECK(snap.failures[0].kind == "ip");
  CHECK(snap.failures[0].key == "192.0.2.9");
  REQUIRE(snap.failures[0].entries.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(snap.failures[0].entries[i].at_ms == now - 1000 + i);  // oldest first
    CHECK(snap.failures[0].entries[i].id == ids[i]);
  }
  CHECK(snap.failures[1].kind == "login");
  CHECK(snap.failures[1].key == "bob@example.com");
  REQUIRE(snap.failures[1].entries.size() == 1);
  CHECK(snap.failures[1].entries[0].id == "given-id");
  REQUIRE(snap.sent.size() == 1);
  CHECK(snap.sent[0].key == "bob@example.com");
  REQUIRE(snap.sent[0].entries.size() == 2);
  CHECK(snap.sent[0].entries[0].count == 5);
  CHECK(snap.sent[0].entries[1].count == 2);
  CHECK(snap.sent[0].entries[1].at_ms == now + 1);

  SECTION("since_ms leaves out older entries") {
    done = false;
    REQUIRE(b.load_all(now - 1, [&](bool k, SharedSnapshot s) {
      done = k;
      snap = std::move(s);
    }));
    REQUIRE(loop.run_until([&] { return done; }, 3s));
    for (const auto& w : snap.failures)
      if (w.kind == "ip") CHECK(w.entries.size() == 1);
  }
  SECTION("a load is bounded by max_load_keys") {
    RedisLinkConfig cfg = config_for(server, "gw-c");
    cfg.max_load_keys = 2;
    cfg.scan_count = 1;
    Probe pc;
    RedisLink c(&loop.loop, cfg);
    pc.attach(c);
    REQUIRE(c.start().empty());
    REQUIRE(loop.run_until([&] { return c.up(); }, 3s));
    done = false;
    REQUIRE(c.load_all(0, [&](bool k, SharedSnapshot s) {
      done = k;
      snap = std::move(s);
    }));
    REQUIRE(loop.run_until([&] { return done; }, 3s));
    CHECK_FALSE(snap.complete);
    CHECK(snap.keys_read == 2);
    CHECK(pc.logged("full load stopped after 2 keys"));
  }
}

TEST_CASE("redis link: AUTH from a password file and a wrong one is down and never logged",
          "[redis]") {
  if (!have_redis()) return;
  const std::string secret = "s3cret-Pw-4e1f";
  const std::string wrong = "wr0ng-Pw-77aa";
  RedisServer server(secret);
  Loop loop;
  char tmpl[] = "/tmp/smtpgate-redispw-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  const std::string good_file = write_file(dir + "/good.pass", secret + "\r\nsecond line\n");
  const std::string bad_file = write_file(dir + "/bad.pass", wrong + "\n");

  Probe pg, pw, pn;
  RedisLinkConfig cfg = config_for(server, "gw-a");
  cfg.password_file = good_file;
  RedisLink good(&loop.loop, cfg);
  cfg.password_file = bad_file;
  RedisLink bad(&loop.loop, cfg);
  cfg.password_file.clear();
  RedisLink none(&loop.loop, cfg);
  pg.attach(good);
  pw.attach(bad);
  pn.attach(none);
  REQUIRE(good.start().empty());
  REQUIRE(bad.start().empty());
  REQUIRE(none.start().empty());
  REQUIRE(loop.run_until([&] { return good.up(); }, 3s));
  good.set_ban("192.0.2.3", {{"reason", "x"}}, now_ms() + 60000);
  REQUIRE(loop.run_until([&] { return flushed(good); }, 2s));
  CHECK(server.command({"EXISTS", "smtpgate:ban:192.0.2.3"}) == "1");

  // The wrong password and none at all: down, an error that says why, retrying.
  REQUIRE(loop.run_until([&] { return pw.logged("WRONGPASS") && pn.logged("NOAUTH"); }, 3s));
  loop.run_for(700ms);  // at least one retry
  CHECK_FALSE(bad.up());
  CHECK_FALSE(none.up());
  CHECK(pw.ups == 0);
  CHECK(pw.logged("refused the password from " + bad_file));
  CHECK(pn.logged("set shared.password_file"));
  bad.set_ban("192.0.2.4", {}, 0);
  CHECK(bad.queued() == 1);  // waits; nothing is lost or refused meanwhile

  // An unreadable file: start() says so (the path, not a content).
  cfg.password_file = dir + "/missing.pass";
  Probe pm;
  RedisLink missing(&loop.loop, cfg);
  pm.attach(missing);
  std::string why = missing.start();
  CHECK(why.find("cannot read the Redis password file " + dir + "/missing.pass") == 0);
  CHECK_FALSE(missing.up());

  // The password is in nothing any link logged, at any level.
  for (const Probe* p : {&pg, &pw, &pn, &pm}) {
    INFO(p->all());
    CHECK_FALSE(p->mentions(secret));
    CHECK_FALSE(p->mentions(wrong));
    CHECK_FALSE(p->mentions("second line"));
  }
  ::unlink(good_file.c_str());
  ::unlink(bad_file.c_str());
  ::rmdir(dir.c_str());
}

TEST_CASE("redis link: Redis killed and restarted: bounded queue then reconnect and flush",
          "[redis]") {
  if (!have_redis()) return;
  RedisServer server;
  Loop loop;
  Probe p;
  RedisLinkConfig cfg = config_for(server, "gw-a");
  cfg.max_queue = 50;
  cfg.backoff_max = 2s;  // the cap, and a short test
  RedisLink a(&loop.loop, cfg);
  p.attach(a);
  REQUIRE(a.start().empty());
  REQUIRE(loop.run_until([&] { return a.up(); }, 3s));

  // Writes sent but unanswered when the connection breaks are sent again: a stopped Redis
  // takes them into its socket buffer and never answers.
  server.signal(SIGSTOP);
  for (int i = 0; i < 5; ++i) a.set_ban("10.1.0." + std::to_string(i), {{"n", i}}, 0);
  bool load_done = false;
  bool load_ok = true;
  REQUIRE(a.load_all(0, [&](bool ok, SharedSnapshot) {
    load_done = true;
    load_ok = ok;
  }));
  loop.run_for(50ms);
  CHECK(a.in_flight() == 5);
  server.kill();
  REQUIRE(loop.run_until([&] { return !a.up(); }, 2s));
  CHECK(p.downs == 1);
  CHECK(a.in_flight() == 0);
  CHECK(a.queued() == 5);
  CHECK(load_done);  // an interrupted load ends, not ok: the owner loads again on up
  CHECK_FALSE(load_ok);
  CHECK(p.logged("lost Redis at 127.0.0.1:" + std::to_string(server.port())));
  // Reconnect attempts meet a closed port (refused) and keep going: no hang, no crash.
  loop.run_for(600ms);
  CHECK_FALSE(a.up());
  for (int i = 0; i < 80; ++i)
    a.set_ban("10.0.0." + std::to_string(i), {{"n", i}}, now_ms() + 60000);
  CHECK(a.queued() == 50);
  CHECK(a.dropped_total() == 35);  // the oldest: the 5 re-queued, then 30 of the new
  CHECK(p.logged("write queue full (50)"));

  server.start();  // same port
  const auto restarted = std::chrono::steady_clock::now();
  // The next attempt is at most one backoff step (capped at 2 s here) away.
  REQUIRE(loop.run_until([&] { return a.up(); }, 4s));
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - restarted);
  INFO("reconnected " << took.count() << " ms after the restart");
  CHECK(took < 3s);
  CHECK(p.ups == 2);
  CHECK(a.connects_total() == 2);
  CHECK(p.logged("35 writes were dropped while down", RedisLink::Level::Info));
  REQUIRE(loop.run_until([&] { return flushed(a); }, 2s));
  CHECK(server.command({"EXISTS", "smtpgate:ban:10.0.0.29"}) == "0");
  CHECK(server.command({"EXISTS", "smtpgate:ban:10.0.0.30"}) == "1");
  CHECK(server.command({"EXISTS", "smtpgate:ban:10.0.0.79"}) == "1");
  // One error line for the outage; the failed retries were detail.
  int errors = 0;
  for (const auto& [l, m] : p.logs)
    if (l == RedisLink::Level::Error && m.find("Redis at") != std::string::npos) ++errors;
  CHECK(errors == 1);
}

TEST_CASE("redis link: down at start then up over a unix socket and a stopped Redis found by PING",
          "[redis]") {
  if (!have_redis()) return;
  Loop loop;
  Probe p;
  // Nothing listens yet: refused connects (hiredis 0.14's own libuv adapter would wait for
  // ever on one), retried.
  RedisServer* server = nullptr;
  uint16_t port = free_port();
  RedisLinkConfig cfg;
  cfg.host = "127.0.0.1";
  cfg.port = port;
  cfg.instance = "gw-a";
  RedisLink early(&loop.loop, cfg);
  p.attach(early);
  REQUIRE(early.start().empty());
  loop.run_for(300ms);
  CHECK_FALSE(early.up());
  CHECK(p.logged("cannot use Redis at 127.0.0.1:" + std::to_string(port)));
  CHECK(p.downs == 0);  // never was up

  RedisServer real;
  server = &real;
  RedisLinkConfig ucfg;
  ucfg.unix_path = server->socket_path();
  ucfg.instance = "gw-u";
  ucfg.ping_interval = 200ms;
  Probe pu;
  RedisLink u(&loop.loop, ucfg);
  pu.attach(u);
  REQUIRE(u.start().empty());
  REQUIRE(loop.run_until([&] { return u.up(); }, 3s));
  CHECK(pu.logged("connected to unix:" + server->socket_path(), RedisLink::Level::Info));

  server->signal(SIGSTOP);  // no socket closes: only the PING notices
  REQUIRE(loop.run_until([&] { return !u.up(); }, 2s));
  CHECK(pu.logged("no answer to PING"));
  server->signal(SIGCONT);
  REQUIRE(loop.run_until([&] { return u.up(); }, 3s));
  CHECK(pu.ups == 2);
}
