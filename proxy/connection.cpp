#include "proxy/connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace smtpgate {
namespace {

// Buffers kept after a burst are returned when they grew large, so idle sessions stay small.
constexpr size_t kKeepCapacity = 4096;

void trim(std::string& s) {
  if (s.capacity() > kKeepCapacity) std::string().swap(s);
}

}  // namespace

HandlePtr<Connection> Connection::create(uv_loop_t* loop, Handler* handler) {
  auto* c = new Connection();
  uv_tcp_init(loop, &c->tcp_);
  c->tcp_.data = c;
  c->handler_ = handler;
  return HandlePtr<Connection>(c);
}

int Connection::accept(uv_stream_t* server) {
  int rc = uv_accept(server, reinterpret_cast<uv_stream_t*>(&tcp_));
  if (rc == 0) {
    uv_tcp_nodelay(&tcp_, 1);
    uv_fileno(reinterpret_cast<const uv_handle_t*>(&tcp_), &fd_);
  }
  return rc;
}

int Connection::adopt(int fd) {
  int rc = uv_tcp_open(&tcp_, fd);
  if (rc != 0) {
    ::close(fd);
    return rc;
  }
  uv_tcp_nodelay(&tcp_, 1);
  fd_ = fd;
  return 0;
}

int Connection::connect(const sockaddr* addr) {
  connect_req_.data = this;
  uv_tcp_nodelay(&tcp_, 1);
  int rc = uv_tcp_connect(&connect_req_, &tcp_, addr, on_connect);
  connecting_ = rc == 0;
  if (rc == 0) uv_fileno(reinterpret_cast<const uv_handle_t*>(&tcp_), &fd_);
  return rc;
}

void Connection::on_connect(uv_connect_t* req, int status) {
  auto* c = static_cast<Connection*>(req->data);
  c->connecting_ = false;
  if (c->closing() || !c->handler_) return;
  c->handler_->on_connected(*c, status);
}

void Connection::start_reading() {
  if (reading_ || closing()) return;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read) == 0) reading_ = true;
}

void Connection::pause_reading() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

size_t Connection::peek(char* buf, size_t n) const {
  if (fd_ < 0 || connecting_) return 0;
  ssize_t got;
  do {
    got = ::recv(fd_, buf, n, MSG_PEEK | MSG_DONTWAIT);
  } while (got < 0 && errno == EINTR);
  return got > 0 ? static_cast<size_t>(got) : 0;
}

void Connection::on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  thread_local char shared[kReadBufferSize];  // one per loop thread
  buf->base = shared;
  buf->len = sizeof shared;
}

void Connection::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(s->data);
  if (c->closing()) return;
  if (n > 0) {
    std::string_view data(buf->base, static_cast<size_t>(n));
    if (c->tls_) {
      c->on_cipher(data);
    } else {
      c->handler_->on_data(*c, data);
    }
  } else if (n < 0) {
    c->pause_reading();
    c->handler_->on_eof(*c, static_cast<int>(n));
  }
}

void Connection::start_tls(std::shared_ptr<const TlsContext> context) {
  tls_ = std::make_unique<TlsChannel>(std::move(context));
  tls_->start(out_);
  flush();
}

void Connection::on_cipher(std::string_view data) {
  // Reads are handled one at a time on a loop thread, so one buffer per thread serves them.
  thread_local std::string plain;
  plain.clear();
  auto status = tls_->feed(data, plain, out_);
  bool ready = tls_->handshake_just_completed();
  flush();  // handshake records and alerts, even on failure
  if (closing()) return;
  if (status == TlsChannel::Status::Error) {
    pause_reading();
    handler_->on_tls_failed(*this, tls_->error());
    return;
  }
  if (ready) {
    handler_->on_tls_ready(*this);
    if (closing()) return;
  }
  if (!plain.empty()) {
    handler_->on_data(*this, plain);
    if (closing()) return;
  }
  if (status == TlsChannel::Status::Closed) {
    tls_->shutdown(out_);
    flush();
    if (closing()) return;
    pause_reading();
    handler_->on_eof(*this, UV_EOF);
  }
  if (plain.capacity() > kReadBufferSize * 2) std::string().swap(plain);
}

void Connection::flush() {
  if (closing()) return;
  if (tls_ && !plain_.empty() && tls_->established()) {
    if (!tls_->write(plain_, out_)) {
      plain_.clear();
      write_failed(UV_EPROTO);
      return;
    }
    plain_.clear();
    trim(plain_);
  }
  if (writing_ || out_.empty()) return;
  ssize_t n = send_now(out_.data(), out_.size());
  if (n == static_cast<ssize_t>(out_.size())) {
    out_.clear();
    trim(out_);
    handler_->on_drained(*this);
    return;
  }
  if (n < 0 && n != UV_EAGAIN) {
    write_failed(static_cast<int>(n));
    return;
  }
  size_t done = n > 0 ? static_cast<size_t>(n) : 0;
  inflight_.assign(out_, done);
  out_.clear();
  writing_ = true;
  write_req_.data = this;
  uv_buf_t rest = uv_buf_init(inflight_.data(), static_cast<unsigned>(inflight_.size()));
  int rc = uv_write(&write_req_, reinterpret_cast<uv_stream_t*>(&tcp_), &rest, 1, on_write);
  if (rc != 0) {
    writing_ = false;
    write_failed(rc);
  }
}

ssize_t Connection::send_now(const char* data, size_t size) {
  // What uv_try_write does, but with send(2): the kernel's path for it is shorter than
  // write(2)'s, and this runs for every reply and every forwarded command.
  if (connecting_ || fd_ < 0) return UV_EAGAIN;  // uv_write queues it until connected
  for (;;) {
    ssize_t n = ::send(fd_, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return UV_EAGAIN;
    return -errno;  // libuv's error codes are negated errno values on Unix
  }
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* c = static_cast<Connection*>(req->data);
  c->writing_ = false;
  c->inflight_.clear();
  trim(c->inflight_);
  if (c->closing()) return;
  if (status < 0) {
    c->write_failed(status);
    return;
  }
  if (!c->out_.empty()) {
    c->flush();
  } else {
    c->handler_->on_drained(*c);
  }
}

void Connection::write_failed(int status) {
  out_.clear();
  pause_reading();
  if (handler_) handler_->on_eof(*this, status);
}

void Connection::close() {
  if (closing()) return;
  state_ = State::Closing;
  handler_ = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close);
}

void Connection::on_close(uv_handle_t* h) {
  delete static_cast<Connection*>(h->data);
}

}  // namespace smtpgate
