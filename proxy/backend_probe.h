// Whether the backend answers, for GET /readyz: every kInterval a connection to the backend
// that waits for its 220 greeting and says QUIT. Readiness is the last probe's result while
// it is fresh; /healthz stays liveness (the gateway itself serves).
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

  // Probes `addr` now and every kInterval (the address may change with a reload).
  void start(const sockaddr_storage& addr);
  void set_address(const sockaddr_storage& addr) { addr_ = addr; }
  void stop();

  // "" when the backend greeted within the last 3 intervals, else why not.
  std::string not_ready(uint64_t now_ms) const;

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
  uint64_t last_ok_ms_ = 0;
  std::string last_error_ = "backend not probed yet";
};

}  // namespace smtpgate
