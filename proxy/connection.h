// One TCP connection on the loop: owns its uv_tcp_t, batches writes, and frees itself in
// its close callback (never under its owner's call stack).
#pragma once

#include <uv.h>

#include "proxy/handle_ptr.h"
#include "proxy/tls_channel.h"

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace smtpgate {

class Connection {
 public:
  // Events go to the owner. After close() no event is delivered, so an owner can close
  // and forget a connection at any time.
  class Handler {
   public:
    virtual void on_connected(Connection& c, int status) = 0;  // outbound connect finished
    virtual void on_data(Connection& c, std::string_view data) = 0;
    virtual void on_eof(Connection& c, int status) = 0;  // peer closed (UV_EOF) or read error
    virtual void on_drained(Connection& c) = 0;          // every queued byte was written
    // TLS (after start_tls): the handshake completed; data that followed comes next.
    virtual void on_tls_ready(Connection&) {}
    // The handshake or a record failed; `reason` is OpenSSL's. The connection is unusable.
    virtual void on_tls_failed(Connection& c, const std::string& /*reason*/) {
      on_eof(c, UV_EPROTO);
    }

   protected:
    ~Handler() = default;
  };

  // Creates a connection whose handle is initialised on `loop`.
  static HandlePtr<Connection> create(uv_loop_t* loop, Handler* handler);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int accept(uv_stream_t* server);
  // A socket accepted by another loop and handed over (worker threads).
  int adopt(int fd);  // then start_reading()
  int connect(const sockaddr* addr);
  void start_reading();
  void pause_reading();

  // Queues bytes; they are sent by flush() (batched: one write per burst of replies).
  void write(std::string_view data) { out_buffer().append(data); }
  // The queue itself, for producers that append in place (the DATA body filter). With TLS
  // it is the plaintext queue, encrypted by flush().
  std::string& out_buffer() { return tls_ ? plain_ : out_; }
  void flush();
  size_t queued_bytes() const { return out_.size() + inflight_.size() + plain_.size(); }

  // Up to `n` bytes the peer has sent and nobody has read yet, copied without consuming them;
  // 0 when there are none (or on error). Plaintext connections only.
  size_t peek(char* buf, size_t n) const;

  // From now on bytes read are decrypted and bytes written encrypted. Whatever was queued
  // before goes out in the clear first (the "220 Ready to start TLS").
  void start_tls(std::shared_ptr<const TlsContext> context);
  const TlsChannel* tls() const { return tls_.get(); }
  // Bytes of the TLS stream read before start_tls (an implicit-TLS ClientHello that came in
  // the same read as a PROXY header): handled as if read now.
  void feed_cipher(std::string_view data) {
    if (tls_ && !closing()) on_cipher(data);
  }

  // Stops events and closes; the object deletes itself when libuv is done with the handle.
  // Owners call it through HandlePtr (reset or destruction).
  void close();
  bool closing() const { return state_ != State::Open; }

  uv_tcp_t* handle() { return &tcp_; }

  // A read buffer shared by every connection of the loop: reads are consumed synchronously.
  static constexpr size_t kReadBufferSize = 64 * 1024;

 private:
  enum class State { Open, Closing };
  Connection() = default;
  ~Connection() = default;

  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_connect(uv_connect_t* req, int status);
  static void on_close(uv_handle_t* h);
  void write_failed(int status);
  ssize_t send_now(const char* data, size_t size);  // bytes sent, or a UV_* error
  void on_cipher(std::string_view data);

  uv_tcp_t tcp_{};
  uv_write_t write_req_{};
  uv_connect_t connect_req_{};
  Handler* handler_ = nullptr;
  State state_ = State::Open;
  bool reading_ = false;
  bool writing_ = false;
  bool connecting_ = false;
  uv_os_fd_t fd_ = -1;    // the socket, for send(2); owned by tcp_
  std::string out_;       // queued, not yet handed to libuv
  std::string inflight_;  // owned by the pending uv_write until its callback
  std::unique_ptr<TlsChannel> tls_;
  std::string plain_;  // with TLS: plaintext queued until flush() encrypts it
};

}  // namespace smtpgate
