#include "proxy/session.h"

#include "policy/replies.h"
#include "policy/rule_ids.h"
#include "proxy/gateway.h"
#include "proxy/received_header.h"

namespace smtpgate {
namespace {

using smtp::Verb;
using Tag = BackendClient::Tag;

// A refused client on an implicit-TLS listener gets this long for its handshake.
constexpr std::chrono::milliseconds kRefusalHandshakeTime{10000};

std::string line_of(const Reply& r) {
  return r.line() + "\r\n";
}

Endpoint endpoint_of(const sockaddr_storage& ss) {
  Endpoint e;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    e.ip = IpAddress::v4(ntohl(a->sin_addr.s_addr));
    e.port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    std::array<uint8_t, 16> b{};
    std::memcpy(b.data(), &a->sin6_addr, 16);
    e.ip = IpAddress::v6(b);  // IPv4-mapped clients become plain IPv4
    e.port = ntohs(a->sin6_port);
  }
  return e;
}

}  // namespace

Session::Session(Gateway& gw, ListenerRuntime& lr, std::shared_ptr<const RuntimeConfig> config)
    : gw_(gw),
      config_(std::move(config)),
      policy_(config_->policy),
      listener_(lr.config),
      backend_(gw.loop(), this),
      id_(gw.next_session_id()),
      started_(std::chrono::steady_clock::now()) {
  facts_.listener = &listener_;
  facts_.cls = engine::initial_class(listener_);
}

Session::~Session() = default;

void Session::start(uv_stream_t* server) {
  client_ = Connection::create(gw_.loop(), this);
  timer_ = Timer::create(gw_.loop(), this);
  if (client_->accept(server) != 0) {
    finish("accept_failed");
    return;
  }
  sockaddr_storage ss{};
  int len = sizeof ss;
  uv_tcp_getpeername(client_->handle(), reinterpret_cast<sockaddr*>(&ss), &len);
  peer_ = endpoint_of(ss);
  len = sizeof ss;
  uv_tcp_getsockname(client_->handle(), reinterpret_cast<sockaddr*>(&ss), &len);
  local_ = endpoint_of(ss);
  facts_.client = peer_.ip;
  facts_.allow_reasons = false;  // allow decisions are not logged
  client_text_ = format_endpoint(peer_);
  facts_.banned = gw_.banned(facts_.client);
  update_log_prefix();
  LogLine(gw_.log(), "session_open", log_prefix_).write();
  gw_.metrics().connection_opened(listener_.name);
  counted_ = true;

  const Policy& p = *policy_;
  // Connection caps protect the gateway itself: always enforced, checked before policy.
  if (auto refusal = gw_.admit(*this)) {
    gw_.metrics().connection_refused(
        refusal->rule == rules::kLimitsConnectionRate ? RefusedReason::Rate : RefusedReason::Limit);
    log_decision(*refusal);
    refuse_at_connect(line_of(refusal->reply));
    return;
  }
  if (Decision d = engine::connect(p, facts_); !d.allowed()) {
    log_decision(d);
    if (d.enforced) {
      gw_.metrics().connection_refused(d.rule == rules::kBan ? RefusedReason::Ban
                                                             : RefusedReason::Access);
      refuse_at_connect(line_of(d.reply));
      return;
    }
  }
  arm_command_timer();
  if (listener_.tls == TlsMode::Implicit) {
    // RFC 8314: the greeting comes only after the handshake.
    client_->start_tls(config_->server_tls);
  } else {
    greet();
  }
  if (client_ && !close_when_flushed_) client_->start_reading();
}

void Session::refuse_at_connect(std::string text) {
  if (listener_.tls == TlsMode::Implicit && config_->server_tls) {
    // RFC 8314: a client of an implicit-TLS port speaks TLS first. A plaintext refusal would
    // reach it as a TLS error; after the handshake it reads "access denied".
    refusal_after_tls_ = std::move(text);
    set_deadline(
        std::min<std::chrono::milliseconds>(policy_->timeouts.command, kRefusalHandshakeTime));
    client_->start_tls(config_->server_tls);
    client_->start_reading();
    return;
  }
  reply(text);
  close_after_flush("refused");
  flush();
}

void Session::greet() {
  if (check_pregreet()) {
    flush();
    return;
  }
  reply(replies::greeting(policy_->hostname));
  flush();
}

bool Session::check_pregreet() {
  // Input already waiting when the greeting is due was sent before the client could have
  // read it: the classic bot signal (postscreen's pregreet test, Exim's synchronisation
  // check). Implicit TLS greets after the handshake, where the check does not apply.
  if (listener_.tls == TlsMode::Implicit) return false;
  char early[8];
  const size_t n = client_->peek(early, sizeof early);
  if (n == 0) return false;
  if (smtp::looks_like_http(std::string_view(early, n))) {
    refuse_protocol(Stage::Connect, rules::kProtocolHttp, "HTTP request on an SMTP port", Reply{},
                    "http_request");
  } else {
    refuse_protocol(Stage::Connect, rules::kProtocolSync, "client talked before the greeting",
                    replies::sync_error(), "protocol_sync");
  }
  return true;
}

void Session::refuse_protocol(Stage stage, std::string_view rule, std::string_view reason,
                              const Reply& r, std::string_view state) {
  Decision d;
  d.stage = stage;
  d.rule = rule;
  d.verdict = Verdict::Reject;
  d.reason = std::string(reason);
  d.reply = r;
  log_decision(d);
  // The session ends here: replies still owed are dropped and an unfinished transaction is
  // abandoned at the backend (closed before any final dot).
  if (txn_.active || replies_pending() > 0 || phase_ == Phase::Data) {
    backend_.abort();
  } else {
    backend_.quit();
  }
  slots_.clear();
  slot_head_ = 0;
  slot_bytes_ = 0;
  has_deferred_ = false;
  blocked_ = false;
  body_.reset();
  data_answered_ = false;
  reset_transaction();
  phase_ = Phase::Command;
  if (r.code != 0) reply(r);
  close_after_flush(state);
}
void Session::on_tls_ready(Connection& c) {
  facts_.tls = true;
  tls_version_ = c.tls()->version();
  tls_cipher_ = c.tls()->cipher();
  LogLine(gw_.log(), "tls", log_prefix_)
      .str("tls_version", tls_version_)
      .str("tls_cipher", tls_cipher_)
      .write();
  if (!refusal_after_tls_.empty()) {
    reply(refusal_after_tls_);
    close_after_flush("refused");
    flush();
    return;
  }
  arm_command_timer();
  if (listener_.tls == TlsMode::Implicit) greet();
}

void Session::on_tls_failed(Connection&, const std::string& reason) {
  LogLine(gw_.log(), "error", log_prefix_)
      .str("component", "tls")
      .str("reason", "TLS handshake failed: " + reason)
      .write();
  finish("tls_failed");
}

void Session::update_log_prefix() {
  log_prefix_ = gw_.log().render_fields({{"session", id_},
                                         {"client", client_text_},
                                         {"listener", listener_.name},
                                         {"class", to_string(facts_.cls)}});
}

void Session::log_decision(const Decision& d) {
  gw_.metrics().decision(to_string(d.stage), d.rule, to_string(d.verdict), d.enforced);
  LogLine(gw_.log(), "decision", log_prefix_)
      .str("stage", to_string(d.stage))
      .str("rule", d.rule)
      .str("verdict", to_string(d.verdict))
      .boolean("enforced", d.enforced)
      .str("reason", d.reason)
      .str("reply", d.reply.line())
      .write();
}

bool Session::apply(const Decision& d) {
  if (d.allowed()) return false;
  log_decision(d);
  if (!d.enforced) return false;
  reply(d.reply);
  if (d.reply.close) close_after_flush();
  return true;
}

void Session::arm_command_timer() {
  if (phase_ != Phase::Data) set_deadline(policy_->timeouts.command);
}

void Session::set_deadline(std::chrono::milliseconds after) {
  if (timer_) deadline_.set(*timer_, uv_now(gw_.loop()), after);
}

void Session::suspend_deadline() {
  // Waiting on the backend, whose own timer bounds the wait.
  deadline_.clear();
}

// ---------------------------------------------------------------- input

void Session::on_data(Connection&, std::string_view data) {
  bytes_in_ += data.size();
  if (phase_ != Phase::Closing) {
    if (auto stage = awaiting_sync_reply()) {
      // RFC 2920: nothing may follow EHLO/HELO or DATA before their reply.
      refuse_protocol(*stage, rules::kProtocolSync,
                      *stage == Stage::Data ? "client sent data before the reply to DATA"
                                            : "client sent data before the reply to EHLO/HELO",
                      replies::sync_error(), "protocol_sync");
      flush();
      return;
    }
  }
  if (input_.empty() && !blocked_) {
    size_t used = process_bytes(data);
    if (used < data.size() && !finished_) input_.assign(data.substr(used));
  } else {
    input_.append(data);
  }
  pump();
}

size_t Session::process() {
  if (input_.empty() || finished_ || blocked_) return 0;
  size_t used = process_bytes(input_);
  if (finished_) return used;
  input_.erase(0, used);
  if (input_.capacity() > 4096 && input_.empty()) std::string().swap(input_);
  return used;
}

void Session::pump() {
  // Held input runs while the client keeps up with its replies: processing stops when the
  // owed output passes its bound and goes on once the kernel has taken it.
  for (;;) {
    const size_t used = process();
    const bool was_full = output_full();
    flush();
    if (finished_ || input_.empty() || blocked_ || close_when_flushed_ || output_full()) break;
    if (used == 0 && !was_full) break;  // waiting on something else (the backend's replies)
  }
  update_reading();
}

bool Session::output_full() const {
  return slot_bytes_ + (client_ ? client_->queued_bytes() : 0) > kMaxOwedOutput;
}

void Session::update_reading() {
  if (!client_ || finished_) return;
  const bool backend_full = phase_ == Phase::Data && backend_.queued_bytes() > kMaxBackendQueue;
  if (close_when_flushed_ || input_.size() > kMaxHeldInput || output_full() || backend_full) {
    client_->pause_reading();
  } else {
    client_->start_reading();
  }
}

std::optional<Stage> Session::awaiting_sync_reply() const {
  if (has_deferred_ && deferred_ == Verb::Data) return Stage::Data;
  for (size_t i = slot_head_; i < slots_.size(); ++i) {
    // A ready sync slot is the gateway's own EHLO/HELO reply; DATA's waits for the backend.
    if (slots_[i].sync) return slots_[i].ready ? Stage::Helo : Stage::Data;
  }
  return std::nullopt;
}

size_t Session::process_bytes(std::string_view in) {
  size_t start = in.size();
  while (!in.empty() && !blocked_ && !finished_ && phase_ != Phase::Closing) {
    if (phase_ == Phase::Data) {
      handle_body(in);
      continue;
    }
    // A client that does not read its replies gets no more of them.
    if (output_full() || replies_pending() >= kMaxPendingReplies) break;
    size_t limit = phase_ == Phase::Sasl ? smtp::kMaxSaslLine : smtp::kMaxCommandLine;
    auto r = reader_.feed(in, limit);
    in.remove_prefix(r.consumed);
    if (r.status == smtp::LineReader::Status::NeedMore) break;
    if (r.status == smtp::LineReader::Status::TooLong) {
      if (phase_ == Phase::Sasl) {
        phase_ = Phase::Command;
        sasl_ = SaslStep::None;
        auth_failed_locally(line_of(replies::line_too_long()), true);
      } else {
        reply_error(replies::line_too_long());
      }
      continue;
    }
    handle_line(r.line, !in.empty());
    if (discard_input_) {
      // Anything pipelined after STARTTLS was sent in the clear: drop it unread.
      discard_input_ = false;
      return start;
    }
    if (!blocked_) arm_command_timer();
  }
  return start - in.size();
}

void Session::handle_line(std::string_view line, bool more_input) {
  if (phase_ == Phase::Sasl) {
    handle_sasl_line(line);
    return;
  }
  if (!first_line_seen_) {
    first_line_seen_ = true;
    if (smtp::looks_like_http(line)) {
      // A web client or an open-proxy scanner: no SMTP reply, just the close.
      refuse_protocol(Stage::Connect, rules::kProtocolHttp, "HTTP request on an SMTP port", Reply{},
                      "http_request");
      return;
    }
  }
  smtp::Command cmd = smtp::parse_command(line);
  handle_command(cmd, line, more_input);
}

namespace {

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

void Session::handle_command(const smtp::Command& cmd, std::string_view line, bool more_input) {
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
                    esmtp_ ? "commands pipelined after " + std::string(smtp::to_string(cmd.verb))
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
      cmd_helo(cmd, false);
      return;
    case Verb::Ehlo:
      cmd_helo(cmd, true);
      return;
    case Verb::Mail:
      cmd_mail(cmd, line);
      return;
    case Verb::Rcpt:
      cmd_rcpt(cmd, line);
      return;
    case Verb::Data:
    case Verb::StartTls:
      if (slot_head_ < slots_.size()) {
        // Both need every earlier reply first: wait for them.
        deferred_ = cmd.verb;
        has_deferred_ = true;
        blocked_ = true;
        suspend_deadline();
        return;
      }
      if (cmd.verb == Verb::Data) {
        cmd_data();
      } else {
        cmd_starttls();
      }
      return;
    case Verb::Rset:
      cmd_rset();
      return;
    case Verb::Noop:
      reply(replies::ok().wire);
      return;
    case Verb::Quit:
      cmd_quit();
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

void Session::reply_error(std::string_view text) {
  reply(text);
  // Each error reply counts; at the limit the client is told so and the session ends.
  if (++errors_ < kMaxErrors) return;
  reply(replies::too_many_errors().wire);
  close_after_flush();
}

void Session::reply_error(const Reply& r) {
  reply_error(line_of(r));
}

// ---------------------------------------------------------------- commands

void Session::cmd_helo(const smtp::Command& cmd, bool esmtp) {
  helo_.assign(cmd.domain);
  esmtp_ = esmtp;
  helo_seen_ = true;
  // EHLO/HELO resets any transaction (RFC 5321 4.1.4).
  if (txn_.active && !backend_.idle()) backend_.send(Tag::Rset, "RSET\r\n");
  reset_transaction();
  const Policy& p = *policy_;
  if (!esmtp) {
    reply("250 " + p.hostname + "\r\n", true);
    return;
  }
  std::string r = "250-" + p.hostname + "\r\n250-PIPELINING\r\n250-SIZE " +
                  std::to_string(p.message.max_bytes) +
                  "\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n";
  if (listener_.tls == TlsMode::StartTls && config_->server_tls && !facts_.tls)
    r += "250-STARTTLS\r\n";
  bool auth_possible = listener_.cls != ListenerClass::Mx && !facts_.authenticated;
  bool tls_ok = facts_.tls || !p.submission.require_tls;
  if (auth_possible && tls_ok) r += "250-AUTH PLAIN LOGIN\r\n";
  r += "250 SMTPUTF8\r\n";
  reply(r, true);
}

void Session::cmd_rset() {
  if (!backend_.idle() && txn_.active) backend_.send(Tag::Rset, "RSET\r\n");
  reset_transaction();
  reply(replies::ok().wire);
}

void Session::reset_transaction() {
  txn_.clear();
}

bool Session::ensure_backend() {
  if (!backend_.idle()) return true;
  if (backend_auth_lost_) return false;
  BackendClient::ClientInfo info;
  info.client = peer_;
  info.local = local_;
  info.helo = helo_;
  info.esmtp = esmtp_;
  backend_.connect(*policy_, config_->backend_addr, info, config_->backend_tls);
  return !finished_ && !backend_.idle();
}

void Session::cmd_mail(const smtp::Command& cmd, std::string_view line) {
  if (!helo_seen_) {
    reply_error(replies::need_helo().wire);
    return;
  }
  if (txn_.active) {
    reply_error(replies::nested_mail().wire);
    return;
  }
  auto sender = parse_mail_path(cmd.path);
  if (!sender) {
    reply_error(replies::bad_sender().wire);
    return;
  }
  const bool smtputf8 = cmd.find_param("SMTPUTF8") != nullptr;
  if (!smtputf8 && smtp::has_non_ascii(cmd.path)) {
    reply_error(replies::smtputf8_required());  // RFC 6531 §3.4
    return;
  }
  const Policy& p = *policy_;
  if (ListenerClass c = engine::class_at_mail(facts_); c != facts_.cls) {
    facts_.cls = c;
    update_log_prefix();
  }
  Counters c;
  if (facts_.authenticated)
    c.messages_last_hour =
        static_cast<uint32_t>(gw_.sending().messages_last_hour(facts_.login, gw_.now_ms()));
  if (apply(engine::mail(p, facts_, *sender, cmd.size.value_or(0), c))) return;
  junk_ = 0;
  if (!ensure_backend()) {
    if (!finished_) {
      reply(replies::backend_unavailable().wire);
      close_after_flush();
    }
    return;
  }
  txn_.active = true;
  txn_.smtputf8 = smtputf8;
  txn_.sender = std::move(*sender);
  add_backend_slot(Tag::Mail);
  // SPEC §3: AUTH= is never forwarded; the backend knows the login from the session's AUTH.
  std::string without_auth;
  backend_.send(Tag::Mail, smtp::remove_auth_param(cmd, line, without_auth) ? without_auth : line,
                true);
}

void Session::cmd_rcpt(const smtp::Command& cmd, std::string_view line) {
  if (!txn_.active) {
    reply_error(replies::need_mail().wire);
    return;
  }
  if (txn_.backend_broken) {
    reply(replies::backend_protocol_error().wire);
    return;
  }
  auto rcpt = parse_mail_path(cmd.path);
  if (!rcpt || rcpt->null) {
    reply_error(replies::bad_recipient().wire);
    return;
  }
  if (!txn_.smtputf8 && smtp::has_non_ascii(cmd.path)) {
    reply_error(replies::smtputf8_required());
    return;
  }
  Counters c;
  c.recipients_in_message = txn_.rcpt_forwarded;
  if (facts_.authenticated)
    c.recipients_last_hour =
        txn_.rcpt_forwarded +
        static_cast<uint32_t>(gw_.sending().recipients_last_hour(facts_.login, gw_.now_ms()));
  if (apply(engine::rcpt(*policy_, facts_, txn_.sender, *rcpt, c))) return;
  if (txn_.rcpt_forwarded == 0) rcpt->append_address(txn_.first_rcpt);
  ++txn_.rcpt_forwarded;
  add_backend_slot(Tag::Rcpt);
  backend_.send(Tag::Rcpt, line, true);
}

void Session::cmd_data() {
  if (!txn_.active) {
    reply_error(txn_.rcpt_forwarded ? replies::need_rcpt().wire : replies::need_mail().wire);
    return;
  }
  if (txn_.backend_broken) {
    reply(replies::backend_protocol_error().wire);
    return;
  }
  if (txn_.rcpt_accepted == 0) {
    reply(txn_.rcpt_forwarded ? replies::no_valid_recipients().wire : replies::need_rcpt().wire);
    return;
  }
  if (backend_.idle()) {
    reply(replies::backend_unavailable().wire);
    close_after_flush();
    return;
  }
  add_backend_slot(Tag::Data).sync = true;  // the client must wait for the 354
  backend_.send(Tag::Data, "DATA\r\n");
  blocked_ = true;  // the body may follow only after our 354
  suspend_deadline();
}

void Session::run_deferred() {
  if (!has_deferred_ || slot_head_ < slots_.size()) return;
  has_deferred_ = false;
  blocked_ = false;
  if (deferred_ == Verb::Data) {
    cmd_data();
  } else {
    cmd_starttls();
    // cmd_starttls already dropped the plaintext held in input_, which is all there is.
    discard_input_ = false;
  }
}

void Session::cmd_quit() {
  reply(replies::bye().wire);
  close_after_flush();
}

void Session::cmd_starttls() {
  if (listener_.tls != TlsMode::StartTls || !config_->server_tls) {
    reply_error(replies::tls_unavailable().wire);
    return;
  }
  if (facts_.tls) {
    reply_error(replies::tls_active().wire);
    return;
  }
  if (txn_.active) {
    reply_error(replies::in_transaction().wire);
    return;
  }
  reply(replies::tls_ready().wire);
  flush();
  if (finished_ || !client_) return;
  // RFC 3207: the session starts over; nothing learned before TLS is kept.
  reader_.reset();
  input_.clear();
  discard_input_ = true;
  helo_seen_ = false;
  helo_.clear();
  esmtp_ = false;
  reset_transaction();
  client_->start_tls(config_->server_tls);
}

// ---------------------------------------------------------------- AUTH

void Session::cmd_auth(const smtp::Command& cmd) {
  if (!helo_seen_) {
    reply_error(replies::need_helo().wire);
    return;
  }
  if (facts_.authenticated) {
    reply_error(replies::already_authenticated().wire);
    return;
  }
  if (txn_.active) {
    reply_error(replies::in_transaction().wire);
    return;
  }
  const Policy& p = *policy_;
  Decision d = engine::auth_attempt(p, facts_);
  if (!d.allowed()) {
    log_decision(d);
    if (!d.enforced && d.verdict == Verdict::Ban) gw_.would_ban(facts_.client, d.reason, id_);
    if (d.enforced) {
      bool counts = engine::auth_refusal_counts_as_failure(d);
      if (d.verdict == Verdict::Ban) {
        ban_record_ = gw_.ban(facts_.client, d.reason, id_);
        reply(d.reply);
        close_after_flush("banned");
        return;
      }
      auth_failed_locally(line_of(d.reply), counts);
      return;
    }
  }
  bool plain = smtp::iequals(cmd.auth_mechanism, "PLAIN");
  bool login = smtp::iequals(cmd.auth_mechanism, "LOGIN");
  if (!plain && !login) {
    reply_error(replies::auth_mechanism_unknown().wire);
    return;
  }
  if (plain) {
    if (!cmd.auth_initial_response) {
      phase_ = Phase::Sasl;
      sasl_ = SaslStep::PlainResponse;
      reply(replies::auth_plain_prompt().wire);
      return;
    }
    if (*cmd.auth_initial_response == "*") {
      auth_failed_locally(replies::auth_aborted().wire, true);
      return;
    }
    auto decoded = smtp::decode_sasl_response(*cmd.auth_initial_response);
    if (!decoded) {
      auth_failed_locally(replies::auth_bad_base64().wire, true);
      return;
    }
    auto creds = smtp::decode_plain(*decoded);
    smtp::secure_wipe(*decoded);
    if (!creds) {
      auth_failed_locally(replies::auth_malformed().wire, true);
      return;
    }
    auth_with(std::move(*creds));
    return;
  }
  // LOGIN, optionally with the username as initial response (RFC 4954 allows it).
  phase_ = Phase::Sasl;
  if (cmd.auth_initial_response) {
    handle_sasl_line(*cmd.auth_initial_response);  // treated as the username answer
    return;
  }
  sasl_ = SaslStep::LoginUser;
  reply(replies::auth_login_user_prompt().wire);
}

void Session::handle_sasl_line(std::string_view line) {
  SaslStep step = sasl_ == SaslStep::None ? SaslStep::LoginUser : sasl_;
  phase_ = Phase::Command;
  sasl_ = SaslStep::None;
  if (line == "*") {
    smtp::secure_wipe(sasl_login_);
    auth_failed_locally(replies::auth_aborted().wire, true);
    return;
  }
  auto decoded = smtp::decode_sasl_response(line);
  if (!decoded) {
    smtp::secure_wipe(sasl_login_);
    auth_failed_locally(replies::auth_bad_base64().wire, true);
    return;
  }
  switch (step) {
    case SaslStep::PlainResponse: {
      auto creds = smtp::decode_plain(*decoded);
      smtp::secure_wipe(*decoded);
      if (!creds) {
        auth_failed_locally(replies::auth_malformed().wire, true);
        return;
      }
      auth_with(std::move(*creds));
      return;
    }
    case SaslStep::None:
    case SaslStep::LoginUser:
      sasl_login_ = std::move(*decoded);
      phase_ = Phase::Sasl;
      sasl_ = SaslStep::LoginPassword;
      reply(replies::auth_login_pass_prompt().wire);
      return;
    case SaslStep::LoginPassword: {
      auto creds = smtp::make_login_credentials(sasl_login_, *decoded);
      smtp::secure_wipe(*decoded);
      smtp::secure_wipe(sasl_login_);
      if (!creds) {
        auth_failed_locally(replies::auth_malformed().wire, true);
        return;
      }
      auth_with(std::move(*creds));
      return;
    }
  }
}

void Session::auth_with(smtp::Credentials creds) {
  facts_.login = creds.authcid;
  if (!ensure_backend()) {
    if (!finished_) reply(replies::auth_backend_unavailable().wire);
    return;
  }
  if (!backend_.authenticate(creds.authcid, creds.password)) {
    reply(replies::auth_backend_unavailable().wire);
    return;
  }
  add_backend_slot(Tag::Auth);
  blocked_ = true;
  suspend_deadline();
}

void Session::auth_failed_locally(std::string_view text, bool counts) {
  LogLine(gw_.log(), "auth", log_prefix_)
      .str("login", facts_.login)
      .str("result", "refused")
      .str("reply", smtp::first_line(text))
      .write();
  gw_.metrics().auth(AuthResult::Refused);
  reply(text);
  if (counts) count_auth_failure(text);
}

void Session::count_auth_failure(std::string_view sent) {
  uint32_t n = gw_.record_auth_failure(facts_.client);
  Decision d = engine::brute_force(*policy_, facts_, n);
  if (d.verdict != Verdict::Ban) return;
  // The failing command already has its reply; the decision records what was sent.
  if (sent.size() >= 4) {
    std::string_view first = sent.substr(0, sent.find('\r'));
    d.reply.code = (first[0] - '0') * 100 + (first[1] - '0') * 10 + (first[2] - '0');
    d.reply.text = std::string(first.substr(4));
  }
  log_decision(d);
  if (!d.enforced) {
    gw_.would_ban(facts_.client, d.reason, id_);
    return;
  }
  ban_record_ = gw_.ban(facts_.client, d.reason, id_);
  close_after_flush("banned");
}

// ---------------------------------------------------------------- DATA

void Session::send_received_header() {
  const Policy& p = *policy_;
  if (!p.message.received_header) return;
  // Built in place in the backend's write buffer, where the body follows it.
  std::string* out = backend_.held_body_buffer();
  if (!out) return;
  ReceivedHeader h;
  h.helo = helo_;
  h.client = &peer_.ip;
  h.hostname = p.hostname;
  h.esmtp = esmtp_;
  h.tls = facts_.tls;
  h.authenticated = facts_.authenticated;
  h.session_id = id_;
  h.message_number = messages_ + 1;
  h.listener = listener_.name;
  h.login = facts_.login;
  h.tls_version = tls_version_;
  h.tls_cipher = tls_cipher_;
  if (txn_.rcpt_accepted == 1) h.recipient = txn_.first_rcpt;
  append_received_header(*out, h);
}

void Session::handle_body(std::string_view& in) {
  // The filter appends straight into the backend's write buffer: the body's one copy.
  std::string* out = data_answered_ ? nullptr : backend_.body_buffer();
  if (!out) {
    discard_.clear();
    out = &discard_;
  }
  auto r = body_->feed(in, *out);
  in.remove_prefix(r.consumed);
  if (r.status == smtp::BodyFilter::Status::NeedMore) {
    backend_.flush();
    if (backend_.queued_bytes() > kMaxBackendQueue && client_) client_->pause_reading();
    return;
  }
  phase_ = Phase::Command;
  if (data_answered_) {
    // The client had its 4xx when the backend failed; the body it went on sending is gone,
    // and its end gets no second reply.
    data_answered_ = false;
    body_.reset();
    reset_transaction();
    if (close_after_data_ || r.status == smtp::BodyFilter::Status::BareNewline) {
      close_after_flush();
    } else {
      arm_command_timer();
    }
    close_after_data_ = false;
    return;
  }
  const Policy& p = *policy_;
  if (r.status == smtp::BodyFilter::Status::BareNewline) {
    Decision d;
    d.stage = Stage::Data;
    d.rule = rules::kMessageBareNewline;
    d.verdict = Verdict::Reject;
    d.reason = "bare LF or CR in message body";
    d.reply = replies::bare_lf();
    log_decision(d);
    backend_.abort();
    body_.reset();
    reply(d.reply);
    close_after_flush();
    return;
  }
  uint64_t size = body_->body_bytes();
  body_.reset();
  Decision d = engine::data_end(p, facts_, size);
  if (!d.allowed()) {
    log_decision(d);
    backend_.abort();  // closed before the final dot: nothing is delivered
    if (facts_.authenticated) backend_auth_lost_ = true;
    reset_transaction();
    reply(d.reply);
    arm_command_timer();
    return;
  }
  last_size_ = size;
  last_rcpts_ = txn_.rcpt_accepted;
  last_sender_.clear();
  txn_.sender.append_address(last_sender_);
  reset_transaction();
  add_backend_slot(Tag::DataEnd);
  backend_.send(Tag::DataEnd, ".\r\n");
  backend_.flush();
  arm_command_timer();
}

// ---------------------------------------------------------------- backend replies

Session::Slot& Session::add_backend_slot(Tag tag) {
  Slot s;
  s.tag = tag;
  slots_.push_back(std::move(s));
  return slots_.back();
}

void Session::log_message(std::string_view from, uint64_t size, uint32_t recipients,
                          std::string_view reply_text, bool delivered) {
  LogLine(gw_.log(), "message", log_prefix_)
      .str("from", from)
      .num("size", static_cast<int64_t>(size))
      .num("recipients", recipients)
      .str("reply", smtp::first_line(reply_text))
      .boolean("delivered", delivered)
      .write();
}

void Session::on_backend_reply(Tag tag, const smtp::BackendReply& r) {
  gw_.metrics().observe_backend_reply(backend_.last_reply_seconds());
  switch (tag) {
    case Tag::Rset:
      return;  // the client already had its own reply
    case Tag::Mail:
      if (!r.positive()) reset_transaction();
      fill_slot(r.raw);
      break;
    case Tag::Rcpt:
      if (r.positive()) ++txn_.rcpt_accepted;
      fill_slot(r.raw);
      break;
    case Tag::Data:
      blocked_ = false;
      if (r.code == 354) {
        phase_ = Phase::Data;
        body_.emplace(policy_->message.bare_newline, policy_->message.max_bytes);
        data_answered_ = false;
        close_after_data_ = false;
        send_received_header();
        set_deadline(policy_->timeouts.data);
      } else {
        arm_command_timer();
      }
      fill_slot(r.raw);
      break;
    case Tag::DataEnd: {
      log_message(last_sender_, last_size_, last_rcpts_, r.raw, r.code >= 200 && r.code < 300);
      if (r.code >= 200 && r.code < 300) {
        ++messages_;
        gw_.metrics().message_delivered(last_size_);
        if (facts_.authenticated)
          gw_.sending().record_message(facts_.login, last_rcpts_, gw_.now_ms());
      } else {
        gw_.metrics().message_rejected();
      }
      fill_slot(r.raw);
      if (draining_) {
        // Shutting down: the message in flight is done, no new one starts here.
        reply(replies::shutting_down().wire);
        close_after_flush("drained");
      }
      break;
    }
    case Tag::Auth: {
      blocked_ = false;
      bool ok = r.code == 235;
      Decision d = engine::auth_result(*policy_, facts_, ok);
      if (ok) {
        facts_.authenticated = true;
        if (facts_.cls == ListenerClass::Auto) {
          facts_.cls = ListenerClass::Submission;
          update_log_prefix();
        }
      }
      LogLine(gw_.log(), "auth", log_prefix_)
          .str("login", facts_.login)
          .str("result", ok ? "ok" : (r.transient() ? "tempfail" : "failed"))
          .str("reply", smtp::first_line(r.raw))
          .write();
      if (ok) {
        gw_.metrics().auth(AuthResult::Ok);
        fill_slot(replies::auth_ok().wire);
      } else {
        gw_.metrics().auth(r.transient() ? AuthResult::Tempfail : AuthResult::Failed);
        fill_slot(r.raw);
        if (r.permanent()) count_auth_failure(r.raw);
      }
      arm_command_timer();
      break;
    }
  }
  flush_slots();
  run_deferred();
  pump();
}

void Session::fill_slot(std::string_view text) {
  for (size_t i = slot_head_; i < slots_.size(); ++i) {
    if (!slots_[i].ready) {
      if (i == slot_head_) {
        // The oldest reply owed (the usual case): straight to the client, no copy kept.
        write_to_client(text);
        ++slot_head_;
        return;
      }
      slots_[i].text.assign(text);
      slots_[i].ready = true;
      slot_bytes_ += text.size();
      return;
    }
  }
}

void Session::on_backend_failed(const std::string& why, bool protocol_error) {
  gw_.metrics().backend_error(protocol_error ? "protocol" : "unavailable");
  LogLine(gw_.log(), "error", log_prefix_).str("component", "backend").str("reason", why).write();
  if (facts_.authenticated) backend_auth_lost_ = true;
  const std::string_view failure =
      protocol_error ? replies::backend_protocol_error().wire : replies::backend_unavailable().wire;
  if (phase_ == Phase::Data) {
    // The message cannot complete: the client hears it now, not at the data timeout. The rest
    // of its body is read and dropped; after a 421 the session closes at its end.
    if (!data_answered_) {
      std::string from;
      txn_.sender.append_address(from);
      log_message(from, body_ ? body_->body_bytes() : 0, txn_.rcpt_accepted, failure, false);
      gw_.metrics().message_rejected();
      reply(failure);
      data_answered_ = true;
      close_after_data_ = !protocol_error;
    }
    pump();
    return;
  }
  // Replies still owed: AUTH gets a temporary failure and the session goes on; anything
  // else means the transaction is lost and the client must retry later.
  bool close = false;
  bool mail_failed = false;  // the transaction's own MAIL got the failure: it never began
  for (size_t i = slot_head_; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (s.ready) continue;
    if (s.tag == Tag::Auth) {
      s.text.assign(replies::auth_backend_unavailable().wire);
    } else {
      s.text.assign(failure);
      close = close || !protocol_error;
      mail_failed = mail_failed || s.tag == Tag::Mail;
      if (s.tag == Tag::DataEnd) {
        log_message(last_sender_, last_size_, last_rcpts_, failure, false);
        gw_.metrics().message_rejected();
      }
    }
    s.ready = true;
    slot_bytes_ += s.text.size();
  }
  blocked_ = false;
  if (has_deferred_ && deferred_ == Verb::Data) {
    has_deferred_ = false;
    reply(failure);
  }
  if (close || mail_failed || !txn_.active) {
    reset_transaction();
  } else {
    txn_.backend_broken = true;  // its RCPT/DATA get 451 until RSET
  }
  flush_slots();
  if (close) close_after_flush();
  run_deferred();  // a STARTTLS that waited for the failed replies
  pump();
}

void Session::on_backend_drained() {
  update_reading();
}

// ---------------------------------------------------------------- output

void Session::reply(std::string_view text, bool sync) {
  if (slot_head_ < slots_.size()) {
    Slot s;
    s.text.assign(text);
    s.ready = true;
    s.sync = sync;
    slot_bytes_ += text.size();
    slots_.push_back(std::move(s));
    return;
  }
  write_to_client(text);
}

void Session::write_to_client(std::string_view text) {
  if (!client_ || finished_) return;
  client_->write(text);
  bytes_out_ += text.size();
}

void Session::reply(const Reply& r) {
  reply(line_of(r));
}

void Session::flush_slots() {
  while (slot_head_ < slots_.size() && slots_[slot_head_].ready) {
    write_to_client(slots_[slot_head_].text);
    slot_bytes_ -= slots_[slot_head_].text.size();
    ++slot_head_;
  }
  if (slot_head_ == slots_.size()) {
    slots_.clear();
    slot_head_ = 0;
    slot_bytes_ = 0;
  }
}

void Session::flush() {
  if (finished_) return;
  backend_.flush();
  if (!client_) return;
  if (ban_record_ != 0) {
    if (!gw_.ban_recorded(ban_record_)) {
      gw_.wait_for_ban_record(this);  // on_ban_recorded() calls back here
      return;
    }
    ban_record_ = 0;
  }
  flushing_ = true;
  client_->flush();
  flushing_ = false;
  if (close_when_flushed_ && slot_head_ == slots_.size() && client_ && client_->queued_bytes() == 0)
    finish(close_state_);
}

void Session::on_drained(Connection&) {
  if (flushing_) return;  // inside flush(): its caller goes on from here
  if (close_when_flushed_) {
    if (slot_head_ == slots_.size()) finish(close_state_);
    return;
  }
  // A client that had stopped reading caught up: run what it sent meanwhile.
  pump();
}

void Session::close_after_flush(std::string_view state) {
  close_when_flushed_ = true;
  close_state_ = state;
  phase_ = Phase::Closing;
  if (client_) client_->pause_reading();
  // Bounded: a client that never reads its last reply does not keep the session.
  set_deadline(policy_->timeouts.command);
}

// ---------------------------------------------------------------- end

void Session::on_eof(Connection&, int status) {
  finish(status == UV_EOF ? (phase_ == Phase::Data ? "client_gone_in_data" : "client_closed")
                          : "client_error");
}

void Session::on_timer(Timer&) {
  // Not yet, or no deadline while the session waits on the backend (whose own timer bounds it).
  if (!deadline_.expired(*timer_, uv_now(gw_.loop()))) return;
  if (close_when_flushed_ || output_full()) {
    // The client does not read what it is owed: one more reply would not reach it either.
    finish(close_when_flushed_ ? close_state_ : "timeout");
    return;
  }
  // Replies still owed by the backend are dropped: the session is over.
  slots_.clear();
  slot_head_ = 0;
  slot_bytes_ = 0;
  blocked_ = false;
  phase_ = Phase::Command;
  reply(replies::idle_timeout(policy_->hostname));
  close_after_flush("timeout");
  flush();
}

void Session::drain() {
  draining_ = true;
  if (phase_ == Phase::Data && data_answered_) {
    // Its message already failed and the client has its 4xx: nothing is in flight.
    close_after_flush("drained");
    flush();
    return;
  }
  if (phase_ == Phase::Command && !blocked_ && slot_head_ == slots_.size() && !txn_.active) {
    reply(replies::shutting_down().wire);
    close_after_flush();
    flush();
  }
}

void Session::finish(std::string_view state) {
  if (finished_) return;
  finished_ = true;
  gw_.release(*this);
  if (ban_record_ != 0) gw_.forget_ban_waiter(this);
  if (counted_) {
    gw_.metrics().connection_closed();
    gw_.metrics().session(listener_.name, to_string(facts_.cls));
  }
  if (phase_ == Phase::Data || txn_.active) {
    backend_.abort();  // never complete a message the client did not finish
  } else {
    backend_.quit();
  }
  if (client_) {
    client_->close();
    client_ = nullptr;
  }
  if (timer_) {
    timer_->close();
    timer_ = nullptr;
  }
  smtp::secure_wipe(sasl_login_);
  LogLine line(gw_.log(), "session_close", log_prefix_);
  line.str("state", state)
      .num("duration_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - started_)
                              .count())
      .num("bytes_in", static_cast<int64_t>(bytes_in_))
      .num("bytes_out", static_cast<int64_t>(bytes_out_))
      .num("messages", messages_);
  if (facts_.authenticated) line.str("login", facts_.login);
  if (facts_.tls) line.str("tls_version", tls_version_);
  line.write();
  gw_.retire(*this);
}

}  // namespace smtpgate
