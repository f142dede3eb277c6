#include "proxy/session.h"

#include <charconv>
#include <ctime>

#include "policy/replies.h"
#include "proxy/server.h"

namespace smtpgate {
namespace {

using smtp::Verb;
using Tag = BackendClient::Tag;

// Protocol replies the gateway gives on its own (policy replies live in policy/replies.h).
constexpr std::string_view kOk = "250 2.0.0 Ok\r\n";
constexpr std::string_view kBye = "221 2.0.0 Bye\r\n";
constexpr std::string_view kUnknown = "500 5.5.1 Error: command not recognized\r\n";
constexpr std::string_view kNeedHelo = "503 5.5.1 Error: send HELO/EHLO first\r\n";
constexpr std::string_view kNestedMail = "503 5.5.1 Error: nested MAIL command\r\n";
constexpr std::string_view kNeedMail = "503 5.5.1 Error: need MAIL command\r\n";
constexpr std::string_view kNeedRcpt = "503 5.5.1 Error: need RCPT command\r\n";
constexpr std::string_view kNoValidRcpt = "554 5.5.1 Error: no valid recipients\r\n";
constexpr std::string_view kVrfy = "252 2.0.0 Cannot VRFY user, but will accept message\r\n";
constexpr std::string_view kHelp = "214 2.0.0 See RFC 5321\r\n";
constexpr std::string_view kNotImpl = "502 5.5.1 Error: command not implemented\r\n";
constexpr std::string_view kAuthTwice = "503 5.5.1 Error: already authenticated\r\n";
constexpr std::string_view kAuthMech = "504 5.5.4 Unrecognized authentication type\r\n";
constexpr std::string_view kAuthAborted = "501 5.7.0 Authentication aborted\r\n";
constexpr std::string_view kAuthBadB64 = "501 5.5.2 Cannot decode response\r\n";
constexpr std::string_view kAuthBadCreds = "501 5.5.4 Malformed credentials\r\n";
constexpr std::string_view kAuthOk = "235 2.7.0 Authentication successful\r\n";
constexpr std::string_view kAuthBackendDown = "454 4.7.0 Temporary authentication failure\r\n";
constexpr std::string_view kTlsUnavailable = "454 4.7.0 TLS not available\r\n";
constexpr std::string_view kTlsReady = "220 2.0.0 Ready to start TLS\r\n";
constexpr std::string_view kTlsActive = "503 5.5.1 Error: TLS already active\r\n";
constexpr std::string_view kInTransaction = "503 5.5.1 Error: MAIL transaction in progress\r\n";
constexpr std::string_view kBackendDown = "421 4.4.1 backend unavailable, try later\r\n";
constexpr std::string_view kBackendProtocol = "451 4.3.0 Error: backend protocol error\r\n";
constexpr std::string_view kTooManyErrors = "421 4.7.0 Error: too many errors\r\n";
constexpr std::string_view kShuttingDown =
    "421 4.3.2 Service shutting down, closing connection\r\n";
constexpr std::string_view kBadSender = "501 5.1.7 Bad sender address syntax\r\n";
constexpr std::string_view kBadRcpt = "501 5.1.3 Bad recipient address syntax\r\n";

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

// Client-supplied text going into a header: printable ASCII only.
void append_header_safe(std::string& out, std::string_view s) {
  size_t at = out.size();
  out.append(s);
  for (size_t i = at; i < out.size(); ++i) {
    char c = out[i];
    if (c <= 32 || c >= 127 || c == '(' || c == ')') out[i] = '?';
  }
}

std::string_view rfc5322_date() {
  static std::time_t cached_at = -1;
  static char buf[64];
  std::time_t now = std::time(nullptr);
  if (now != cached_at) {
    std::tm tm{};
    gmtime_r(&now, &tm);
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    cached_at = now;
  }
  return buf;
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
    gw_.metrics().connection_refused(refusal->reason.find("rate") != std::string::npos
                                         ? RefusedReason::Rate
                                         : RefusedReason::Limit);
    log_decision(*refusal);
    reply(refusal->reply);
    close_after_flush("refused");
    flush();
    return;
  }
  if (Decision d = engine::connect(p, facts_); apply(d)) {
    gw_.metrics().connection_refused(d.rule == "ban" ? RefusedReason::Ban : RefusedReason::Access);
    close_after_flush("refused");
    flush();
    return;
  }
  arm_command_timer();
  if (listener_.tls == TlsMode::Implicit) {
    // RFC 8314: the greeting comes only after the handshake.
    client_->start_tls(config_->server_tls);
  } else {
    greet();
  }
  client_->start_reading();
}

void Session::greet() {
  reply("220 " + policy_->hostname + " ESMTP\r\n");
  flush();
}

void Session::on_tls_ready(Connection& c) {
  facts_.tls = true;
  tls_version_ = c.tls()->version();
  tls_cipher_ = c.tls()->cipher();
  LogLine(gw_.log(), "tls", log_prefix_)
      .str("tls_version", tls_version_)
      .str("tls_cipher", tls_cipher_)
      .write();
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
  if (!timer_) return;
  // One timer, re-armed only when it would fire too late: commands just move the deadline.
  uint64_t now = uv_now(gw_.loop());
  deadline_ = now + static_cast<uint64_t>(after.count());
  if (!timer_->active() || timer_due_ > deadline_) {
    timer_->start(after);
    timer_due_ = deadline_;
  }
}

void Session::suspend_deadline() {
  // Waiting on the backend, whose own timer bounds the wait.
  deadline_ = kNoDeadline;
}

// ---------------------------------------------------------------- input

void Session::on_data(Connection&, std::string_view data) {
  bytes_in_ += data.size();
  if (input_.empty() && !blocked_) {
    size_t used = process_bytes(data);
    if (used < data.size() && !finished_) input_.assign(data.substr(used));
  } else {
    input_.append(data);
    if (!blocked_) process();  // held bytes go first; normally only while blocked
  }
  if (input_.size() > kMaxHeldInput && client_) client_->pause_reading();
  flush();
}

void Session::process() {
  if (input_.empty() || finished_) return;
  size_t used = process_bytes(input_);
  if (finished_) return;
  input_.erase(0, used);
  if (input_.size() <= kMaxHeldInput && client_ && !close_when_flushed_ &&
      backend_.queued_bytes() < kMaxBackendQueue)
    client_->start_reading();
  if (input_.capacity() > 4096 && input_.empty()) std::string().swap(input_);
}

size_t Session::process_bytes(std::string_view in) {
  size_t start = in.size();
  while (!in.empty() && !blocked_ && !finished_ && phase_ != Phase::Closing) {
    if (phase_ == Phase::Data) {
      handle_body(in);
      continue;
    }
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
    handle_line(r.line);
    if (discard_input_) {
      // Anything pipelined after STARTTLS was sent in the clear: drop it unread.
      discard_input_ = false;
      return start;
    }
    if (!blocked_) arm_command_timer();
  }
  return start - in.size();
}

void Session::handle_line(std::string_view line) {
  if (phase_ == Phase::Sasl) {
    handle_sasl_line(line);
    return;
  }
  smtp::Command cmd = smtp::parse_command(line);
  handle_command(cmd, line);
}

void Session::handle_command(const smtp::Command& cmd, std::string_view line) {
  if (!cmd.ok()) {
    reply_error("501 5.5.4 Syntax error: " + std::string(cmd.error) + "\r\n");
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
      reply(kOk);
      return;
    case Verb::Quit:
      cmd_quit();
      return;
    case Verb::Help:
      reply(kHelp);
      return;
    case Verb::Vrfy:
      reply(kVrfy);
      return;
    case Verb::Auth:
      cmd_auth(cmd);
      return;
    case Verb::Expn:
    case Verb::Bdat:
      reply_error(kNotImpl);
      return;
    case Verb::Unknown:
      reply_error(kUnknown);
      return;
  }
}

void Session::reply_error(std::string_view text) {
  reply(text);
  // Each error reply counts; at the limit the client is told so and the session ends.
  if (++errors_ < kMaxErrors) return;
  reply(kTooManyErrors);
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
    reply("250 " + p.hostname + "\r\n");
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
  reply(r);
}

void Session::cmd_rset() {
  if (!backend_.idle() && txn_.active) backend_.send(Tag::Rset, "RSET\r\n");
  reset_transaction();
  reply(kOk);
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
    reply_error(kNeedHelo);
    return;
  }
  if (txn_.active) {
    reply_error(kNestedMail);
    return;
  }
  auto sender = parse_mail_path(cmd.path);
  if (!sender) {
    reply_error(kBadSender);
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
  if (!ensure_backend()) {
    if (!finished_) {
      reply(kBackendDown);
      close_after_flush();
    }
    return;
  }
  txn_.active = true;
  txn_.sender = std::move(*sender);
  add_backend_slot(Tag::Mail);
  backend_.send(Tag::Mail, line, true);
}

void Session::cmd_rcpt(const smtp::Command& cmd, std::string_view line) {
  if (!txn_.active) {
    reply_error(kNeedMail);
    return;
  }
  auto rcpt = parse_mail_path(cmd.path);
  if (!rcpt || rcpt->null) {
    reply_error(kBadRcpt);
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
    reply_error(txn_.rcpt_forwarded ? kNeedRcpt : kNeedMail);
    return;
  }
  if (txn_.rcpt_accepted == 0) {
    reply(txn_.rcpt_forwarded ? kNoValidRcpt : kNeedRcpt);
    return;
  }
  if (backend_.idle()) {
    reply(kBackendDown);
    close_after_flush();
    return;
  }
  add_backend_slot(Tag::Data);
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
  reply(kBye);
  close_after_flush();
}

void Session::cmd_starttls() {
  if (listener_.tls != TlsMode::StartTls || !config_->server_tls) {
    reply_error(kTlsUnavailable);
    return;
  }
  if (facts_.tls) {
    reply_error(kTlsActive);
    return;
  }
  if (txn_.active) {
    reply_error(kInTransaction);
    return;
  }
  reply(kTlsReady);
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
    reply_error(kNeedHelo);
    return;
  }
  if (facts_.authenticated) {
    reply_error(kAuthTwice);
    return;
  }
  if (txn_.active) {
    reply_error(kInTransaction);
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
        gw_.ban(facts_.client, d.reason, id_);
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
    reply_error(kAuthMech);
    return;
  }
  if (plain) {
    if (!cmd.auth_initial_response) {
      phase_ = Phase::Sasl;
      sasl_ = SaslStep::PlainResponse;
      reply("334 \r\n");
      return;
    }
    if (*cmd.auth_initial_response == "*") {
      auth_failed_locally(kAuthAborted, true);
      return;
    }
    auto creds = smtp::parse_plain_response(*cmd.auth_initial_response);
    if (!creds) {
      auth_failed_locally(kAuthBadCreds, true);
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
  reply("334 VXNlcm5hbWU6\r\n");
}

void Session::handle_sasl_line(std::string_view line) {
  SaslStep step = sasl_ == SaslStep::None ? SaslStep::LoginUser : sasl_;
  phase_ = Phase::Command;
  sasl_ = SaslStep::None;
  if (line == "*") {
    smtp::secure_wipe(sasl_login_);
    auth_failed_locally(kAuthAborted, true);
    return;
  }
  auto decoded = smtp::decode_sasl_response(line);
  if (!decoded) {
    smtp::secure_wipe(sasl_login_);
    auth_failed_locally(kAuthBadB64, true);
    return;
  }
  switch (step) {
    case SaslStep::PlainResponse: {
      auto creds = smtp::decode_plain(*decoded);
      smtp::secure_wipe(*decoded);
      if (!creds) {
        auth_failed_locally(kAuthBadCreds, true);
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
      reply("334 UGFzc3dvcmQ6\r\n");
      return;
    case SaslStep::LoginPassword: {
      auto creds = smtp::make_login_credentials(sasl_login_, *decoded);
      smtp::secure_wipe(*decoded);
      smtp::secure_wipe(sasl_login_);
      if (!creds) {
        auth_failed_locally(kAuthBadCreds, true);
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
    if (!finished_) reply(kAuthBackendDown);
    return;
  }
  if (!backend_.authenticate(creds.authcid, creds.password)) {
    reply(kAuthBackendDown);
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
  gw_.ban(facts_.client, d.reason, id_);
  close_after_flush("banned");
}

// ---------------------------------------------------------------- DATA

void Session::send_received_header() {
  const Policy& p = *policy_;
  if (!p.message.received_header) return;
  // Built in place in the backend's write buffer, where the body follows it.
  std::string* out = backend_.held_body_buffer();
  if (!out) return;
  std::string& h = *out;
  h += "Received: from ";
  append_header_safe(h, helo_);
  h += peer_.ip.is_v4() ? " ([" : " ([IPv6:";
  h += peer_.ip.to_string();  // an IPv4 text fits std::string's inline buffer
  h += "])\r\n\tby ";
  h += p.hostname;
  h += " (smtpgate) with ";
  h += esmtp_ ? "ESMTP" : "SMTP";
  if (facts_.tls) h += 'S';
  if (facts_.authenticated) h += 'A';
  h += " id ";
  h += id_;
  h += '.';
  char num[16];
  auto [end, ec] = std::to_chars(num, num + sizeof num, messages_ + 1);
  (void)ec;
  h.append(num, end);
  h += "\r\n\t(listener ";
  h += listener_.name;
  if (facts_.authenticated) {
    h += ", authenticated as ";
    append_header_safe(h, facts_.login);
  }
  h += ')';
  if (facts_.tls) {
    h += "\r\n\t(using ";
    h += tls_version_;
    h += " with cipher ";
    h += tls_cipher_;
    h += ')';
  }
  if (txn_.rcpt_accepted == 1 && !txn_.first_rcpt.empty()) {
    h += "\r\n\tfor <";
    append_header_safe(h, txn_.first_rcpt);
    h += '>';
  }
  h += "; ";
  h += rfc5322_date();
  h += "\r\n";
}

void Session::handle_body(std::string_view& in) {
  // The filter appends straight into the backend's write buffer: the body's one copy.
  std::string* out = data_error_ ? nullptr : backend_.body_buffer();
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
  const Policy& p = *policy_;
  if (r.status == smtp::BodyFilter::Status::BareNewline) {
    Decision d;
    d.stage = Stage::Data;
    d.rule = "message.bare_newline";
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
  if (data_error_) {
    Reply e = *data_error_;
    data_error_.reset();
    reset_transaction();
    reply(e);
    if (e.close) close_after_flush();
    return;
  }
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

size_t Session::add_backend_slot(Tag tag) {
  Slot s;
  s.tag = tag;
  slots_.push_back(std::move(s));
  return slots_.size() - 1;
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
        data_error_.reset();
        send_received_header();
        set_deadline(policy_->timeouts.data);
      } else {
        arm_command_timer();
      }
      fill_slot(r.raw);
      break;
    case Tag::DataEnd: {
      LogLine(gw_.log(), "message", log_prefix_)
          .str("from", last_sender_)
          .num("size", static_cast<int64_t>(last_size_))
          .num("recipients", last_rcpts_)
          .str("reply", smtp::first_line(r.raw))
          .boolean("delivered", r.code >= 200 && r.code < 300)
          .write();
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
        reply(kShuttingDown);
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
        fill_slot(kAuthOk);
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
  process();
  flush();
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
      return;
    }
  }
}

void Session::on_backend_failed(const std::string& why, bool protocol_error) {
  gw_.metrics().backend_error(protocol_error ? "protocol" : "unavailable");
  LogLine(gw_.log(), "error", log_prefix_).str("component", "backend").str("reason", why).write();
  if (facts_.authenticated) backend_auth_lost_ = true;
  if (phase_ == Phase::Data) {
    // The message cannot complete: answer at once and stop reading its body.
    body_.reset();
    phase_ = Phase::Command;
    reply(protocol_error ? kBackendProtocol : kBackendDown);
    close_after_flush();
    return;
  }
  // Replies still owed: AUTH gets a temporary failure and the session goes on; anything
  // else means the transaction is lost and the client must retry later.
  bool close = false;
  for (size_t i = slot_head_; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (s.ready) continue;
    if (s.tag == Tag::Auth) {
      s.text.assign(kAuthBackendDown);
    } else {
      s.text.assign(protocol_error ? kBackendProtocol : kBackendDown);
      close = close || !protocol_error;
    }
    s.ready = true;
  }
  blocked_ = false;
  has_deferred_ = false;
  reset_transaction();
  flush_slots();
  if (close) close_after_flush();
  if (!finished_ && !close_when_flushed_) process();
  flush();
}

void Session::on_backend_drained() {
  if (phase_ == Phase::Data && client_ && !finished_ && input_.size() <= kMaxHeldInput)
    client_->start_reading();
}

// ---------------------------------------------------------------- output

void Session::reply(std::string_view text) {
  if (slot_head_ < slots_.size()) {
    Slot s;
    s.text.assign(text);
    s.ready = true;
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
    ++slot_head_;
  }
  if (slot_head_ == slots_.size()) {
    slots_.clear();
    slot_head_ = 0;
  }
}

void Session::flush() {
  if (finished_) return;
  backend_.flush();
  if (!client_) return;
  client_->flush();
  if (close_when_flushed_ && slot_head_ == slots_.size() && client_ && client_->queued_bytes() == 0)
    finish(close_state_);
}

void Session::on_drained(Connection&) {
  if (close_when_flushed_ && slot_head_ == slots_.size()) finish(close_state_);
}

void Session::close_after_flush(std::string_view state) {
  close_when_flushed_ = true;
  close_state_ = state;
  phase_ = Phase::Closing;
  if (client_) client_->pause_reading();
}

// ---------------------------------------------------------------- end

void Session::on_eof(Connection&, int status) {
  finish(status == UV_EOF ? (phase_ == Phase::Data ? "client_gone_in_data" : "client_closed")
                          : "client_error");
}

void Session::on_timer(Timer&) {
  if (deadline_ == kNoDeadline) return;  // re-armed when the session waits on the client again
  uint64_t now = uv_now(gw_.loop());
  if (now < deadline_) {
    timer_->start(std::chrono::milliseconds(deadline_ - now));
    timer_due_ = deadline_;
    return;
  }
  // Replies still owed by the backend are dropped: the session is over.
  slots_.clear();
  slot_head_ = 0;
  blocked_ = false;
  phase_ = Phase::Command;
  reply(replies::idle_timeout(policy_->hostname));
  close_after_flush("timeout");
  flush();
}

void Session::drain() {
  draining_ = true;
  if (phase_ == Phase::Command && !blocked_ && slot_head_ == slots_.size() && !txn_.active) {
    reply(kShuttingDown);
    close_after_flush();
    flush();
  }
}

void Session::finish(std::string_view state) {
  if (finished_) return;
  finished_ = true;
  gw_.release(*this);
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
  gw_.retire(this);
}

}  // namespace smtpgate
