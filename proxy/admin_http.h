// The admin endpoint's HTTP/1.1 server on the loop: one bounded request per connection,
// answered by a synchronous handler, then closed. Not a general web server: it exists so
// that /metrics, /bans and /reload can be reached without blocking the SMTP traffic.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/timer.h"

namespace smtpgate {

struct AdminResponse {
  AdminResponse() = default;
  // So that `return {404, "text/plain", "not found\n"};` needs no `allow`.
  AdminResponse(int status_code, std::string type, std::string text, std::string allowed = {})
      : status(status_code),
        content_type(std::move(type)),
        body(std::move(text)),
        allow(std::move(allowed)) {}

  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::string allow;  // for 405: the methods the path does support, e.g. "GET"
};

class AdminServer final : public Timer::Handler {
 public:
  class Handler {
   public:
    // `path` is the request target without its query string, `query` what followed the '?'
    // (both not percent-decoded). `method` is GET, POST or DELETE (others get 405).
    virtual AdminResponse handle(std::string_view method, std::string_view path,
                                 std::string_view query) = 0;

   protected:
    ~Handler() = default;
  };

  static constexpr size_t kMaxRequestHead = 8 * 1024;                 // larger: 431
  static constexpr size_t kMaxConnections = 64;                       // more are closed at once
  static constexpr std::chrono::milliseconds kRequestTimeout{10000};  // whole request
  // After an error answered before the request was read whole, how long unread input is
  // drained (our side already shut down) so that closing does not reset the connection
  // under the client's reply.
  static constexpr std::chrono::milliseconds kLinger{2000};
  static constexpr size_t kMaxLingerBytes = 1 << 20;

  AdminServer(uv_loop_t* loop, Handler& handler);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // host is an IP literal without brackets ("127.0.0.1", "::1"); port 0 picks a free port.
  // Returns an error message, or "" when listening.
  std::string listen(const std::string& host, uint16_t port);
  uint16_t port() const { return port_; }  // the bound port once listening
  // Tests shorten the deadlines; applies to connections accepted afterwards.
  void set_timeouts(std::chrono::milliseconds request, std::chrono::milliseconds linger) {
    request_timeout_ = request;
    linger_timeout_ = linger;
  }
  bool listening() const { return listener_ != nullptr; }
  size_t connections() const { return clients_.size(); }

  // Stops listening and closes every admin connection; their handles free themselves on
  // the loop. Safe to call twice and from a handler.
  void close();

  class Client;  // one admin connection; defined in admin_http.cpp

 private:
  void on_timer(Timer& t) override;  // the reaper
  static void on_connection(uv_stream_t* server, int status);
  void accept();
  void retire(Client* c);  // deleted on a later loop turn, never under its own callback

  uv_loop_t* loop_;
  Handler& handler_;
  uv_tcp_t* listener_ = nullptr;  // self-freeing once closed
  uint16_t port_ = 0;
  std::chrono::milliseconds request_timeout_ = kRequestTimeout;
  std::chrono::milliseconds linger_timeout_ = kLinger;
  HandlePtr<Timer> reaper_;
  std::list<std::unique_ptr<Client>> clients_;
  std::vector<std::unique_ptr<Client>> retired_;
};

// "Not Found" for 404 and so on; "" for codes it does not know.
std::string_view http_reason(int status);

}  // namespace smtpgate
