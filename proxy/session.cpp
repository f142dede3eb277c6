#include "proxy/session.h"

#include "proxy/smtp/proxy_header.h"
#include "proxy/worker.h"

#include "proxy/gateway.h"

namespace smtpgate {
Session::Session(Gateway& gw, Worker& worker, ListenerRuntime& lr,
                 std::shared_ptr<const RuntimeConfig> config)
    : gw_(gw),
      worker_(worker),
      config_(std::move(config)),
      listener_(lr.config),
      backend_(worker.loop(), this),
      services_(gw, listener_, gw.next_session_id()),
      started_(std::chrono::steady_clock::now()) {}

Session::~Session() = default;

Session::Scope::~Scope() {
  if (--s_.depth_ == 0 && s_.posted_.any) s_.run_posted();
}

void Session::run_posted() {
  // A backend failure is logged even when the session ended meanwhile (its cause, say EMFILE,
  // matters to the operator); the rest only concerns a live session.
  while (posted_.any) {
    Posted p = std::move(posted_);
    posted_ = Posted{};
    ++depth_;  // what these post in turn waits for the next round of this loop
    if (p.backend_failed) backend_gone(p.backend_why, p.backend_protocol_error);
    if (p.eof && !finished_) client_gone(*p.eof);
    if (p.drained && !finished_) client_drained();
    if (p.backend_drained && !finished_) update_reading();
    --depth_;
  }
}

// ---------------------------------------------------------------- start

void Session::start(uv_stream_t* server) {
  Scope scope(*this);
  client_ = Connection::create(worker_.loop(), this);
  timer_ = Timer::create(worker_.loop(), this);
  if (client_->accept(server) != 0) {
    finish("accept_failed");
    return;
  }
  accepted();
}

void Session::start_adopted(int fd) {
  Scope scope(*this);
  client_ = Connection::create(worker_.loop(), this);
  timer_ = Timer::create(worker_.loop(), this);
  if (client_->adopt(fd) != 0) {
    finish("accept_failed");
    return;
  }
  accepted();
}

void Session::accepted() {
  sockaddr_storage ss{};
  int len = sizeof ss;
  uv_tcp_getpeername(client_->handle(), reinterpret_cast<sockaddr*>(&ss), &len);
  peer_ = endpoint_of(ss);
  len = sizeof ss;
  uv_tcp_getsockname(client_->handle(), reinterpret_cast<sockaddr*>(&ss), &len);
  local_ = endpoint_of(ss);
  services_.set_client(format_endpoint(peer_));
  if (listener_.proxy_protocol) {
    await_proxy_header();
  } else {
    begin();
  }
}

void Session::begin() {
  smtp::Dialogue::Setup setup;
  setup.policy = config_->policy.get();
  setup.listener = &listener_;
  setup.tls_available = config_->server_tls != nullptr;
  setup.client = peer_.ip;
  setup.banned = gw_.banned(peer_.ip);
  setup.session_id = services_.id();
  dialogue_.emplace(setup, *this, services_);
  services_.attach(*dialogue_);

  LogLine(gw_.log(), "session_open", services_.log_prefix())
      .num("worker", worker_.index())
      .write();
  gw_.metrics().connection_opened(listener_.name);
  counted_ = true;
  // Connection caps protect the gateway itself: always enforced, checked before policy.
  const std::optional<Decision> refusal = gw_.admit(*this);
  dialogue_->open(refusal ? &*refusal : nullptr);
  flush();
  update_reading();
}

// ---------------------------------------------------------------- PROXY protocol

void Session::await_proxy_header() {
  if (!config_->policy->trusted_proxies.lookup(peer_.ip)) {
    refuse_proxy("untrusted",
                 "connection from " + peer_.ip.to_string() + ", which is not in trusted_proxies");
    return;
  }
  awaiting_proxy_ = true;
  deadline_.set(*timer_, uv_now(worker_.loop()), kProxyHeaderTime);
  client_->start_reading();
}

void Session::on_proxy_bytes(std::string_view data) {
  // The common case: the whole header in the first read, parsed where it lies.
  if (!proxy_bytes_.empty()) {
    proxy_bytes_.append(data);
    data = proxy_bytes_;
  }
  const smtp::ProxyParse r = smtp::parse_proxy_header(data);
  if (r.status == smtp::ProxyParse::Status::NeedMore) {
    if (proxy_bytes_.empty()) proxy_bytes_.assign(data);
    return;
  }
  if (r.status == smtp::ProxyParse::Status::Invalid) {
    refuse_proxy("invalid", "bad PROXY header: " + r.error);
    return;
  }
  awaiting_proxy_ = false;
  const bool proxied = r.header.kind == smtp::ProxyHeader::Kind::Proxied;
  gw_.metrics().proxy_protocol(proxied ? "proxied" : "local");
  if (proxied) {
    // The client for everything from here on: policy, bans, logs, Received:, the backend.
    peer_ = {r.header.source, r.header.source_port};
    local_ = {r.header.destination, r.header.destination_port};
    services_.set_client(format_endpoint(peer_));
  }
  // What followed the header is the client's. On an implicit-TLS listener it is the start of
  // the handshake; otherwise SMTP sent before the greeting, which meets the pregreet check
  // like any early talker (peek_client sees it).
  std::string rest(data.substr(r.consumed));
  std::string().swap(proxy_bytes_);
  if (listener_.tls != TlsMode::Implicit) input_.swap(rest);
  begin();
  if (finished_) return;
  if (!rest.empty() && client_->tls()) {
    client_->feed_cipher(rest);
  } else if (!rest.empty()) {
    input_.swap(rest);
  }
  if (!input_.empty() && !finished_) pump();
}

void Session::refuse_proxy(std::string_view result, const std::string& reason) {
  gw_.metrics().proxy_protocol(result);
  LogLine(gw_.log(), "error", services_.log_prefix())
      .str("component", "proxy_protocol")
      .str("reason", reason)
      .write();
  finish("proxy_refused");  // not a byte sent
}

void Session::on_tls_ready(Connection& c) {
  Scope scope(*this);
  LogLine(gw_.log(), "tls", services_.log_prefix())
      .str("tls_version", c.tls()->version())
      .str("tls_cipher", c.tls()->cipher())
      .write();
  dialogue_->on_tls_ready(c.tls()->version(), c.tls()->cipher());
  pump();
}

void Session::on_tls_failed(Connection&, const std::string& reason) {
  Scope scope(*this);
  LogLine(gw_.log(), "error", services_.log_prefix())
      .str("component", "tls")
      .str("reason", "TLS handshake failed: " + reason)
      .write();
  finish("tls_failed");
}

// ---------------------------------------------------------------- input

void Session::on_data(Connection&, std::string_view data) {
  Scope scope(*this);
  bytes_in_ += data.size();
  if (awaiting_proxy_) return on_proxy_bytes(data);
  if (!dialogue_->on_client_input()) {
    flush();  // refused: what it sent is never read
    return;
  }
  if (input_.empty()) {
    // The usual case: straight from the read buffer, copying only what must wait.
    const size_t used = process_bytes(data);
    if (used < data.size() && !finished_) input_.assign(data.substr(used));
  } else {
    input_.append(data);
  }
  pump();
}

void Session::pump() {
  // Held input runs while the client keeps up with its replies: processing stops when the
  // owed output passes its bound and goes on once the kernel has taken it.
  for (;;) {
    const size_t used = process();
    const bool was_full = output_full();
    flush();
    if (finished_ || input_.empty() || close_when_flushed_ || output_full()) break;
    if (!dialogue_->reading_commands() && !dialogue_->in_body()) break;  // waiting on the backend
    if (used == 0 && !was_full) break;
  }
  update_reading();
}

size_t Session::process() {
  if (input_.empty() || finished_) return 0;
  const size_t used = process_bytes(input_);
  input_.erase(0, used);
  if (input_.capacity() > 4096 && input_.empty()) std::string().swap(input_);
  return used;
}

size_t Session::process_bytes(std::string_view in) {
  const size_t start = in.size();
  discard_input_ = false;
  in_process_ = true;
  while (!in.empty()) {
    if (dialogue_->in_body()) {
      relay_body(in);
      continue;
    }
    if (!dialogue_->reading_commands()) break;
    // A client that does not read its replies gets no more of them.
    if (output_full() || dialogue_->replies_pending() >= kMaxPendingReplies) break;
    auto r = reader_.feed(in, dialogue_->line_limit());
    in.remove_prefix(r.consumed);
    if (r.status == smtp::LineReader::Status::NeedMore) break;
    if (r.status == smtp::LineReader::Status::TooLong) {
      dialogue_->on_line_too_long();
      continue;
    }
    dialogue_->on_line(r.line, !in.empty());
    if (discard_input_) {
      // Anything pipelined after STARTTLS was sent in the clear: drop it unread.
      in = {};
      break;
    }
  }
  in_process_ = false;
  return start - in.size();
}

void Session::relay_body(std::string_view& in) {
  // The filter appends straight into the backend's write buffer: the body's one copy.
  std::string* out = discard_body_ ? nullptr : backend_.body_buffer();
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
  const uint64_t size = body_->body_bytes();
  body_.reset();
  discard_body_ = false;
  dialogue_->on_body_end(r.status, size);
  backend_.flush();  // the final dot goes out before more pipelined input is read
}

bool Session::output_full() const {
  return dialogue_->held_reply_bytes() + (client_ ? client_->queued_bytes() : 0) > kMaxOwedOutput;
}

void Session::update_reading() {
  if (!client_ || finished_) return;
  const bool backend_full = dialogue_->in_body() && backend_.queued_bytes() > kMaxBackendQueue;
  if (close_when_flushed_ || input_.size() > kMaxHeldInput || output_full() || backend_full) {
    client_->pause_reading();
  } else {
    client_->start_reading();
  }
}

// ---------------------------------------------------------------- what the dialogue asks

void Session::write(std::string_view bytes) {
  if (!client_ || finished_) return;
  client_->write(bytes);
  bytes_out_ += bytes.size();
}

size_t Session::peek_client(char* buf, size_t n) {
  // Bytes read with a PROXY header and not processed yet come first.
  if (!input_.empty()) {
    const size_t k = std::min(n, input_.size());
    input_.copy(buf, k);
    return k;
  }
  return client_ ? client_->peek(buf, n) : 0;
}

bool Session::backend_open() {
  if (!backend_.idle()) return true;
  BackendClient::ClientInfo info;
  info.client = peer_;
  info.local = local_;
  info.helo = dialogue_->helo();
  info.esmtp = dialogue_->esmtp();
  // A connect that fails at once is reported after this call returns (posted), never inside it.
  backend_.connect(*config_->policy, config_->backend_addr, info, config_->backend_tls);
  return !backend_.idle();
}

void Session::start_body(std::string_view prefix) {
  const Policy& p = *config_->policy;
  body_.emplace(p.message.bare_newline, p.message.max_bytes);
  discard_body_ = false;
  // The Received: header waits in the backend's buffer for the body's first bytes: one write.
  if (std::string* out = prefix.empty() ? nullptr : backend_.held_body_buffer())
    out->append(prefix);
}

void Session::start_tls() {
  if (!client_) return;
  // RFC 3207: plaintext the client sent after STARTTLS is never executed. The 220 queued
  // before this goes out in the clear first (Connection::start_tls).
  reader_.reset();
  if (in_process_) {
    discard_input_ = true;  // process_bytes() drops the rest of what it walks
  } else {
    input_.clear();
  }
  client_->start_tls(config_->server_tls);
}

void Session::set_deadline(std::chrono::milliseconds after) {
  if (timer_) deadline_.set(*timer_, uv_now(worker_.loop()), after);
}

void Session::close_after_output(std::string_view state) {
  close_when_flushed_ = true;
  close_state_ = state;
  if (client_) client_->pause_reading();
  // Bounded: a client that never reads its last reply does not keep the session.
  set_deadline(config_->policy->timeouts.command);
}

// ---------------------------------------------------------------- backend events

void Session::on_backend_reply(BackendClient::Tag tag, const smtp::BackendReply& reply) {
  Scope scope(*this);
  gw_.metrics().observe_backend_reply(backend_.last_reply_seconds());
  dialogue_->on_backend_reply(tag, reply);
  pump();
}

void Session::on_backend_failed(const std::string& why, bool protocol_error) {
  if (depth_ > 0) {
    posted_.any = true;
    posted_.backend_failed = true;
    posted_.backend_protocol_error = protocol_error;
    posted_.backend_why = why;
    return;
  }
  Scope scope(*this);
  backend_gone(why, protocol_error);
}

void Session::backend_gone(const std::string& why, bool protocol_error) {
  gw_.metrics().backend_error(protocol_error ? "protocol" : "unavailable");
  LogLine(gw_.log(), "error", services_.log_prefix())
      .str("component", "backend")
      .str("reason", why)
      .write();
  if (finished_) return;
  dialogue_->on_backend_failed(protocol_error);
  pump();
}

void Session::on_backend_drained() {
  if (depth_ > 0) {
    posted_.any = true;
    posted_.backend_drained = true;
    return;
  }
  Scope scope(*this);
  update_reading();
}

// ---------------------------------------------------------------- output

void Session::flush() {
  if (finished_) return;
  backend_.flush();
  if (!client_) return;
  if (ban_record_ == 0) ban_record_ = services_.take_ban_record();
  if (ban_record_ != 0) {
    if (!gw_.ban_recorded(ban_record_)) {
      worker_.wait_for_record(this);  // on_ban_recorded() calls back here
      return;
    }
    ban_record_ = 0;
  }
  flushing_ = true;
  client_->flush();
  flushing_ = false;
  if (close_when_flushed_ && dialogue_->replies_pending() == 0 && client_ &&
      client_->queued_bytes() == 0)
    finish(close_state_);
}

void Session::on_drained(Connection&) {
  if (flushing_) return;  // inside flush(): its caller goes on from here
  if (depth_ > 0) {
    // Under one of the session's own calls (Connection::start_tls flushes the 220 inside
    // start_tls()): running held input here would walk it a second time, plaintext pipelined
    // after STARTTLS included. It runs once that call has returned.
    posted_.any = true;
    posted_.drained = true;
    return;
  }
  Scope scope(*this);
  client_drained();
}

void Session::client_drained() {
  if (close_when_flushed_) {
    if (dialogue_->replies_pending() == 0) finish(close_state_);
    return;
  }
  // A client that had stopped reading caught up: run what it sent meanwhile.
  pump();
}

void Session::on_ban_recorded() {
  Scope scope(*this);
  flush();
}

// ---------------------------------------------------------------- end

void Session::on_eof(Connection&, int status) {
  if (depth_ > 0) {
    posted_.any = true;
    posted_.eof = status;
    return;
  }
  Scope scope(*this);
  client_gone(status);
}

void Session::client_gone(int status) {
  if (awaiting_proxy_) {
    // A load balancer's plain TCP health check does this every few seconds: counted, not
    // logged as an error.
    gw_.metrics().proxy_protocol("closed");
    finish("proxy_closed");
    return;
  }
  finish(status == UV_EOF ? (dialogue_->in_body() ? "client_gone_in_data" : "client_closed")
                          : "client_error");
}

void Session::on_timer(Timer&) {
  Scope scope(*this);
  // Not yet, or no deadline while the session waits on the backend (whose own timer bounds it).
  if (!deadline_.expired(*timer_, uv_now(worker_.loop()))) return;
  if (awaiting_proxy_) {
    refuse_proxy("timeout",
                 "no PROXY header within " + std::to_string(kProxyHeaderTime.count()) + " s");
    return;
  }
  if (close_when_flushed_ || output_full()) {
    // The client does not read what it is owed: one more reply would not reach it either.
    finish(close_when_flushed_ ? close_state_ : "timeout");
    return;
  }
  dialogue_->on_timeout();
  flush();
}

void Session::drain() {
  if (awaiting_proxy_ && !finished_) return finish("drained");
  if (finished_ || !dialogue_) return;
  Scope scope(*this);
  dialogue_->drain();
  flush();
}

void Session::finish(std::string_view state) {
  if (finished_) return;
  finished_ = true;
  gw_.release(*this);
  if (ban_record_ != 0) worker_.forget_waiter(this);
  const bool has_dialogue = dialogue_.has_value();
  const bool mid_transaction = has_dialogue && dialogue_->transaction_open();
  if (has_dialogue) dialogue_->on_session_end();  // a transaction under way is recorded
  if (counted_) {
    gw_.metrics().connection_closed();
    gw_.metrics().session(
        listener_.name,
        to_string(has_dialogue ? dialogue_->facts().cls : engine::initial_class(listener_)));
  }
  if (mid_transaction) {
    backend_.abort();  // never complete a message the client did not finish
  } else {
    backend_.quit();
  }
  client_.reset();  // closed; no event reaches this session any more
  timer_.reset();
  LogLine line(gw_.log(), "session_close", services_.log_prefix());
  line.str("state", state)
      .num("duration_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - started_)
                              .count())
      .num("bytes_in", static_cast<int64_t>(bytes_in_))
      .num("bytes_out", static_cast<int64_t>(bytes_out_));
  if (has_dialogue) {
    const SessionFacts& f = dialogue_->facts();
    line.num("messages", dialogue_->messages());
    if (f.authenticated) line.str("login", f.login);
    if (f.tls) line.str("tls_version", dialogue_->tls_version());
  } else {
    line.num("messages", 0);
  }
  line.write();
  worker_.retire(*this);
}

}  // namespace smtpgate
