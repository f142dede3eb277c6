// Whether the backend answers, for GET /readyz: a connection to the backend that waits for
// its 220 greeting and says QUIT. Probes run only when readiness is asked for (at most one per
// kInterval), so a gateway nobody asks costs the backend nothing.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "proxy/connection.h"
#include "proxy/smtp/reply_parser.h"
#include "proxy/timer.h"

namespace smtpgate {

class BackendProbe final : public Connection::Handler, public Timer::Handler {
 public:
  static constexpr std::chrono::milliseconds kInterval{10000};
  static constexpr std::chrono::milliseconds kTimeout{5000};  // connect and greeting

  explicit BackendProbe(uv_loop_t* loop) : loop_(loop) {}
  BackendProbe(const BackendProbe&) = delete;
  BackendProbe& operator=(const BackendProbe&) = delete;

  void set_address(const sockaddr_storage& addr) { addr_ = addr; }
  void stop();

  // "" when the last probe saw the backend's greeting, else why not. Starts a probe when the
  // last one is older than kInterval (its result answers the next question).
  std::string check(uint64_t now_ms);

  // Connection::Handler
  void on_connected(Connection& c, int status) override;
  void on_data(Connection& c, std::string_view data) override;
  void on_eof(Connection& c, int status) override;
  void on_drained(Connection&) override {}
  // Timer::Handler
  void on_timer(Timer& t) override;

 private:
  void probe();
  void done(bool ok, std::string why);

  uv_loop_t* loop_;
  sockaddr_storage addr_{};
  HandlePtr<Connection> conn_;
  HandlePtr<Timer> timer_;
  smtp::ReplyParser parser_;
  bool running_ = false;  // a probe is under way
  bool ok_ = false;
  bool probed_ = false;
  uint64_t last_probe_ms_ = 0;  // when the last probe started
  std::string last_error_ = "backend not probed yet";
};

}  // namespace smtpgate
