#include "proxy/backend_client.h"

#include "proxy/loop_clock.h"
#include "proxy/smtp/sasl.h"

namespace smtpgate {
namespace {

std::string first_line(const smtp::BackendReply& r) {
  return std::string(smtp::first_line(r.raw));
}

}  // namespace

BackendClient::~BackendClient() {
  abort();
  smtp::secure_wipe(auth_user_);
  smtp::secure_wipe(auth_pass_);
}

void BackendClient::connect(const Policy& policy, const sockaddr_storage& addr,
                            const ClientInfo& client, std::shared_ptr<const TlsContext> tls) {
  close_connection();
  tls_mode_ = policy.backend.tls;
  tls_ctx_ = std::move(tls);
  tls_up_ = false;
  client_ = client;
  client_ip_ = policy.backend.client_ip;
  ehlo_name_ = policy.hostname;
  connect_timeout_ = policy.timeouts.backend_connect;
  reply_timeout_ = policy.timeouts.backend_reply;
  data_done_timeout_ = policy.timeouts.backend_data_done;
  caps_ = {};
  parser_.reset();
  pending_.clear();
  conn_ = Connection::create(loop_, this);
  if (!timer_) timer_ = Timer::create(loop_, this);
  state_ = State::Connecting;
  set_deadline(connect_timeout_);
  int rc = conn_->connect(reinterpret_cast<const sockaddr*>(&addr));
  if (rc != 0) fail(std::string("connect: ") + uv_strerror(rc), false);
}

void BackendClient::on_connected(Connection&, int status) {
  if (status != 0) {
    fail(std::string("connect: ") + uv_strerror(status), false);
    return;
  }
  conn_->start_reading();
  if (client_ip_ == ClientIpMode::ProxyV1)
    conn_->write(proxy_v1_header(client_.client, client_.local));
  if (client_ip_ == ClientIpMode::ProxyV2)
    conn_->write(proxy_v2_header(client_.client, client_.local));
  conn_->flush();
  set_deadline(reply_timeout_);
  if (tls_mode_ == BackendTls::Implicit) {
    state_ = State::TlsHandshake;
    conn_->start_tls(tls_ctx_);
    return;
  }
  state_ = State::Banner;
}

void BackendClient::on_tls_ready(Connection&) {
  tls_up_ = true;
  set_deadline(reply_timeout_);
  if (tls_mode_ == BackendTls::Implicit) {
    state_ = State::Banner;
  } else {
    send_ehlo();  // RFC 3207: start over after the handshake
  }
}

void BackendClient::on_tls_failed(Connection&, const std::string& reason) {
  fail("TLS to backend failed: " + reason, false);
}

void BackendClient::write_line(std::string_view line) {
  conn_->write(line);
}

void BackendClient::send_ehlo() {
  write_line("EHLO " + ehlo_name_ + "\r\n");
  conn_->flush();
  state_ = State::Ehlo;
}

bool BackendClient::must_hold() const {
  // Commands go out in the session's order: behind anything held (before Ready, or while a
  // backend without PIPELINING still owes a reply).
  return state_ != State::Ready || !held_.empty() || (!caps_.pipelining && !pending_.empty());
}

void BackendClient::send(Tag tag, std::string_view line, bool add_crlf) {
  if (must_hold()) {
    std::string held(line);
    if (add_crlf) held += "\r\n";
    held_.emplace_back(tag, std::move(held));
    return;
  }
  write_command(tag, line, add_crlf);
}

void BackendClient::write_command(Tag tag, std::string_view line, bool add_crlf) {
  if (pending_.empty()) arm_reply_timer(tag);
  pending_.push_back(tag);
  conn_->write(line);
  if (add_crlf) conn_->write("\r\n");
  hold_flush_ = false;
}

bool BackendClient::authenticate(std::string_view login, std::string_view password) {
  if (state_ == State::Ready && !caps_.auth_plain && !caps_.auth_login) return false;
  auth_user_.assign(login);
  auth_pass_.assign(password);
  if (must_hold()) {
    // Before Ready the mechanism is chosen once the EHLO reply is known.
    held_.emplace_back(Tag::Auth, std::string());
    return true;
  }
  write_auth();
  return true;
}

void BackendClient::write_auth() {
  const std::string_view login = auth_user_, password = auth_pass_;
  if (caps_.auth_plain) {
    std::string blob;
    blob.reserve(login.size() + password.size() + 2);
    blob += '\0';
    blob += login;
    blob += '\0';
    blob += password;
    std::string line = "AUTH PLAIN " + smtp::base64_encode(blob) + "\r\n";
    smtp::secure_wipe(blob);
    auth_step_ = AuthStep::PlainSent;
    conn_->write(line);
    smtp::secure_wipe(line);
  } else {
    auth_step_ = AuthStep::LoginSent;
    conn_->write("AUTH LOGIN\r\n");
  }
  if (pending_.empty()) arm_reply_timer(Tag::Auth);
  pending_.push_back(Tag::Auth);
}

void BackendClient::arm_reply_timer(Tag tag) {
  set_deadline(tag == Tag::DataEnd ? data_done_timeout_ : reply_timeout_);
  waiting_since_ns_ = LoopClock::now_ns();
}

void BackendClient::set_deadline(std::chrono::milliseconds after) {
  deadline_.set(*timer_, uv_now(loop_), after);
}

void BackendClient::on_data(Connection&, std::string_view data) {
  // During the handshake each step owes one reply; once ready, the commands already written.
  chunk_owed_ = state_ == State::Ready ? pending_.size() : 1;
  while (!data.empty()) {
    auto r = parser_.feed(data);
    data.remove_prefix(r.consumed);
    if (r.status == smtp::ReplyParser::Status::NeedMore) break;
    if (r.status == smtp::ReplyParser::Status::Error) {
      fail("malformed reply: " + std::string(parser_.error()), true);
      return;
    }
    Connection* c = conn_.get();
    handle_reply(parser_.reply());
    // The handler may have failed or aborted this connection: stop reading its bytes.
    if (conn_.get() != c || !conn_) return;
    if (drop_rest_) {
      // Whatever followed the 220 in the clear is not trusted: the TLS session starts now.
      drop_rest_ = false;
      parser_.reset();
      conn_->start_tls(tls_ctx_);
      return;
    }
  }
  flush();
}

void BackendClient::handle_reply(const smtp::BackendReply& r) {
  switch (state_) {
    case State::Idle:
    case State::Connecting:
    case State::TlsHandshake:
      return;
    default:
      break;
  }
  if (chunk_owed_ == 0) {
    // E.g. a second reply to EHLO, or a 250 in the same write as the 354 to DATA (before the
    // gateway could have sent the final dot): never taken as the answer to a later command.
    fail("reply out of turn: " + first_line(r), true);
    return;
  }
  --chunk_owed_;
  if (state_ != State::Ready) chunk_owed_ = 0;  // what follows answers what is written now
  switch (state_) {
    case State::Idle:
    case State::Connecting:
    case State::TlsHandshake:
      return;
    case State::StartTls:
      if (r.code != 220) {
        fail("STARTTLS: " + first_line(r), false);
        return;
      }
      state_ = State::TlsHandshake;
      drop_rest_ = true;
      return;
    case State::Banner:
      if (r.code != 220) {
        fail("greeting: " + first_line(r), false);
        return;
      }
      send_ehlo();
      return;
    case State::Ehlo:
      if (r.code != 250) {
        fail("EHLO: " + first_line(r), false);
        return;
      }
      caps_ = smtp::parse_ehlo_capabilities(r);
      if (tls_mode_ == BackendTls::StartTls && !tls_up_) {
        // Never a silent downgrade: a backend that does not offer STARTTLS is a failure.
        if (!caps_.starttls) {
          fail("backend does not offer STARTTLS", false);
          return;
        }
        write_line("STARTTLS\r\n");
        conn_->flush();
        state_ = State::StartTls;
        return;
      }
      if (client_ip_ == ClientIpMode::Xclient && caps_.xclient &&
          client_.client.ip != IpAddress()) {
        std::string x = "XCLIENT";
        const auto& ip = client_.client.ip;
        if (caps_.xclient_has(smtp::EhloCapabilities::kAddr))
          x += " ADDR=" + (ip.is_v4() ? ip.to_string() : "IPV6:" + ip.to_string());
        if (caps_.xclient_has(smtp::EhloCapabilities::kPort))
          x += " PORT=" + std::to_string(client_.client.port);
        if (caps_.xclient_has(smtp::EhloCapabilities::kName)) x += " NAME=[UNAVAILABLE]";
        if (caps_.xclient_has(smtp::EhloCapabilities::kHelo) && !client_.helo.empty())
          x += " HELO=" + smtp::xtext_encode(client_.helo);
        if (caps_.xclient_has(smtp::EhloCapabilities::kProto))
          x += client_.esmtp ? " PROTO=ESMTP" : " PROTO=SMTP";
        client_ip_ = ClientIpMode::None;  // once per connection
        write_line(x + "\r\n");
        conn_->flush();
        state_ = State::Xclient;
        return;
      }
      become_ready();
      return;
    case State::Xclient:
      // Postfix answers XCLIENT with a new greeting; the session starts over with EHLO.
      if (r.code != 220) {
        fail("XCLIENT: " + first_line(r), false);
        return;
      }
      send_ehlo();
      return;
    case State::Ready:
      break;
  }
  if (pending_.empty()) {
    fail("reply out of turn: " + first_line(r), true);
    return;
  }
  if (pending_.front() == Tag::Auth && r.code == 334) {
    chunk_owed_ = 0;  // the next reply answers the line written now
    handle_auth_reply(r);
    return;
  }
  Tag tag = pending_.front();
  if (!smtp::reply_fits(tag, r.code)) {
    fail("unexpected reply to " + std::string(smtp::to_string(tag)) + ": " + first_line(r), true);
    return;
  }
  if (tag == Tag::Data && r.code == 354) chunk_owed_ = 0;  // only the final dot is answered next
  pending_.pop_front();
  last_reply_seconds_ = static_cast<double>(LoopClock::now_ns() - waiting_since_ns_) / 1e9;
  if (tag == Tag::Auth) {
    auth_step_ = AuthStep::None;
    smtp::secure_wipe(auth_user_);
    smtp::secure_wipe(auth_pass_);
  }
  if (pending_.empty()) {
    deadline_.clear();
  } else {
    arm_reply_timer(pending_.front());
  }
  Connection* c = conn_.get();
  events_->on_backend_reply(tag, r);
  if (conn_.get() != c || !conn_) return;
  release_held();
}

void BackendClient::release_held() {
  // Without PIPELINING, the next held command goes out once the last reply is in.
  while (conn_ && !held_.empty() && (caps_.pipelining || pending_.empty())) {
    auto [t, line] = std::move(held_.front());
    held_.pop_front();
    if (t == Tag::Auth && line.empty()) {
      if (!caps_.auth_plain && !caps_.auth_login) {
        fail("backend offers no AUTH mechanism the gateway can use", false);
        return;
      }
      write_auth();
    } else {
      write_command(t, line, false);
    }
  }
}

void BackendClient::handle_auth_reply(const smtp::BackendReply& r) {
  arm_reply_timer(Tag::Auth);
  switch (auth_step_) {
    case AuthStep::LoginSent: {
      std::string line = smtp::base64_encode(auth_user_) + "\r\n";
      conn_->write(line);
      auth_step_ = AuthStep::LoginUserSent;
      return;
    }
    case AuthStep::LoginUserSent: {
      std::string line = smtp::base64_encode(auth_pass_) + "\r\n";
      conn_->write(line);
      smtp::secure_wipe(line);
      auth_step_ = AuthStep::LoginPassSent;
      return;
    }
    default:
      // A challenge we did not expect: cancel the exchange; the backend answers 501.
      conn_->write("*\r\n");
      (void)r;
      return;
  }
}

void BackendClient::become_ready() {
  state_ = State::Ready;
  deadline_.clear();
  Connection* c = conn_.get();
  events_->on_backend_ready();
  if (conn_.get() != c || !conn_) return;
  release_held();
  if (conn_) conn_->flush();
}

void BackendClient::on_eof(Connection&, int status) {
  fail(status == UV_EOF ? "connection closed by backend" : std::string(uv_strerror(status)), false);
}

void BackendClient::on_drained(Connection&) {
  events_->on_backend_drained();
}

void BackendClient::on_timer(Timer&) {
  if (!deadline_.expired(*timer_, uv_now(loop_))) return;
  fail(state_ == State::Connecting ? "connect timeout" : "reply timeout", false);
}

void BackendClient::close_connection() {
  conn_.reset();
  if (timer_) timer_->stop();
  deadline_.clear();
  state_ = State::Idle;
  hold_flush_ = false;
  pending_.clear();
  held_.clear();
  auth_step_ = AuthStep::None;
  parser_.reset();
}

void BackendClient::fail(const std::string& why, bool protocol_error) {
  close_connection();
  smtp::secure_wipe(auth_user_);
  smtp::secure_wipe(auth_pass_);
  events_->on_backend_failed(why, protocol_error);
}

void BackendClient::abort() {
  close_connection();
  timer_.reset();
}

void BackendClient::quit() {
  if (conn_ && state_ == State::Ready && pending_.empty()) {
    conn_->write("QUIT\r\n");
    conn_->flush();
  }
  abort();
}

}  // namespace smtpgate
