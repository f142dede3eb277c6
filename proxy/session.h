// One client's session: the I/O shell around its SMTP dialogue (proxy/smtp/dialogue.h). It
// owns the client connection, the backend connection and the timer, turns client bytes into
// lines (or streams the body straight to the backend), and carries out what the dialogue asks.
//
// Re-entrancy: an event that arrives while the session is already inside one of its own
// calls (a write that fails at once, a backend connect that fails synchronously) is noted
// and handled when the outermost call returns, so no handler ever runs under another and
// input is never walked twice.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include "proxy/backend_client.h"
#include "proxy/connection.h"
#include "proxy/session_services.h"
#include "proxy/smtp/body_filter.h"
#include "proxy/smtp/dialogue.h"
#include "proxy/smtp/line_reader.h"
#include "proxy/timer.h"

namespace smtpgate {

class Gateway;
class Worker;
struct ListenerRuntime;
struct RuntimeConfig;

class Session final : public Connection::Handler,
                      public Timer::Handler,
                      public BackendClient::Events,
                      public smtp::DialogueIo {
 public:
  // Hard limits (named, not tunable; SPEC §3 "Hostile and broken peers"). With the
  // dialogue's they bound a session's memory whatever the peers do (README: "Memory per
  // session"). Unprocessed client input held while waiting (on the backend, or on the client
  // to read its replies).
  static constexpr size_t kMaxHeldInput = 64 * 1024;
  // A PROXY header must arrive this soon after the connection (SPEC §8).
  static constexpr std::chrono::seconds kProxyHeaderTime{10};
  // Body bytes queued toward the backend before the client is paused.
  static constexpr size_t kMaxBackendQueue = 256 * 1024;
  // Reply bytes owed to a client that does not read them: past this no further command is
  // executed and the client is not read until it drains (closed after timeouts.command).
  static constexpr size_t kMaxOwedOutput = 64 * 1024;
  // Replies owed at once (pipelined commands whose answers are not written yet).
  static constexpr size_t kMaxPendingReplies = 128;

  Session(Gateway& gw, Worker& worker, ListenerRuntime& listener,
          std::shared_ptr<const RuntimeConfig> config);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Accepts the pending connection on `server` and greets (or refuses) the client.
  // The connection libuv holds on `server`, or a socket accepted by another loop (`fd`).
  void start(uv_stream_t* server);
  void start_adopted(int fd);
  // Graceful stop: an idle session gets 421 and is closed; a busy one finishes its reply.
  void drain();
  // Shutdown after the drain period: closes at once (an unfinished message is not delivered).
  void abandon() { finish("shutdown"); }
  // The state-file record of the ban this session caused is on disk: its reply may go out.
  void on_ban_recorded();
  const IpAddress& client_ip() const { return peer_.ip; }
  bool finished() const { return finished_; }

  // Connection::Handler (client side)
  void on_connected(Connection&, int) override {}
  void on_data(Connection& c, std::string_view data) override;
  void on_eof(Connection& c, int status) override;
  void on_drained(Connection& c) override;
  void on_tls_ready(Connection& c) override;
  void on_tls_failed(Connection& c, const std::string& reason) override;
  // Timer::Handler
  void on_timer(Timer& t) override;
  // BackendClient::Events
  void on_backend_ready() override {}
  void on_backend_reply(BackendClient::Tag tag, const smtp::BackendReply& reply) override;
  void on_backend_failed(const std::string& why, bool protocol_error) override;
  void on_backend_drained() override;

  // smtp::DialogueIo
  void write(std::string_view bytes) override;
  size_t peek_client(char* buf, size_t n) override;
  bool backend_open() override;
  bool backend_idle() const override { return backend_.idle(); }
  void backend_send(smtp::BackendCommand cmd, std::string_view line, bool add_crlf) override {
    backend_.send(cmd, line, add_crlf);
  }
  bool backend_auth(std::string_view login, std::string_view password) override {
    return backend_.authenticate(login, password);
  }
  void backend_abort() override { backend_.abort(); }
  void backend_quit() override { backend_.quit(); }
  void start_body(std::string_view prefix) override;
  void discard_body() override { discard_body_ = true; }
  uint64_t body_bytes() const override { return body_ ? body_->body_bytes() : 0; }
  void start_tls() override;
  void set_deadline(std::chrono::milliseconds after) override;
  void clear_deadline() override { deadline_.clear(); }
  void close_after_output(std::string_view state) override;

 private:
  // Entered by every event handler: events that arrive while depth_ > 0 are posted and run
  // when the outermost handler returns.
  class Scope {
   public:
    explicit Scope(Session& s) : s_(s) { ++s_.depth_; }
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Session& s_;
  };
  struct Posted {
    bool any = false;
    std::optional<int> eof;  // the client's read or write failed (status)
    bool backend_failed = false;
    bool backend_protocol_error = false;
    std::string backend_why;
    bool backend_drained = false;
    bool drained = false;  // the client's output drained (start_tls flushes inside a call)
  };
  void run_posted();

  // input
  void pump();  // runs held input while the client keeps up, flushes, updates reading
  size_t process();
  size_t process_bytes(std::string_view in);
  void relay_body(std::string_view& in);
  void update_reading();
  bool output_full() const;

  void accepted();  // the client's socket is ours: addresses, then PROXY header or begin()
  // After accept, or once a PROXY header named the client: the dialogue starts.
  void begin();
  // Inbound PROXY protocol (listener.proxy_protocol, SPEC §8): the header comes first, from a
  // trusted proxy, within kProxyHeaderTime; anything else closes without a byte sent.
  void await_proxy_header();
  void on_proxy_bytes(std::string_view data);
  void refuse_proxy(std::string_view result, const std::string& reason);

  void flush();
  void client_gone(int status);
  void client_drained();  // every reply reached the kernel
  void backend_gone(const std::string& why, bool protocol_error);
  void finish(std::string_view state);

  Gateway& gw_;
  Worker& worker_;                               // the loop this session lives on
  std::shared_ptr<const RuntimeConfig> config_;  // the load this session started with
  const Listener& listener_;
  HandlePtr<Connection> client_;
  HandlePtr<Timer> timer_;
  BackendClient backend_;
  Endpoint peer_, local_;
  SessionServices services_;
  std::optional<smtp::Dialogue> dialogue_;  // once the client's address is known
  bool awaiting_proxy_ = false;             // no PROXY header yet
  std::string proxy_bytes_;                 // a header split across reads (bounded)

  smtp::LineReader reader_;
  std::string input_;                     // client bytes not processed yet (while waiting)
  bool in_process_ = false;               // process_bytes() is walking client input
  bool discard_input_ = false;            // STARTTLS: plaintext after the command is never executed
  std::optional<smtp::BodyFilter> body_;  // during DATA
  bool discard_body_ = false;             // the message failed: body bytes are dropped
  std::string discard_;

  std::chrono::steady_clock::time_point started_;
  uint64_t bytes_in_ = 0, bytes_out_ = 0;
  Deadline deadline_;  // when the client's time is up (timer_)
  bool close_when_flushed_ = false;
  std::string_view close_state_ = "closed";  // static strings only
  bool flushing_ = false;  // inside flush(): the client's drained event is flush's to handle
  // The ban this session caused: its reply waits until the record is on disk, so a crash
  // right after the client heard it cannot lose the ban (0: nothing to wait for).
  uint64_t ban_record_ = 0;
  bool counted_ = false;  // connection_opened() was reported
  bool finished_ = false;
  int depth_ = 0;
  Posted posted_;

  // Kept by their owners: whether Gateway::admit counted this session (released once, in
  // finish()), and where the registry holds it.
  friend class Gateway;
  friend class SessionRegistry;
  bool admitted_ = false;
  std::list<std::unique_ptr<Session>>::iterator registry_pos_;
};

}  // namespace smtpgate
