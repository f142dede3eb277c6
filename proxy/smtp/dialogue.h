// One client's SMTP dialogue with no I/O: client lines and backend replies in, actions out
// (replies, commands for the backend, TLS, the body, the close). Every command's handling,
// including what its backend reply means, reads in one place here; the session (proxy/
// session.h) is the I/O shell that feeds it bytes and carries out what it asks.
//
// Calls go one way: the dialogue calls its DialogueIo and DialogueServices, and those never
// call the dialogue back from inside such a call (the shell posts whatever happens meanwhile
// until the dialogue has returned).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "policy/engine.h"
#include "policy/replies.h"
#include "proxy/smtp/body_filter.h"
#include "proxy/smtp/command.h"
#include "proxy/smtp/line_reader.h"
#include "proxy/smtp/reply_parser.h"
#include "proxy/smtp/reply_queue.h"
#include "proxy/smtp/sasl_exchange.h"

namespace smtpgate::smtp {

// What the dialogue does to the connections and the clock.
class DialogueIo {
 public:
  // Reply bytes for the client, in the order given (queued; the shell flushes).
  virtual void write(std::string_view bytes) = 0;
  // Bytes the client sent that nobody has read yet (a peek, not consumed): up to n, or 0.
  virtual size_t peek_client(char* buf, size_t n) = 0;

  // Connects to the backend unless a connection is open or opening. False: none can be had
  // now (the dialogue answers for it); a failure found later comes as on_backend_failed.
  virtual bool backend_open() = 0;
  virtual bool backend_idle() const = 0;
  // A command whose reply comes back as on_backend_reply(cmd, ...). `add_crlf`: `line` is a
  // client's command line as parsed, without its CRLF.
  virtual void backend_send(BackendCommand cmd, std::string_view line, bool add_crlf) = 0;
  // AUTH with the client's credentials (the reply comes as BackendCommand::Auth). False: the
  // backend offers no mechanism the gateway can use.
  virtual bool backend_auth(std::string_view login, std::string_view password) = 0;
  // Drops the backend connection at once (an unfinished message is never completed), or
  // ends it politely (QUIT).
  virtual void backend_abort() = 0;
  virtual void backend_quit() = 0;

  // After the 354: body bytes go to the backend behind `prefix` (the Received: header), through
  // the body filter, until the shell reports on_body_end().
  virtual void start_body(std::string_view prefix) = 0;
  // The message can no longer be delivered: the rest of the body is read and dropped.
  virtual void discard_body() = 0;
  virtual uint64_t body_bytes() const = 0;  // of the body under way, so far
  // The "220 Ready to start TLS" is written: the handshake starts, and plaintext the client
  // sent after STARTTLS is dropped unread.
  virtual void start_tls() = 0;

  // The client's time runs out `after` from now (on_timeout()); clear: no deadline while the
  // session waits on the backend, whose own timer bounds the wait.
  virtual void set_deadline(std::chrono::milliseconds after) = 0;
  virtual void clear_deadline() = 0;
  // Nothing more is read; the session ends (in `state`, a static string) once the client has
  // every reply, or when it does not read them within the command timeout.
  virtual void close_after_output(std::string_view state) = 0;

 protected:
  ~DialogueIo() = default;
};

// How a login went, for logs and metrics.
// FailedRepeated: credentials the backend rejected with a password this address already
// failed with for this login (brute_force.distinct_passwords): not counted again.
enum class AuthOutcome : uint8_t { Ok, Failed, Tempfail, Refused, FailedRepeated };

// What a decision was about, for its log line (empty when not known yet or not its stage).
struct DecisionFacts {
  std::string_view helo, login, from, rcpt;
};

// A mail transaction as it ended, for the logs: what replay and learn need (SPEC §11).
struct TransactionRecord {
  std::string_view from;
  std::span<const std::string> recipients;  // every RCPT the client named, in order
  uint32_t recipients_omitted = 0;          // named beyond Dialogue::kMaxRecordedRecipients
  std::span<const std::string> accepted;    // those the backend accepted
  uint32_t accepted_count = 0;              // all of them, also beyond the record's cap
  std::string_view outcome;   // "delivered", "rejected", "failed" (backend gone), "abandoned"
  Stage stage = Stage::Mail;  // where it ended
  std::string_view rule;      // the policy rule that ended it, or ""
  std::string_view reply;     // the reply that ended it (first line), or ""
  uint64_t size = 0;          // body bytes (0 before DATA)
  bool message = false;       // a body went to the backend: a `message` event too
};

// What the dialogue asks of the gateway's shared state, and what it reports.
class DialogueServices {
 public:
  virtual uint64_t now_ms() = 0;
  // Sending counters of an authenticated login (the last hour).
  virtual uint32_t messages_last_hour(std::string_view login) = 0;
  virtual uint32_t recipients_last_hour(std::string_view login) = 0;
  // A failed login from `ip`: how many are counted in the brute-force window, this one too.
  virtual uint32_t record_auth_failure(const IpAddress& ip) = 0;
  // Stale passwords (brute_force.distinct_passwords): a keyed hash of the attempt (address,
  // login, password) whose key lives only in memory, 0 when not kept; and whether a failure
  // with the same key was counted within the window (then it is not counted again).
  virtual uint64_t password_key(const IpAddress& ip, std::string_view login,
                                std::string_view password) = 0;
  virtual bool repeated_failure(uint64_t key) = 0;
  // brute_force.per_login: when the login is locked for `ip` (not an address it logged in
  // from lately, not in never_ban), the lock's end as text, else ""; and its failures and
  // successes.
  virtual std::string login_locked(std::string_view login, const IpAddress& ip) = 0;
  virtual void record_login_failure(std::string_view login) = 0;
  virtual void record_login_success(std::string_view login, const IpAddress& ip) = 0;
  // submission.breaker (SPEC §9), for authenticated logins: what the login did — a login the
  // backend accepted from `ip`, a recipient domain about to be forwarded, a recipient the
  // backend refused — and the threshold it crossed just now, if any; the login's suspension
  // (null: none); suspend it, or (dry-run) log that it would be.
  virtual std::optional<BreakerTrip> breaker_login(std::string_view login, const IpAddress& ip) = 0;
  virtual std::optional<BreakerTrip> breaker_recipient(std::string_view login,
                                                       std::string_view domain) = 0;
  virtual std::optional<BreakerTrip> breaker_refused(std::string_view login) = 0;
  virtual std::optional<Suspension> login_suspended(std::string_view login) = 0;
  virtual void suspend(std::string_view login, const BreakerTrip& trip) = 0;
  virtual void would_suspend(std::string_view login, const BreakerTrip& trip) = 0;
  // Bans `ip` (the reply that announces it waits until the ban is on disk); would_ban: dry-run.
  virtual void ban(const IpAddress& ip, const std::string& reason) = 0;
  virtual void would_ban(const IpAddress& ip, const std::string& reason) = 0;

  // Reports (logs and metrics). Decisions other than allow, every login, every message.
  virtual void decision(const Decision& d, const DecisionFacts& facts) = 0;
  virtual void connection_refused(const Decision& d) = 0;  // after decision(d)
  virtual void auth(std::string_view login, AuthOutcome outcome, std::string_view reply) = 0;
  virtual void transaction(const TransactionRecord& t) = 0;
  virtual void class_changed() = 0;  // facts().cls is new

 protected:
  ~DialogueServices() = default;
};

class Dialogue {
 public:
  // Hard limits (named, not tunable; SPEC §3 "Hostile and broken peers").
  // Error replies before the session is dropped.
  static constexpr int kMaxErrors = 20;
  // Junk commands (NOOP, RSET, HELP, VRFY, EHLO/HELO, unknown) since the last MAIL that
  // passed policy: one more gets 421 and the session is closed (Postfix's default).
  static constexpr int kMaxJunkCommands = 100;
  // Recipients a transaction record names (the rest are counted): bounds a session's memory
  // whatever number of RCPTs a client tries.
  static constexpr size_t kMaxRecordedRecipients = 100;

  // What the session is about. `policy` and `listener` outlive the dialogue (the session
  // holds the policy snapshot it started with).
  struct Setup {
    const Policy* policy = nullptr;
    const Listener* listener = nullptr;
    bool tls_available = false;  // the gateway has a certificate (a tls section)
    IpAddress client;
    bool banned = false;          // the ban list holds the client now
    std::string_view session_id;  // for the Received: header; outlives the dialogue
    // Every decision is reported, allows too, with their reasons (`smtpgate explain`); a
    // session reports only the others.
    bool report_allows = false;
  };

  Dialogue(const Setup& setup, DialogueIo& io, DialogueServices& services);
  Dialogue(const Dialogue&) = delete;
  Dialogue& operator=(const Dialogue&) = delete;

  // The connection is accepted. `admission`: the gateway's refusal when its connection caps
  // are reached (SPEC §3), or null. Greets, or refuses and closes.
  void open(const Decision* admission);
  // The TLS handshake completed (STARTTLS, or an implicit-TLS listener's first step).
  void on_tls_ready(std::string_view version, std::string_view cipher);
  // Client bytes arrived. False: they broke SMTP synchronisation (they came before a reply
  // the client had to wait for); the session is refused and closing, and they are not read.
  bool on_client_input();
  // A command line, or a SASL answer (without CRLF). `more_input`: more client bytes follow
  // it in what has been read (pipelining).
  void on_line(std::string_view line, bool more_input);
  void on_line_too_long();
  // The body filter reached the end of data (or found a bare LF/CR); `size`: body bytes.
  void on_body_end(BodyFilter::Status status, uint64_t size);

  void on_backend_reply(BackendCommand cmd, const BackendReply& reply);
  // The backend connection is gone; every reply it still owed is lost.
  void on_backend_failed(bool protocol_error);

  // The client's deadline passed while it could be answered: 421 and close.
  void on_timeout();
  // The session ends (the client left, TLS failed, shutdown): a transaction under way is
  // recorded as abandoned.
  void on_session_end();
  // Graceful stop: an idle session gets 421 and closes; a busy one closes after its message.
  void drain();

  // For the shell.
  bool reading_commands() const {  // the next client line is a command or a SASL answer
    return (phase_ == Phase::Command || phase_ == Phase::Sasl) && !waiting_;
  }
  bool in_body() const { return phase_ == Phase::Body; }
  bool closing() const { return phase_ == Phase::Closing; }
  size_t line_limit() const { return phase_ == Phase::Sasl ? kMaxSaslLine : kMaxCommandLine; }
  size_t replies_pending() const { return replies_.pending(); }
  size_t held_reply_bytes() const { return replies_.held_bytes(); }
  // A message may be under way at the backend: close it without QUIT (nothing delivered).
  bool transaction_open() const { return phase_ == Phase::Body || txn_.active; }
  const SessionFacts& facts() const { return facts_; }
  std::string_view helo() const { return helo_; }  // as the client sent it (for XCLIENT)
  bool esmtp() const { return esmtp_; }
  bool auth_tried() const { return auth_tried_; }  // an AUTH got past its syntax checks
  uint32_t messages() const { return messages_; }
  std::string_view tls_version() const { return tls_version_; }

 private:
  enum class Phase : uint8_t { Command, Sasl, Body, Closing };

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
    // For the transaction record: recipients named (capped), forwarded (in order, for
    // matching the backend's replies) and accepted.
    std::vector<std::string> named, forwarded, accepted;
    uint32_t named_omitted = 0;
    size_t replies_seen = 0;  // RCPT replies matched to `forwarded` so far
    // Back to empty, keeping the strings' buffers for the next transaction. A new field must
    // be added here too.
    void clear() {
      named.clear();
      forwarded.clear();
      accepted.clear();
      named_omitted = 0;
      replies_seen = 0;
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

  // The message whose final reply is awaited.
  struct Sent {
    std::string sender;
    uint64_t size = 0;
    uint32_t recipients = 0;
    std::vector<std::string> named, accepted;
    uint32_t named_omitted = 0;
  };

  // commands
  void command(const Command& cmd, std::string_view line, bool more_input);
  void cmd_helo(const Command& cmd, bool esmtp);
  void cmd_mail(const Command& cmd, std::string_view line);
  void cmd_rcpt(const Command& cmd, std::string_view line);
  void cmd_data();
  void cmd_rset();
  void cmd_starttls();
  void cmd_auth(const Command& cmd);
  void sasl_outcome(SaslExchange::Outcome o);
  void run_waiting();  // DATA or STARTTLS, once every earlier reply is out

  // backend replies, by the command they answer
  void reply_to_data(const BackendReply& r);
  void reply_to_data_end(const BackendReply& r);
  void reply_to_auth(const BackendReply& r);

  // AUTH
  void auth_with(Credentials creds);
  static std::string offered_login(const Command& cmd);  // from an initial response, or
  void auth_failed_locally(std::string_view reply, bool counts);
  // Counts one failure of the client's address toward a ban; true when it banned the
  // client (and closed).
  bool count_auth_failure(std::string_view sent_reply);

  // replies
  void greet();
  bool refused_pregreet();
  void reply(std::string_view wire, bool sync = false);
  void reply(const Reply& r);
  void reply_error(std::string_view wire);  // a client error: replied and counted
  void reply_error(const Reply& r);
  void backend_reply_arrived(std::string_view text);
  void flush_replies();

  // policy
  // To services_.decision() with the session's facts, allows only if report_allows_.
  void report(const Decision& d, std::string_view from = {}, std::string_view rcpt = {});
  // The transaction ends without a message (an empty `from`: txn_'s sender).
  void record_transaction(std::string_view outcome, Stage stage, std::string_view rule,
                          std::string_view reply, std::string_view from = {}, uint64_t size = 0);
  void record_message(std::string_view outcome, std::string_view reply, uint64_t size,
                      bool from_sent);
  // The transaction under way as a record; `sender` holds its sender's text.
  TransactionRecord txn_record(std::string& sender) const;
  bool apply(const Decision& d, std::string_view from = {}, std::string_view rcpt = {});
  // submission.breaker: the session's login is suspended and the command is refused (true).
  bool refused_as_suspended(Stage stage, std::string_view from = {}, std::string_view rcpt = {});
  // A threshold crossed by this session's login: suspends it (or logs would_suspend) and
  // reports the decision; returns it (the caller replies when it blocks).
  // `sent`: the reply the command already had (a refused RCPT's), named by the decision.
  Decision trip_breaker(Stage stage, const BreakerTrip& trip, std::string_view from = {},
                        std::string_view rcpt = {}, std::string_view sent = {});
  void breaker_count_refusal(const BackendReply& r);  // a RCPT the backend refused
  // A decision about a command that already had its reply: it records that reply.
  static void set_reply_sent(Decision& d, std::string_view sent);
  bool breaker_refuses_auth();  // after the backend's 235
  bool breaker_on() const { return policy_.submission.breaker && facts_.authenticated; }
  void refuse_protocol(Stage stage, std::string_view rule, std::string reason, const Reply& r,
                       std::string_view state);
  void set_class(ListenerClass c);
  std::string received_header();

  void close(std::string_view state = "closed");
  void command_deadline();

  const Policy& policy_;
  const Listener& listener_;
  DialogueIo& io_;
  DialogueServices& services_;
  const bool tls_available_;
  const bool report_allows_;
  const std::string_view session_id_;

  SessionFacts facts_;
  Phase phase_ = Phase::Command;
  std::string helo_;
  bool esmtp_ = false;
  bool helo_seen_ = false;
  bool first_line_seen_ = false;    // an HTTP request is recognised on the first line only
  bool backend_auth_lost_ = false;  // an authenticated session's backend connection dropped
  bool auth_tried_ = false;
  uint64_t password_key_ = 0;  // of the credentials the backend is judging
  bool draining_ = false;
  std::string tls_version_, tls_cipher_;
  // A refusal waiting for the TLS handshake (implicit-TLS listeners: handshake first).
  std::string refusal_after_tls_;

  // Waiting on the backend before the next command is read: an AUTH's verdict, DATA's 354,
  // or every earlier reply before DATA or STARTTLS runs (`held_` is that command).
  bool waiting_ = false;
  Verb held_ = Verb::Unknown;
  bool has_held_ = false;

  ReplyQueue replies_;
  SaslExchange sasl_;
  Transaction txn_;
  // Numbers the transactions: a MAIL or RCPT reply counts only for the transaction its
  // command belonged to (a client may RSET and start another before the replies arrive).
  uint32_t txn_number_ = 0;
  Sent sent_;
  // The backend failed during the body and the client has its 4xx already: the rest of the
  // body is dropped and its end gets no second reply (after a 421 the session closes there).
  bool body_answered_ = false;
  bool close_after_body_ = false;
  int errors_ = 0;
  int junk_ = 0;
  uint32_t messages_ = 0;
};

}  // namespace smtpgate::smtp
