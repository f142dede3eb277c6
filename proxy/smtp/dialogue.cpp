#include "proxy/smtp/dialogue.h"

#include <algorithm>

#include "policy/rule_ids.h"

namespace smtpgate::smtp {
namespace {

// A refused client on an implicit-TLS listener gets this long for its handshake.
constexpr std::chrono::milliseconds kRefusalHandshakeTime{10000};

Stage stage_of(Verb v) {
  switch (v) {
    case Verb::Helo:
    case Verb::Ehlo:
      return Stage::Helo;
    case Verb::Mail:
      return Stage::Mail;
    case Verb::Rcpt:
      return Stage::Rcpt;
    case Verb::Data:
    case Verb::Bdat:
      return Stage::Data;
    case Verb::Rset:
      return Stage::Rset;
    case Verb::Quit:
      return Stage::Quit;
    case Verb::Auth:
      return Stage::Auth;
    case Verb::StartTls:
      return Stage::StartTls;
    default:
      return Stage::Helo;  // NOOP, HELP, VRFY, EXPN, unknown: between the stages
  }
}

bool is_junk(Verb v) {
  switch (v) {
    case Verb::Noop:
    case Verb::Rset:
    case Verb::Help:
    case Verb::Vrfy:
    case Verb::Ehlo:
    case Verb::Helo:
    case Verb::Unknown:
      return true;
    default:
      return false;
  }
}

}  // namespace

Dialogue::Dialogue(const Setup& setup, DialogueIo& io, DialogueServices& services)
    : policy_(*setup.policy),
      listener_(*setup.listener),
      io_(io),
      services_(services),
      tls_available_(setup.tls_available),
      report_allows_(setup.report_allows),
      session_id_(setup.session_id) {
  facts_.listener = &listener_;
  facts_.cls = engine::initial_class(listener_);
  facts_.client = setup.client;
  facts_.banned = setup.banned;
  facts_.allow_reasons = report_allows_;  // a session reports no allow: no text to build
}

// ---------------------------------------------------------------- connect, TLS

void Dialogue::open(const Decision* admission) {
  Decision d = admission ? *admission : engine::connect(policy_, facts_);
  report(d);
  if (!d.allowed()) {
    if (d.enforced) {
      services_.connection_refused(d);
      // May ban (the reply then waits until the ban is on disk).
      const bool banned = policy_.brute_force.count_access_refusals &&
                          (d.rule == rules::kMxAccess || d.rule == rules::kSubmissionAccess) &&
                          count_auth_failure(replies::wire(d.reply));
      if (listener_.tls == TlsMode::Implicit && tls_available_) {
        // RFC 8314: a client of an implicit-TLS port speaks TLS first. A plaintext refusal
        // would reach it as a TLS error; after the handshake it reads "access denied".
        refusal_after_tls_ = replies::wire(d.reply);
        phase_ = Phase::Closing;
        io_.set_deadline(
            std::min<std::chrono::milliseconds>(policy_.timeouts.command, kRefusalHandshakeTime));
        io_.start_tls();
        return;
      }
      reply(d.reply);
      close(banned ? "banned" : "refused");
      return;
    }
  }
  command_deadline();
  if (listener_.tls == TlsMode::Implicit) {
    io_.start_tls();  // RFC 8314: the greeting comes only after the handshake
  } else {
    greet();
  }
}

void Dialogue::on_tls_ready(std::string_view version, std::string_view cipher) {
  facts_.tls = true;
  tls_version_.assign(version);
  tls_cipher_.assign(cipher);
  if (!refusal_after_tls_.empty()) {
    reply(refusal_after_tls_);
    close("refused");
    return;
  }
  command_deadline();
  if (listener_.tls == TlsMode::Implicit) greet();
}

void Dialogue::greet() {
  if (refused_pregreet()) return;
  reply(replies::greeting(policy_.hostname));
}

bool Dialogue::refused_pregreet() {
  // Input already waiting when the greeting is due was sent before the client could have
  // read it: the classic bot signal (postscreen's pregreet test, Exim's synchronisation
  // check). Implicit TLS greets after the handshake, where the check does not apply.
  if (listener_.tls == TlsMode::Implicit) return false;
  char early[8];
  const size_t n = io_.peek_client(early, sizeof early);
  if (n == 0) return false;
  if (looks_like_http(std::string_view(early, n))) {
    refuse_protocol(Stage::Connect, rules::kProtocolHttp, "HTTP request on an SMTP port", Reply{},
                    "http_request");
  } else {
    refuse_protocol(Stage::Connect, rules::kProtocolSync, "client talked before the greeting",
                    replies::sync_error(), "protocol_sync");
  }
  return true;
}

// ---------------------------------------------------------------- client input

bool Dialogue::on_client_input() {
  if (phase_ == Phase::Closing) return true;
  Stage stage;
  if (has_held_ && held_ == Verb::Data) {
    stage = Stage::Data;
  } else {
    auto sync = replies_.awaiting_sync();
    if (sync == ReplyQueue::SyncPoint::None) return true;
    stage = sync == ReplyQueue::SyncPoint::Data ? Stage::Data : Stage::Helo;
  }
  // RFC 2920: nothing may follow EHLO/HELO or DATA before their reply.
  refuse_protocol(stage, rules::kProtocolSync,
                  stage == Stage::Data ? "client sent data before the reply to DATA"
                                       : "client sent data before the reply to EHLO/HELO",
                  replies::sync_error(), "protocol_sync");
  return false;
}

void Dialogue::on_line(std::string_view line, bool more_input) {
  if (phase_ == Phase::Sasl) {
    phase_ = Phase::Command;
    sasl_outcome(sasl_.answer(line));
    return;
  }
  if (!first_line_seen_) {
    first_line_seen_ = true;
    if (looks_like_http(line)) {
      // A web client or an open-proxy scanner: no SMTP reply, just the close.
      refuse_protocol(Stage::Connect, rules::kProtocolHttp, "HTTP request on an SMTP port", Reply{},
                      "http_request");
      return;
    }
  }
  command(parse_command(line), line, more_input);
  if (!waiting_ && phase_ != Phase::Body && phase_ != Phase::Closing) command_deadline();
}

void Dialogue::on_line_too_long() {
  if (phase_ == Phase::Sasl) {
    phase_ = Phase::Command;
    sasl_.abandon();
    auth_failed_locally(replies::wire(replies::line_too_long()), true);
  } else {
    reply_error(replies::line_too_long());
  }
  if (phase_ != Phase::Closing) command_deadline();
}

void Dialogue::command(const Command& cmd, std::string_view line, bool more_input) {
  if (cmd.verb == Verb::Bdat) {
    // CHUNKING is not offered: the chunk that follows is message data, never read as commands.
    refuse_protocol(Stage::Data, rules::kProtocolBdat, "BDAT without CHUNKING",
                    replies::bdat_refused(), "closed");
    return;
  }
  // RFC 2920: EHLO/HELO and DATA end a pipelined group, and without EHLO there is no
  // pipelining at all. STARTTLS keeps its own rule: what follows it is discarded unread.
  const bool sync_point = cmd.verb == Verb::Ehlo || cmd.verb == Verb::Helo ||
                          cmd.verb == Verb::Data || (!esmtp_ && cmd.verb != Verb::StartTls);
  if (more_input && sync_point) {
    refuse_protocol(stage_of(cmd.verb), rules::kProtocolSync,
                    esmtp_ ? "commands pipelined after " + std::string(to_string(cmd.verb))
                           : std::string("pipelining without EHLO"),
                    replies::sync_error(), "protocol_sync");
    return;
  }
  if (is_junk(cmd.verb) && ++junk_ > kMaxJunkCommands) {
    refuse_protocol(stage_of(cmd.verb), rules::kProtocolJunk,
                    "more than " + std::to_string(kMaxJunkCommands) +
                        " NOOP/RSET/HELP/VRFY/EHLO/unknown commands without a transaction",
                    replies::too_many_junk(), "closed");
    return;
  }
  if (!cmd.ok()) {
    reply_error(replies::syntax_error(cmd.error));
    return;
  }
  switch (cmd.verb) {
    case Verb::Helo:
    case Verb::Ehlo:
      cmd_helo(cmd, cmd.verb == Verb::Ehlo);
      return;
    case Verb::Mail:
      cmd_mail(cmd, line);
      return;
    case Verb::Rcpt:
      cmd_rcpt(cmd, line);
      return;
    case Verb::Data:
    case Verb::StartTls:
      if (!replies_.empty()) {
        // Both need every earlier reply first: wait for them.
        held_ = cmd.verb;
        has_held_ = true;
        waiting_ = true;
        io_.clear_deadline();
        return;
      }
      cmd.verb == Verb::Data ? cmd_data() : cmd_starttls();
      return;
    case Verb::Rset:
      cmd_rset();
      return;
    case Verb::Noop:
      reply(replies::ok().wire);
      return;
    case Verb::Quit:
      reply(replies::bye().wire);
      close();
      return;
    case Verb::Help:
      reply(replies::help().wire);
      return;
    case Verb::Vrfy:
      reply(replies::vrfy().wire);
      return;
    case Verb::Auth:
      cmd_auth(cmd);
      return;
    case Verb::Expn:
    case Verb::Bdat:  // refused above
      reply_error(replies::not_implemented().wire);
      return;
    case Verb::Unknown:
      reply_error(replies::unknown_command().wire);
      return;
  }
}

void Dialogue::run_waiting() {
  if (!has_held_ || !replies_.empty()) return;
  has_held_ = false;
  waiting_ = false;
  held_ == Verb::Data ? cmd_data() : cmd_starttls();
}

// ---------------------------------------------------------------- commands

void Dialogue::cmd_helo(const Command& cmd, bool esmtp) {
  helo_.assign(cmd.domain);
  esmtp_ = esmtp;
  helo_seen_ = true;
  // EHLO/HELO resets any transaction (RFC 5321 4.1.4).
  if (txn_.active && !io_.backend_idle()) io_.backend_send(BackendCommand::Rset, "RSET\r\n", false);
  if (txn_.active) record_transaction("abandoned", Stage::Helo, {}, {});
  txn_.clear();
  if (!esmtp) {
    reply("250 " + policy_.hostname + "\r\n", true);
    return;
  }
  std::string r = "250-" + policy_.hostname + "\r\n250-PIPELINING\r\n250-SIZE " +
                  std::to_string(policy_.message.max_bytes) +
                  "\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n";
  if (listener_.tls == TlsMode::StartTls && tls_available_ && !facts_.tls) r += "250-STARTTLS\r\n";
  const bool auth_possible = listener_.cls != ListenerClass::Mx && !facts_.authenticated;
  const bool tls_ok = facts_.tls || !policy_.submission.require_tls;
  if (auth_possible && tls_ok) r += "250-AUTH PLAIN LOGIN\r\n";
  r += "250 SMTPUTF8\r\n";
  reply(r, true);
}

void Dialogue::cmd_rset() {
  if (txn_.active && !io_.backend_idle()) io_.backend_send(BackendCommand::Rset, "RSET\r\n", false);
  if (txn_.active) record_transaction("abandoned", Stage::Rset, {}, {});
  txn_.clear();
  reply(replies::ok().wire);
}

void Dialogue::cmd_starttls() {
  if (listener_.tls != TlsMode::StartTls || !tls_available_)
    return reply_error(replies::tls_unavailable().wire);
  if (facts_.tls) return reply_error(replies::tls_active().wire);
  if (txn_.active) return reply_error(replies::in_transaction().wire);
  reply(replies::tls_ready().wire);
  // RFC 3207: the session starts over; nothing learned before TLS is kept.
  helo_seen_ = false;
  helo_.clear();
  esmtp_ = false;
  txn_.clear();
  io_.start_tls();
}

// ---------------------------------------------------------------- backend replies

void Dialogue::on_backend_reply(BackendCommand cmd, const BackendReply& r) {
  switch (cmd) {
    case BackendCommand::Rset:
      return;  // the client already had its own reply
    case BackendCommand::Mail:
    case BackendCommand::Rcpt:
      // A reply to a command of a transaction the client has since reset changes nothing.
      if (txn_.active && replies_.next_owed_txn() == txn_number_) {
        if (cmd == BackendCommand::Mail && !r.positive()) {
          record_transaction("rejected", Stage::Mail, {}, first_line(r.raw));
          txn_.clear();
        }
        if (cmd == BackendCommand::Rcpt) {
          if (r.positive()) ++txn_.rcpt_accepted;
          // The command has its reply (the backend's): a trip suspends what comes next.
          if (r.permanent() && breaker_on()) breaker_count_refusal(r);
          if (txn_.replies_seen < txn_.forwarded.size() && r.positive())
            txn_.accepted.push_back(txn_.forwarded[txn_.replies_seen]);
          ++txn_.replies_seen;
        }
      }
      backend_reply_arrived(r.raw);
      break;
    case BackendCommand::Data:
      reply_to_data(r);
      break;
    case BackendCommand::DataEnd:
      reply_to_data_end(r);
      break;
    case BackendCommand::Auth:
      reply_to_auth(r);
      break;
  }
  flush_replies();
  run_waiting();
}

void Dialogue::on_backend_failed(bool protocol_error) {
  if (facts_.authenticated) backend_auth_lost_ = true;
  const std::string_view failure =
      protocol_error ? replies::backend_protocol_error().wire : replies::backend_unavailable().wire;
  if (phase_ == Phase::Body) {
    // The message cannot complete: the client hears it now, not at the data timeout. The rest
    // of its body is read and dropped; after a 421 the session closes at its end.
    if (!body_answered_) {
      record_message("failed", failure, io_.body_bytes(), false);
      reply(failure);
      body_answered_ = true;
      close_after_body_ = !protocol_error;
      io_.discard_body();
    }
    return;
  }
  // Replies still owed: AUTH gets a temporary failure and the session goes on; anything
  // else means the transaction is lost and the client must retry later.
  bool close_now = false;
  bool mail_failed = false;  // the transaction's own MAIL got the failure: it never began
  replies_.fill_all_owed([&](BackendCommand c) -> std::string_view {
    if (c == BackendCommand::Auth) return replies::auth_backend_unavailable().wire;
    close_now = close_now || !protocol_error;
    mail_failed = mail_failed || c == BackendCommand::Mail;
    if (c == BackendCommand::DataEnd) record_message("failed", failure, sent_.size, true);
    return failure;
  });
  if (waiting_ && !has_held_) waiting_ = false;  // an AUTH or DATA whose reply is now given
  if (has_held_ && held_ == Verb::Data) {
    has_held_ = false;
    waiting_ = false;
    reply(failure);
  }
  if (close_now || mail_failed || !txn_.active) {
    // The stage the failure hit: the MAIL itself, or the recipients after it.
    if (txn_.active)
      record_transaction("failed", mail_failed ? Stage::Mail : Stage::Rcpt, {},
                         first_line(failure));
    txn_.clear();
  } else {
    txn_.backend_broken = true;  // its RCPT/DATA get 451 until RSET
  }
  flush_replies();
  if (close_now) {
    close();
    return;
  }
  run_waiting();  // a STARTTLS that waited for the failed replies
  if (!waiting_) command_deadline();
}

// ---------------------------------------------------------------- replies

void Dialogue::reply(std::string_view wire, bool sync) {
  if (replies_.add_ready(wire, sync)) io_.write(wire);
}

void Dialogue::reply(const Reply& r) {
  reply(replies::wire(r));
}

void Dialogue::reply_error(std::string_view wire) {
  reply(wire);
  // Each error reply counts; at the limit the client is told so and the session ends.
  if (++errors_ < kMaxErrors) return;
  reply(replies::too_many_errors().wire);
  close();
}

void Dialogue::reply_error(const Reply& r) {
  reply_error(replies::wire(r));
}

void Dialogue::backend_reply_arrived(std::string_view text) {
  if (replies_.fill(text)) io_.write(text);
}

void Dialogue::flush_replies() {
  replies_.drain([this](std::string_view text) { io_.write(text); });
}

// ---------------------------------------------------------------- policy

void Dialogue::report(const Decision& d, std::string_view from, std::string_view rcpt) {
  if (!d.allowed() || report_allows_)
    services_.decision(d, DecisionFacts{helo_, facts_.login, from, rcpt});
}

bool Dialogue::apply(const Decision& d, std::string_view from, std::string_view rcpt) {
  report(d, from, rcpt);
  if (!d.blocks()) return false;
  reply(d.reply);
  if (d.reply.close) close();
  return true;
}

void Dialogue::set_reply_sent(Decision& d, std::string_view sent) {
  const std::string_view first = first_line(sent);
  if (first.size() < 4) return;
  d.reply.code = (first[0] - '0') * 100 + (first[1] - '0') * 10 + (first[2] - '0');
  d.reply.text = std::string(first.substr(4));
}

bool Dialogue::refused_as_suspended(Stage stage, std::string_view from, std::string_view rcpt) {
  if (!breaker_on()) return false;
  const auto s = services_.login_suspended(facts_.login);
  return s && apply(engine::login_suspended(policy_, facts_, stage, *s), from, rcpt);
}

void Dialogue::breaker_count_refusal(const BackendReply& r) {
  const auto trip = services_.breaker_refused(facts_.login);
  if (!trip) return;
  std::string from;
  txn_.sender.append_address(from);
  const std::string_view rcpt = txn_.replies_seen < txn_.forwarded.size()
                                    ? std::string_view(txn_.forwarded[txn_.replies_seen])
                                    : std::string_view();
  // The refused RCPT already has its reply, the backend's: the decision records that one.
  trip_breaker(Stage::Rcpt, *trip, from, rcpt, first_line(r.raw));
}

Decision Dialogue::trip_breaker(Stage stage, const BreakerTrip& trip, std::string_view from,
                                std::string_view rcpt, std::string_view sent) {
  Decision d = engine::breaker_tripped(policy_, facts_, stage, trip);
  if (!sent.empty()) set_reply_sent(d, sent);
  if (d.enforced) {
    services_.suspend(facts_.login, trip);
  } else {
    services_.would_suspend(facts_.login, trip);
  }
  report(d, from, rcpt);
  return d;
}

void Dialogue::refuse_protocol(Stage stage, std::string_view rule, std::string reason,
                               const Reply& r, std::string_view state) {
  Decision d;
  d.stage = stage;
  d.rule = rule;
  d.verdict = Verdict::Reject;
  d.reason = std::move(reason);
  d.reply = r;
  report(d);
  if (transaction_open() && !body_answered_)
    record_transaction("abandoned", stage, rule, r.code ? std::string_view(r.text) : "");
  // The session ends here: replies still owed are dropped and an unfinished transaction is
  // abandoned at the backend (closed before any final dot).
  if (transaction_open() || !replies_.empty()) {
    io_.backend_abort();
  } else {
    io_.backend_quit();
  }
  replies_.clear();
  has_held_ = false;
  waiting_ = false;
  body_answered_ = false;
  txn_.clear();
  sasl_.reset();
  phase_ = Phase::Command;
  if (r.code != 0) reply(r);
  close(state);
}

void Dialogue::set_class(ListenerClass c) {
  if (c == facts_.cls) return;
  facts_.cls = c;
  services_.class_changed();
}

// ---------------------------------------------------------------- end

void Dialogue::on_timeout() {
  // Replies still owed by the backend are dropped: the session is over, and a transaction
  // under way is abandoned at the backend (a 354 arriving now must not start a body).
  if (transaction_open() && !body_answered_)
    record_transaction("abandoned", phase_ == Phase::Body ? Stage::Data : Stage::Quit, {},
                       "421 4.4.2 timeout");
  if (transaction_open() || !replies_.empty()) io_.backend_abort();
  replies_.clear();
  has_held_ = false;
  waiting_ = false;
  sasl_.reset();
  phase_ = Phase::Command;
  reply(replies::idle_timeout(policy_.hostname));
  close("timeout");
}

void Dialogue::drain() {
  draining_ = true;
  if (phase_ == Phase::Body && body_answered_) {
    // Its message already failed and the client has its 4xx: nothing is in flight.
    close("drained");
    return;
  }
  if (phase_ == Phase::Command && !waiting_ && replies_.empty() && !txn_.active) {
    reply(replies::shutting_down().wire);
    close();
  }
}

void Dialogue::close(std::string_view state) {
  phase_ = Phase::Closing;
  sasl_.reset();
  io_.close_after_output(state);
}

void Dialogue::command_deadline() {
  if (phase_ != Phase::Body) io_.set_deadline(policy_.timeouts.command);
}

}  // namespace smtpgate::smtp
