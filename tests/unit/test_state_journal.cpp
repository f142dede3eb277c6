#include <catch2/catch.hpp>

#include <uv.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "proxy/state_journal.h"

using smtpgate::BanEntry;
using smtpgate::BanList;
using smtpgate::BruteForcePolicy;
using smtpgate::IpAddress;
using smtpgate::StateJournal;
using smtpgate::UnixMillis;

namespace fs = std::filesystem;

namespace {

constexpr UnixMillis kSec = 1000;
// Far in the future, so that compaction (which drops expired bans) keeps them.
constexpr UnixMillis kT0 = 4000000000LL * kSec;

IpAddress ip(const std::string& text) {
  auto a = IpAddress::parse(text);
  REQUIRE(a);
  return *a;
}

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/smtpgate-journal-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const char* name) const { return (path / name).string(); }
};

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

BanEntry entry(const std::string& addr, UnixMillis since, UnixMillis until, uint32_t offense,
               std::string reason = "r") {
  BanEntry e;
  e.ip = ip(addr);
  e.since = since;
  e.until = until;
  e.offense = offense;
  e.reason = std::move(reason);
  return e;
}

// A loop that runs the journal until it wrote `seq`, bounded; closes cleanly.
struct LoopFixture {
  uv_loop_t loop{};
  uv_timer_t guard{};
  LoopFixture() {
    uv_loop_init(&loop);
    uv_timer_init(&loop, &guard);
  }
  ~LoopFixture() {
    uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  void run_until(const StateJournal& j, uint64_t seq) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (j.done() < seq && std::chrono::steady_clock::now() < deadline) {
      uv_timer_start(
          &guard, [](uv_timer_t*) {}, 5, 0);
      uv_run(&loop, UV_RUN_ONCE);
    }
    REQUIRE(j.done() >= seq);
  }
};

}  // namespace

TEST_CASE("ban journal: load", "[state_journal]") {
  TempDir dir;
  const std::string path = dir.file("bans.json");

  SECTION("a missing file is an empty state") {
    BanList b;
    CHECK(StateJournal::load(path, &b) == "");
    CHECK(b.ban_count() == 0);
  }
  SECTION("records replay in order; a torn last record is ignored") {
    write_file(path,
               "{\"v\":2}\n"
               "{\"ban\":\"192.0.2.1\",\"since\":1000,\"until\":3601000,\"offense\":1,"
               "\"reason\":\"a\"}\n"
               "{\"ban\":\"192.0.2.2\",\"since\":1500,\"until\":3601500,\"offense\":2}\n"
               "{\"unban\":\"192.0.2.2\"}\n"
               "{\"history\":\"2001:db8::1\",\"offenses\":3,\"last_until\":900}\n"
               "{\"ban\":\"192.0.2.3\",\"since\":2000,\"unt");  // the crash came here
    BanList b;
    CHECK(StateJournal::load(path, &b) == "");
    CHECK(b.banned(ip("192.0.2.1"), 3600999));
    CHECK_FALSE(b.banned(ip("192.0.2.1"), 3601000));  // milliseconds, as recorded
    CHECK_FALSE(b.banned(ip("192.0.2.2"), 2000));     // lifted
    CHECK_FALSE(b.banned(ip("192.0.2.3"), 2000));     // never complete
    CHECK(b.history_count() == 3);
    BruteForcePolicy bf;
    CHECK(b.ban(ip("192.0.2.2"), 5000, bf, "again").offense == 3);  // escalation survives
    CHECK(b.ban(ip("2001:db8::1"), 5000, bf, "again").offense == 4);
    CHECK(fs::exists(path));  // left in place: the journal rewrites it when it starts
  }
  SECTION("the one-document format of earlier releases (seconds) migrates") {
    write_file(path, R"({"version": 1, "bans": [
        {"ip": "192.0.2.1", "since": 100, "until": 3700, "offense": 2, "reason": "old"}],
        "history": [{"ip": "192.0.2.1", "offenses": 2, "last_until": 3700}]})");
    BanList b;
    CHECK(StateJournal::load(path, &b) == "");
    REQUIRE(b.find(ip("192.0.2.1"), 3699 * kSec));
    CHECK(b.find(ip("192.0.2.1"), 3699 * kSec)->reason == "old");
    CHECK_FALSE(b.banned(ip("192.0.2.1"), 3700 * kSec));
  }
  SECTION("damage other than a torn last record moves the file aside") {
    const char* bad[] = {
        "{\"v\":2}\nnot json\n{\"unban\":\"192.0.2.1\"}\n",
        "{\"v\":2}\n{\"ban\":\"192.0.2.300\",\"since\":1,\"until\":2,\"offense\":1}\n",
        "{\"v\":2}\n{\"ban\":\"192.0.2.1\",\"since\":\"x\",\"until\":2,\"offense\":1}\n",
        "{\"v\":3}\n",
        "{\"ban\":\"192.0.2.1\",\"since\":1,\"until\":2,\"offense\":1}\n",  // no header
        "{\"version\": 1, \"bans\": [ {oops",
        "{\"v\":2}\n{\"what\":1}\n",
    };
    for (const char* text : bad) {
      INFO(text);
      for (const auto& f : fs::directory_iterator(dir.path)) fs::remove(f.path());
      write_file(path, text);
      BanList b;
      b.ban(ip("198.51.100.1"), 0, BruteForcePolicy{}, "kept?");
      const std::string err = StateJournal::load(path, &b);
      CHECK(err.find("is corrupt") != std::string::npos);
      CHECK(b.ban_count() == 0);  // starts with no bans
      CHECK_FALSE(fs::exists(path));
      size_t aside = 0;
      for (const auto& f : fs::directory_iterator(dir.path)) {
        CHECK(f.path().filename().string().starts_with("bans.json.corrupt-"));
        CHECK(read_file(f.path().string()) == text);
        ++aside;
      }
      CHECK(aside == 1);
    }
  }
}

TEST_CASE("ban journal: records reach the file, and survive a restart", "[state_journal]") {
  TempDir dir;
  const std::string path = dir.file("bans.json");
  BruteForcePolicy bf;
  BanList initial;
  initial.restore(entry("192.0.2.9", kT0 - 10 * kSec, kT0 + 3600 * kSec, 1, "loaded"));
  {
    LoopFixture f;
    int progress = 0;
    StateJournal j(&f.loop, path, initial, bf, false, [&] { ++progress; });
    j.record_ban(entry("192.0.2.1", kT0, kT0 + 3600 * kSec + 961, 1, "5 AUTH failures"));
    j.record_ban(entry("2001:db8::7", kT0, kT0 + 4 * 3600 * kSec, 2, "again \xff bytes"));
    j.record_unban(ip("192.0.2.9"));
    const uint64_t last = j.record_ban(entry("192.0.2.2", kT0, kT0 + 60 * kSec, 1));
    CHECK(last == 4);
    f.run_until(j, last);
    CHECK(progress >= 1);
    CHECK(j.write_errors() == 0);
    CHECK(j.last_error().empty());
    // On disk now, before close: what a kill -9 would leave.
    BanList reread;
    REQUIRE(StateJournal::load(path, &reread) == "");
    CHECK(reread.banned(ip("192.0.2.1"), kT0 + 3600 * kSec + 960));
    CHECK_FALSE(reread.banned(ip("192.0.2.1"), kT0 + 3600 * kSec + 961));
    CHECK(reread.find(ip("2001:db8::7"), kT0)->offense == 2);
    CHECK_FALSE(reread.banned(ip("192.0.2.9"), kT0));
    CHECK(reread.banned(ip("192.0.2.2"), kT0));
    // A later record is appended, one a line, after the rewrite the journal started with.
    f.run_until(j, j.record_unban(ip("192.0.2.2")));
    const std::string text = read_file(path);
    CHECK(text.starts_with("{\"v\":2}\n"));
    CHECK(text.ends_with("{\"unban\":\"192.0.2.2\"}\n"));
    j.close();
  }
  BanList after;
  REQUIRE(StateJournal::load(path, &after) == "");
  CHECK(after.active(kT0).size() == 2);
}

TEST_CASE("ban journal: compaction keeps the file proportional to the bans in force",
          "[state_journal]") {
  TempDir dir;
  const std::string path = dir.file("bans.json");
  BruteForcePolicy bf;
  LoopFixture f;
  StateJournal j(&f.loop, path, BanList{}, bf, false, [] {});
  // The same 50 addresses banned and lifted over and over: 4,000 records, 50 bans at most.
  uint64_t last = 0;
  for (int round = 0; round < 40; ++round) {
    for (int i = 0; i < 50; ++i) {
      const std::string a = "10.0.0." + std::to_string(i + 1);
      last = j.record_ban(entry(a, kT0, kT0 + 3600 * kSec, 1, std::string(100, 'x')));
      if (round < 39) last = j.record_unban(ip(a));
    }
    f.run_until(j, last);  // several batches, so several chances to compact
  }
  j.close();
  const auto size = fs::file_size(path);
  CHECK(size < 3 * StateJournal::kMinCompactBytes);  // appended: over 600 KB
  BanList b;
  REQUIRE(StateJournal::load(path, &b) == "");
  CHECK(b.active(kT0).size() == 50);
}

TEST_CASE("ban journal: a state file that cannot be written is counted, never fatal",
          "[state_journal]") {
  TempDir dir;
  const std::string path = dir.file("missing-dir/bans.json");
  LoopFixture f;
  StateJournal j(&f.loop, path, BanList{}, BruteForcePolicy{}, false, [] {});
  const uint64_t seq = j.record_ban(entry("192.0.2.1", kT0, kT0 + kSec, 1));
  f.run_until(j, seq);  // done, though not written: nobody waits forever
  CHECK(j.write_errors() >= 1);
  CHECK(j.last_error().find("missing-dir") != std::string::npos);
  j.close();
}

TEST_CASE(
    "state journal: login locks, known-good addresses and suspensions survive a restart "
    "and a compaction; a release lifts them",
    "[state_journal]") {
  using smtpgate::BreakerTrip;
  using smtpgate::LoginBreaker;
  using smtpgate::LoginGuard;
  using smtpgate::PerLoginPolicy;
  TempDir dir;
  const std::string path = dir.file("state.json");
  BruteForcePolicy bf;
  bf.per_login = PerLoginPolicy{};
  // Loaded at start: a lock the first rewrite must keep.
  LoginGuard initial;
  initial.restore_lock("old@example.com", kT0 + 3600 * kSec, 10, kT0);
  {
    LoopFixture f;
    StateJournal j(
        &f.loop, path, BanList{}, bf, false, [] {}, &initial, nullptr);
    j.record_login_lock("Guessed@Example.com", kT0 + 3600 * kSec, 10);
    j.record_known_good("owner@example.com", ip("192.0.2.7"), kT0);
    j.record_known_good("owner@example.com", ip("2001:db8:1::"), kT0 + kSec);
    smtpgate::Suspension s{"cms@example.com", kT0, "max_ips_per_hour", 6, 5};
    j.record_suspension(s);
    j.record_suspension({"gone@example.com", kT0, "max_rejected_rcpts_per_hour", 51, 50});
    f.run_until(j, j.record_login_release("gone@example.com"));
    j.close();
  }
  const std::string text = read_file(path);
  CHECK(text.find("\"login_lock\":\"guessed@example.com\"") != std::string::npos);
  LoginGuard logins;
  LoginBreaker breaker;
  BanList bans;
  REQUIRE(StateJournal::load(path, &bans, &logins, &breaker) == "");
  const PerLoginPolicy per;
  CHECK(logins.locked_until("old@example.com", kT0) == kT0 + 3600 * kSec);
  CHECK(logins.locked_until("guessed@example.com", kT0) == kT0 + 3600 * kSec);
  REQUIRE(logins.locks(kT0).size() == 2);
  CHECK(logins.locks(kT0)[0].failures == 10);
  // The owner's addresses are known-good: a lock would not apply to them.
  for (int i = 0; i < 10; ++i) logins.record_failure("owner@example.com", kT0 + 2 * kSec, per);
  CHECK(logins.locked_until("owner@example.com", kT0 + 2 * kSec) != 0);
  CHECK_FALSE(logins.locked_for("owner@example.com", ip("192.0.2.7"), kT0 + 3 * kSec, per));
  CHECK_FALSE(logins.locked_for("owner@example.com", ip("2001:db8:1::"), kT0 + 3 * kSec, per));
  CHECK(logins.locked_for("owner@example.com", ip("192.0.2.8"), kT0 + 3 * kSec, per));
  REQUIRE(breaker.suspended("cms@example.com"));
  CHECK(breaker.suspended("cms@example.com")->trigger == "max_ips_per_hour");
  CHECK(breaker.suspended("gone@example.com") == nullptr);

  // A compaction (the first pass of a new journal rewrites the file) keeps all of it.
  {
    LoopFixture f;
    StateJournal j(
        &f.loop, path, bans, bf, false, [] {}, &logins, &breaker);
    f.run_until(j, j.record_login_release("guessed@example.com"));
    j.close();
  }
  LoginGuard again;
  LoginBreaker again_breaker;
  REQUIRE(StateJournal::load(path, &bans, &again, &again_breaker) == "");
  CHECK(again.locked_until("guessed@example.com", kT0) == 0);
  CHECK(again.locked_until("old@example.com", kT0) == kT0 + 3600 * kSec);
  CHECK(again_breaker.suspended("cms@example.com"));
  CHECK_FALSE(again.locked_for("owner@example.com", ip("192.0.2.7"), kT0 + 3 * kSec, per));
  // A version of the file that knows only bans (no login pointers) reads it all the same.
  BanList only;
  CHECK(StateJournal::load(path, &only) == "");
}

TEST_CASE("state journal: explain's read-only load never moves a damaged file", "[state_journal]") {
  TempDir dir;
  const std::string path = dir.file("state.json");
  write_file(path, "{\"v\":2}\n{\"suspend\":\"x@example.com\"}\n");
  BanList b;
  smtpgate::LoginGuard g;
  smtpgate::LoginBreaker br;
  CHECK_FALSE(StateJournal::load(path, &b, &g, &br, true).empty());
  CHECK(fs::exists(path));
}
