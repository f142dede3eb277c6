// TLS as an in-memory channel: ciphertext in, plaintext out and the reverse, with no
// sockets and no blocking, so the connection code decides when bytes move and tests can
// wire a client and a server channel together directly.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "policy/policy.h"
#include "policy/result.h"

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct bio_st BIO;

namespace smtpgate {

// Certificates, verification rules and protocol limits for one side of TLS. Immutable
// once built; every channel holds a shared_ptr, so a reload that builds a new context
// leaves connections in flight on the one they started with.
class TlsContext {
 public:
  // The listener side: certificate chain and key (which must match), minimum version,
  // the <= TLS 1.2 cipher list when set; no compression, no renegotiation.
  static Result<std::shared_ptr<TlsContext>> server(const TlsSettings& settings);
  // The backend side: TLS >= 1.2, peer verified against `ca` or the system CAs unless
  // `verify` is off, and against `server_name` (also sent as SNI) when set.
  static Result<std::shared_ptr<TlsContext>> client(const BackendSettings& settings);

  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  ~TlsContext();

  bool is_server() const { return is_server_; }
  const std::string& server_name() const { return server_name_; }
  // For TlsChannel. OpenSSL wants a non-const pointer; nothing here changes it.
  SSL_CTX* native() const { return ctx_; }

 private:
  TlsContext(SSL_CTX* ctx, bool is_server, std::string server_name);

  SSL_CTX* ctx_;
  bool is_server_;
  std::string server_name_;
};

// One TLS connection over two memory BIOs. The role (server or client) and, for a
// client, the name to check come from the context.
//
// Driving it: call start() once (a client emits its ClientHello), then for every chunk
// read from the socket call feed(); after every feed(), write(), start() and shutdown()
// send whatever was appended to cipher_out — also after an Error, since it may carry
// the alert that tells the peer why.
class TlsChannel {
 public:
  enum class Status { Ok, Closed, Error };

  explicit TlsChannel(std::shared_ptr<const TlsContext> context);
  TlsChannel(const TlsChannel&) = delete;
  TlsChannel& operator=(const TlsChannel&) = delete;
  ~TlsChannel();

  // A client appends its ClientHello; a server has nothing to say first.
  void start(std::string& cipher_out);

  // Consumes ciphertext from the peer. Appends the decrypted application bytes to
  // plain_out and any records owed to the peer (handshake, alerts, key updates) to
  // cipher_out. Closed: the peer sent close_notify. Error: see error(). Once Closed or
  // Error, later calls return the same and consume nothing.
  Status feed(std::string_view cipher_in, std::string& plain_out, std::string& cipher_out);

  // True exactly once, on the first call after the handshake has finished: the moment
  // to greet (implicit TLS) or to reset the SMTP session (STARTTLS).
  bool handshake_just_completed();

  // Encrypts application bytes into cipher_out. False before the handshake has
  // finished, after shutdown() or once the channel is Closed or failed.
  bool write(std::string_view plain, std::string& cipher_out);

  // Appends our close_notify. Does not wait for the peer's; the caller may close the
  // socket once cipher_out is flushed. Nothing is sent unless the handshake finished.
  void shutdown(std::string& cipher_out);

  bool established() const { return state_ == State::Open; }
  std::string version() const;  // "TLSv1.3"; empty before the handshake
  std::string cipher() const;   // "TLS_AES_256_GCM_SHA384"; empty before the handshake
  // OpenSSL's reason, e.g. "wrong version number", "unsupported protocol",
  // "certificate verify failed: hostname mismatch"; empty unless failed.
  const std::string& error() const { return error_; }

 private:
  enum class State { Handshaking, Open, Closed, Failed };

  void handshake();
  void read_all(std::string& plain_out);
  void drain(std::string& cipher_out);
  void fail(int ssl_error);
  Status status() const;

  std::shared_ptr<const TlsContext> context_;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // ciphertext from the peer; owned by ssl_
  BIO* out_ = nullptr;  // ciphertext for the peer; owned by ssl_
  State state_ = State::Handshaking;
  bool just_completed_ = false;
  bool shutdown_sent_ = false;
  std::string error_;
};

}  // namespace smtpgate
