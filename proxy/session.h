// One client's SMTP session: the dialogue, policy enforcement at every stage, and the
// relay of accepted transactions to the backend.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policy/engine.h"
#include "proxy/backend_client.h"
#include "proxy/connection.h"
#include "proxy/log.h"
#include "proxy/smtp/body_filter.h"
#include "proxy/smtp/command.h"
#include "proxy/smtp/line_reader.h"
#include "proxy/smtp/sasl.h"
#include "proxy/timer.h"

namespace smtpgate {

class Gateway;
struct ListenerRuntime;
struct RuntimeConfig;

class Session final : public Connection::Handler,
                      public Timer::Handler,
                      public BackendClient::Events {
 public:
  // Hard limits (named, not tunable; SPEC §3 "Hostile and broken peers"). Together they bound
  // a session's memory whatever the client or the backend does (README: "Memory per session").
  // Unprocessed client input held while waiting (on the backend, or on the client to read).
  static constexpr size_t kMaxHeldInput = 64 * 1024;
  // Error replies before the session is dropped.
  static constexpr int kMaxErrors = 20;
  // Junk commands (NOOP, RSET, HELP, VRFY, EHLO/HELO, unknown) since the last MAIL that
  // passed policy: one more gets 421 and the session is closed (Postfix's default).
  static constexpr int kMaxJunkCommands = 100;
  // Body bytes queued toward the backend before the client is paused.
  static constexpr size_t kMaxBackendQueue = 256 * 1024;
  // Reply bytes owed to a client that does not read them: past this no further command is
  // executed and the client is not read until it drains (closed after timeouts.command).
  static constexpr size_t kMaxOwedOutput = 64 * 1024;
  // Replies owed at once (pipelined commands whose answers are not written yet).
  static constexpr size_t kMaxPendingReplies = 128;

  Session(Gateway& gw, ListenerRuntime& listener, std::shared_ptr<const RuntimeConfig> config);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Accepts the pending connection on `server` and greets (or refuses) the client.
  void start(uv_stream_t* server);
  // Graceful stop: an idle session gets 421 and is closed; a busy one finishes its reply.
  void drain();
  // Shutdown after the drain period: closes at once (an unfinished message is not delivered).
  void abandon() { finish("shutdown"); }
  // The state-file record of the ban this session caused is on disk: its reply may go out.
  void on_ban_recorded() { flush(); }
  const IpAddress& client_ip() const { return facts_.client; }
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

 private:
  enum class Phase : uint8_t { Command, Sasl, Data, Closing };
  enum class SaslStep : uint8_t { None, PlainResponse, LoginUser, LoginPassword };

  // A reply owed to the client, in command order; backend replies fill theirs later.
  struct Slot {
    std::string text;
    bool ready = false;
    // The reply to EHLO/HELO or DATA: the client may send nothing until it has it (RFC 2920).
    bool sync = false;
    BackendClient::Tag tag = BackendClient::Tag::Mail;
  };

  struct Transaction {
    bool active = false;  // MAIL accepted by policy and forwarded
    MailPath sender;
    uint32_t rcpt_forwarded = 0;
    uint32_t rcpt_accepted = 0;  // backend said 2xx
    std::string first_rcpt;
    bool smtputf8 = false;  // MAIL had SMTPUTF8: non-ASCII recipients are allowed
    // The backend failed with a protocol error during the transaction: its later commands get
    // 451 until the client starts over (RSET, EHLO).
    bool backend_broken = false;
    // Back to empty, keeping the strings' buffers for the next transaction.
    void clear() {
      active = false;
      smtputf8 = false;
      backend_broken = false;
      sender.null = false;
      sender.local.clear();
      sender.domain.clear();
      sender.has_source_route = false;
      rcpt_forwarded = 0;
      rcpt_accepted = 0;
      first_rcpt.clear();
    }
  };

  // input
  size_t process();  // runs held input; returns the bytes used
  void pump();       // process() while the client keeps up, then flush and update reading
  size_t process_bytes(std::string_view in);
  void handle_line(std::string_view line, bool more_input);
  void handle_command(const smtp::Command& cmd, std::string_view line, bool more_input);
  // Reading goes on only while the session can take more input (bounded held input, owed
  // output and backend queue).
  void update_reading();
  bool output_full() const;
  size_t replies_pending() const { return slots_.size() - slot_head_; }
  // A reply the client must wait for (EHLO/HELO, DATA) is not written yet.
  std::optional<Stage> awaiting_sync_reply() const;
  // Protocol violations that end the session (SPEC §3): logged as decisions with their rule.
  void refuse_protocol(Stage stage, std::string_view rule, std::string_view reason, const Reply& r,
                       std::string_view state);
  bool check_pregreet();  // true when the client talked first and was refused
  void refuse_at_connect(std::string text);
  void handle_sasl_line(std::string_view line);
  void handle_body(std::string_view& in);

  // commands
  void cmd_helo(const smtp::Command& cmd, bool esmtp);
  void cmd_mail(const smtp::Command& cmd, std::string_view line);
  void cmd_rcpt(const smtp::Command& cmd, std::string_view line);
  void cmd_data();
  void cmd_rset();
  void cmd_auth(const smtp::Command& cmd);
  void cmd_starttls();
  void start_tls_now();
  void greet();
  void cmd_quit();
  void run_deferred();

  // AUTH
  void auth_with(smtp::Credentials creds);
  void auth_failed_locally(std::string_view reply, bool counts);
  void count_auth_failure(std::string_view sent_reply);

  // replies
  void reply(std::string_view text, bool sync = false);  // complete line(s), with CRLF
  void reply(const Reply& r);
  void write_to_client(std::string_view text);  // queued; counted in bytes_out
  Slot& add_backend_slot(BackendClient::Tag tag);
  void log_message(std::string_view from, uint64_t size, uint32_t recipients,
                   std::string_view reply_text, bool delivered);
  void fill_slot(std::string_view text);
  void flush_slots();
  void flush();
  void reply_error(std::string_view text);  // a client error: replied and counted
  void reply_error(const Reply& r);

  // backend
  bool ensure_backend();
  void reset_transaction();
  void send_received_header();

  // policy and log
  bool apply(const Decision& d);  // logs non-allow decisions; true when it blocks
  void log_decision(const Decision& d);
  void update_log_prefix();  // the session's fields, rendered once for every log line
  void arm_command_timer();
  void set_deadline(std::chrono::milliseconds after);
  void suspend_deadline();

  // end
  void close_after_flush(std::string_view state = "closed");
  void finish(std::string_view state);

  Gateway& gw_;
  std::shared_ptr<const RuntimeConfig> config_;  // the load this session started with
  PolicySnapshot policy_;
  const Listener& listener_;
  Connection* client_ = nullptr;
  Timer* timer_ = nullptr;
  BackendClient backend_;

  std::string id_;
  SessionFacts facts_;
  Endpoint peer_, local_;
  std::string client_text_;  // "1.2.3.4:5678"
  std::string log_prefix_;
  std::string helo_;
  bool esmtp_ = false;
  bool helo_seen_ = false;
  bool backend_auth_lost_ = false;  // an authenticated session's backend connection dropped

  smtp::LineReader reader_;
  std::string input_;  // client bytes not processed yet (while waiting on the backend)
  Phase phase_ = Phase::Command;
  SaslStep sasl_ = SaslStep::None;
  std::string sasl_login_;  // AUTH LOGIN: the login while the password is asked
  bool blocked_ = false;    // waiting on the backend before reading further commands
  // A command that waits for every earlier reply: DATA (are there accepted recipients?)
  // or STARTTLS (nothing may be pending when the session switches to TLS).
  smtp::Verb deferred_ = smtp::Verb::Unknown;
  bool has_deferred_ = false;
  bool discard_input_ = false;  // STARTTLS: plaintext after the command is never executed
  std::string tls_version_, tls_cipher_;
  std::vector<Slot> slots_;
  size_t slot_head_ = 0;
  int errors_ = 0;

  Transaction txn_;
  std::optional<smtp::BodyFilter> body_;  // during DATA
  // The backend failed during DATA and the client has its 4xx already: the rest of the body is
  // read and discarded, and nothing more is said at its end (the session closes after a 421).
  bool data_answered_ = false;
  bool close_after_data_ = false;
  int junk_ = 0;                  // junk commands since the last MAIL that passed policy
  bool first_line_seen_ = false;  // an HTTP request is recognised on the first line only
  size_t slot_bytes_ = 0;         // text held in slots, counted in the owed output
  // A refusal waiting for the TLS handshake (implicit-TLS listeners: handshake first).
  std::string refusal_after_tls_;

  std::chrono::steady_clock::time_point started_;
  uint64_t bytes_in_ = 0, bytes_out_ = 0;
  uint32_t messages_ = 0;
  Deadline deadline_;  // when the client's time is up (timer_)
  bool close_when_flushed_ = false;
  bool flushing_ = false;  // inside flush(): the client connection's drained event waits
  // The ban this session caused: its reply waits until the record is on disk, so a crash
  // right after the client heard it cannot lose the ban (0: nothing to wait for).
  uint64_t ban_record_ = 0;
  bool counted_ = false;                     // connection_opened() was reported
  std::string_view close_state_ = "closed";  // static strings only
  std::string discard_;     // body bytes of a message that can no longer be delivered
  uint64_t last_size_ = 0;  // the message whose final reply is awaited
  uint32_t last_rcpts_ = 0;
  std::string last_sender_;
  bool finished_ = false;
  bool draining_ = false;

  // Kept by their owners: whether Gateway::admit counted this session (released once, in
  // finish()), and where the registry holds it.
  friend class Gateway;
  friend class SessionRegistry;
  bool admitted_ = false;
  std::list<std::unique_ptr<Session>>::iterator registry_pos_;
};

}  // namespace smtpgate
