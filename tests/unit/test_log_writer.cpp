#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "proxy/log_writer.h"

using smtpgate::LogWriter;
using namespace std::chrono_literals;

namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
  // Everything readable now, without blocking.
  std::string drain() {
    ::fcntl(r, F_SETFL, O_NONBLOCK);
    std::string out;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(r, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }
};

std::string notice(uint64_t n) {
  return "dropped " + std::to_string(n) + "\n";
}

}  // namespace

TEST_CASE("log writer: lines arrive whole and in order", "[log_writer]") {
  Pipe p;
  {
    LogWriter w(p.w, notice);
    for (int i = 0; i < 1000; ++i) REQUIRE(w.push("line " + std::to_string(i) + "\n"));
    REQUIRE(w.drain(5s));
    CHECK(w.dropped_total() == 0);
  }
  std::string all = p.drain();
  std::string expected;
  for (int i = 0; i < 1000; ++i) expected += "line " + std::to_string(i) + "\n";
  CHECK(all == expected);
}

TEST_CASE(
    "log writer: a sink nobody reads never blocks the caller; drops are counted and "
    "reported once it recovers",
    "[log_writer]") {
  // A failed REQUIRE closes the pipe under a writer that may still be writing.
  signal(SIGPIPE, SIG_IGN);
  Pipe p;
  LogWriter w(p.w, notice);
  const std::string line(200, 'x');
  const std::string with_nl = line + "\n";
  // 64 KiB fit the pipe, 1 MiB the queue: 20,000 lines (4 MB) cannot all fit.
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t refused = 0;
  for (int i = 0; i < 20000; ++i) refused += w.push(with_nl) ? 0 : 1;
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < 2s);  // never waited on the pipe
  CHECK(refused > 0);
  CHECK(w.dropped_total() == refused);
  CHECK_FALSE(w.drain(50ms));  // still stuck
  // The reader comes back: the queue flows, then the notice.
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (got.find("dropped ") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    got += p.drain();
    std::this_thread::sleep_for(1ms);
  }
  // The writer may still hold up to a full queue (1 MiB) behind the notice, more than the
  // pipe takes: keep reading until it is written.
  while (!w.drain(1ms) && std::chrono::steady_clock::now() < deadline) got += p.drain();
  REQUIRE(w.drain(0ms));
  got += p.drain();
  CHECK(got.find("dropped " + std::to_string(refused) + "\n") != std::string::npos);
  // Whole lines only.
  size_t lines = 0;
  for (size_t at = 0; at < got.size();) {
    size_t nl = got.find('\n', at);
    REQUIRE(nl != std::string::npos);
    std::string_view l(got.data() + at, nl - at);
    CHECK((l == line || l.starts_with("dropped ")));
    lines += l == line;
    at = nl + 1;
  }
  CHECK(lines + refused == 20000);
}

TEST_CASE("log writer: a failing sink counts its lines as dropped", "[log_writer]") {
  Pipe p;
  ::close(p.r);  // writes now fail with EPIPE (SIGPIPE is ignored by the gateway)
  p.r = -1;
  signal(SIGPIPE, SIG_IGN);
  LogWriter w(p.w, notice);
  REQUIRE(w.push("a\n"));
  REQUIRE(w.push("b\n"));
  REQUIRE(w.drain(5s));
  CHECK(w.write_errors() >= 1);
  CHECK(w.dropped_total() == 2);
}
