// The session's connection to the backend mail server: connect, banner, EHLO, client
// address (XCLIENT / PROXY header), then commands whose replies come back in order.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "policy/policy.h"
#include "proxy/connection.h"
#include "proxy/fifo.h"
#include "proxy/proxy_protocol.h"
#include "proxy/smtp/reply_check.h"
#include "proxy/smtp/reply_parser.h"
#include "proxy/timer.h"

namespace smtpgate {

class BackendClient final : public Connection::Handler, public Timer::Handler {
 public:
  // What a reply answers; the session decides what to do with it. Every reply is checked
  // against its command (smtp::reply_fits) before the session sees it.
  using Tag = smtp::BackendCommand;

  class Events {
   public:
    virtual void on_backend_ready() = 0;
    virtual void on_backend_reply(Tag tag, const smtp::BackendReply& reply) = 0;
    // The connection is gone (refused, dropped, timed out, protocol error); every reply
    // still expected is lost. `protocol_error`: the backend said something out of turn.
    virtual void on_backend_failed(const std::string& why, bool protocol_error) = 0;
    virtual void on_backend_drained() = 0;

   protected:
    ~Events() = default;
  };

  // Everything the backend needs to hear about the client.
  struct ClientInfo {
    Endpoint client;
    Endpoint local;  // where the client connected
    std::string helo;
    bool esmtp = true;
  };

  BackendClient(uv_loop_t* loop, Events* events) : loop_(loop), events_(events) {}
  ~BackendClient();
  BackendClient(const BackendClient&) = delete;
  BackendClient& operator=(const BackendClient&) = delete;

  // Starts a connection (state Connecting); on_backend_ready() or on_backend_failed() follows.
  // `tls`: the client context when backend.tls is starttls or implicit.
  void connect(const Policy& policy, const sockaddr_storage& addr, const ClientInfo& client,
               std::shared_ptr<const TlsContext> tls);
  bool idle() const { return state_ == State::Idle; }
  bool ready() const { return state_ == State::Ready; }
  const smtp::EhloCapabilities& capabilities() const { return caps_; }

  // Queues a command line (with CRLF) whose reply is delivered with `tag`. Commands given
  // before the connection is ready are sent once it is.
  // `add_crlf`: `line` comes without its CRLF (a client's command line as parsed).
  void send(Tag tag, std::string_view line, bool add_crlf = false);
  // AUTH with the client's credentials, by a mechanism the backend offers (PLAIN, else
  // LOGIN); the final reply comes as Tag::Auth. Returns false when the backend offers none.
  bool authenticate(std::string_view login, std::string_view password);
  // Message bytes during DATA: no reply expected.
  void write_body(std::string_view bytes) {
    if (conn_) conn_->write(bytes);
  }
  // Like body_buffer, but what is appended waits for the next body bytes (or command)
  // instead of going out in a write (and a wakeup of the backend) of its own.
  std::string* held_body_buffer() {
    if (!conn_) return nullptr;
    hold_flush_ = true;
    return &conn_->out_buffer();
  }
  std::string* body_buffer() {
    hold_flush_ = false;
    return conn_ ? &conn_->out_buffer() : nullptr;
  }
  void flush() {
    if (conn_ && !hold_flush_) conn_->flush();
  }
  size_t queued_bytes() const { return conn_ ? conn_->queued_bytes() : 0; }
  // How long the reply just delivered took, from its command (or the previous reply).
  double last_reply_seconds() const { return last_reply_seconds_; }

  // Closes at once: a message in DATA is never completed (no final dot), so not delivered.
  void abort();
  // Polite end: QUIT if idle between transactions, then close.
  void quit();

  // Connection::Handler
  void on_connected(Connection& c, int status) override;
  void on_data(Connection& c, std::string_view data) override;
  void on_eof(Connection& c, int status) override;
  void on_drained(Connection& c) override;
  void on_tls_ready(Connection& c) override;
  void on_tls_failed(Connection& c, const std::string& reason) override;
  // Timer::Handler
  void on_timer(Timer& t) override;

 private:
  enum class State : uint8_t {
    Idle,
    Connecting,
    TlsHandshake,
    Banner,
    Ehlo,
    StartTls,
    Xclient,
    Ready
  };
  enum class AuthStep : uint8_t { None, PlainSent, LoginSent, LoginUserSent, LoginPassSent };

  bool must_hold() const;
  void write_command(Tag tag, std::string_view line, bool add_crlf);
  void write_auth();  // AUTH with auth_user_/auth_pass_, by the mechanism the backend offers
  void handle_reply(const smtp::BackendReply& r);
  void handle_auth_reply(const smtp::BackendReply& r);
  void write_line(std::string_view line);
  void send_ehlo();
  void become_ready();
  void release_held();
  void fail(const std::string& why, bool protocol_error);
  void close_connection();
  void arm_reply_timer(Tag tag);
  void set_deadline(std::chrono::milliseconds after);

  uv_loop_t* loop_;
  Events* events_;
  HandlePtr<Connection> conn_;
  HandlePtr<Timer> timer_;
  Deadline deadline_;  // when the backend's time is up (timer_)
  State state_ = State::Idle;
  smtp::ReplyParser parser_;
  smtp::EhloCapabilities caps_;
  Fifo<Tag> pending_;  // replies expected, in order
  // Commands not yet written: before Ready, or while a backend without PIPELINING has a
  // reply outstanding.
  Fifo<std::pair<Tag, std::string>> held_;
  AuthStep auth_step_ = AuthStep::None;
  uint64_t waiting_since_ns_ = 0;
  double last_reply_seconds_ = 0;
  std::string auth_user_, auth_pass_;  // only while an AUTH exchange runs; wiped after
  ClientInfo client_;
  ClientIpMode client_ip_ = ClientIpMode::None;
  BackendTls tls_mode_ = BackendTls::None;
  std::shared_ptr<const TlsContext> tls_ctx_;
  bool tls_up_ = false;
  bool hold_flush_ = false;  // see write_body_held
  bool drop_rest_ = false;   // after the backend's 220 to STARTTLS: ignore bytes sent in clear
  // Replies the bytes being read may still hold: those owed when they arrived. A reply beyond
  // that answers a command written after it was sent, so it was sent out of turn.
  size_t chunk_owed_ = 0;
  std::string ehlo_name_;
  std::chrono::milliseconds connect_timeout_{10000}, reply_timeout_{300000},
      data_done_timeout_{600000};
};

}  // namespace smtpgate
