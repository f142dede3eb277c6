#include "proxy/tls_channel.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cassert>
#include <utility>

#include "proxy/tls_files.h"

namespace smtpgate {
namespace {

// Input is handed to OpenSSL and output written in pieces of about one record, so the
// memory BIOs hold at most a record or two however large the caller's buffers are.
constexpr size_t kRecordPlain = 16384;           // TLS maximum plaintext per record
constexpr size_t kFeedChunk = 16384 + 2048 + 5;  // TLS maximum ciphertext record

using CtxPtr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;

bool is_ip_literal(const std::string& name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

// SSL_set_tlsext_host_name() is a macro with a C cast; this is what it expands to.
bool set_sni(SSL* ssl, const std::string& name) {
  return SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                  const_cast<char*>(name.c_str())) == 1;
}

}  // namespace

TlsContext::TlsContext(SSL_CTX* ctx, bool is_server, std::string server_name)
    : ctx_(ctx), is_server_(is_server), server_name_(std::move(server_name)) {}

TlsContext::~TlsContext() {
  SSL_CTX_free(ctx_);
}

Result<std::shared_ptr<TlsContext>> TlsContext::server(const TlsSettings& settings) {
  using R = Result<std::shared_ptr<TlsContext>>;
  if (settings.cert.empty() || settings.key.empty())
    return R::fail("tls: a certificate and a key are required");
  int min_version = 0;
  if (settings.min_version == "TLSv1.2") {
    min_version = TLS1_2_VERSION;
  } else if (settings.min_version == "TLSv1.3") {
    min_version = TLS1_3_VERSION;
  } else {
    return R::fail("tls.min_version must be \"TLSv1.2\" or \"TLSv1.3\", not \"" +
                   settings.min_version + "\"");
  }

  ERR_clear_error();
  CtxPtr ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!ctx) return R::fail(openssl_error("cannot create a TLS context"));
  if (SSL_CTX_set_min_proto_version(ctx.get(), min_version) != 1)
    return R::fail(openssl_error("cannot set the minimum TLS version"));
  if (!settings.ciphers.empty() &&
      SSL_CTX_set_cipher_list(ctx.get(), settings.ciphers.c_str()) != 1)
    return R::fail(openssl_error("no usable cipher in tls.ciphers \"" + settings.ciphers + "\""));
  // Renegotiation would let a client restart the handshake at will (CPU cost, and a
  // history of attacks); SMTP never needs it.
  SSL_CTX_set_options(
      ctx.get(), SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), settings.cert.c_str()) != 1)
    return R::fail(openssl_error("cannot load certificate chain " + settings.cert));
  const std::string mismatch =
      "private key " + settings.key + " does not match certificate " + settings.cert;
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), settings.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    // Loading already compares the key with the certificate; say so in plain words.
    unsigned long code = ERR_peek_error();
    if (ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH)
      return R::fail(openssl_error(mismatch));
    return R::fail(openssl_error("cannot load private key " + settings.key));
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) return R::fail(openssl_error(mismatch));
  return R::ok(std::shared_ptr<TlsContext>(new TlsContext(ctx.release(), true, {})));
}

Result<std::shared_ptr<TlsContext>> TlsContext::client(const BackendSettings& settings) {
  using R = Result<std::shared_ptr<TlsContext>>;
  ERR_clear_error();
  CtxPtr ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!ctx) return R::fail(openssl_error("cannot create a TLS context"));
  if (SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1)
    return R::fail(openssl_error("cannot set the minimum TLS version"));
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (settings.verify) {
    if (settings.ca.empty()) {
      if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1)
        return R::fail(openssl_error("cannot load the system CA certificates"));
    } else if (SSL_CTX_load_verify_locations(ctx.get(), settings.ca.c_str(), nullptr) != 1) {
      return R::fail(openssl_error("cannot load CA certificates " + settings.ca));
    }
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  }
  return R::ok(
      std::shared_ptr<TlsContext>(new TlsContext(ctx.release(), false, settings.server_name)));
}

TlsChannel::TlsChannel(std::shared_ptr<const TlsContext> context) : context_(std::move(context)) {
  assert(context_);
  ERR_clear_error();
  ssl_ = SSL_new(context_->native());
  in_ = BIO_new(BIO_s_mem());
  out_ = BIO_new(BIO_s_mem());
  if (!ssl_ || !in_ || !out_) {
    BIO_free(in_);
    BIO_free(out_);
    in_ = out_ = nullptr;
    state_ = State::Failed;
    error_ = openssl_error("cannot create a TLS connection");
    return;
  }
  // An empty memory BIO must read as "try again", never as end of stream.
  BIO_set_mem_eof_return(in_, -1);
  SSL_set_bio(ssl_, in_, out_);
  if (context_->is_server()) {
    SSL_set_accept_state(ssl_);
    return;
  }
  SSL_set_connect_state(ssl_);
  const std::string& name = context_->server_name();
  if (name.empty()) return;
  bool ok = true;
  if (is_ip_literal(name)) {
    // SNI carries host names only; an IP is checked against the certificate's IP SANs.
    ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str()) == 1;
  } else {
    ok = set_sni(ssl_, name) && SSL_set1_host(ssl_, name.c_str()) == 1;
  }
  if (!ok) {
    state_ = State::Failed;
    error_ = openssl_error("cannot use server name " + name);
  }
}

TlsChannel::~TlsChannel() {
  SSL_free(ssl_);
}

void TlsChannel::start(std::string& cipher_out) {
  if (state_ != State::Handshaking || context_->is_server()) return;
  handshake();
  drain(cipher_out);
}

TlsChannel::Status TlsChannel::feed(std::string_view cipher_in, std::string& plain_out,
                                    std::string& cipher_out) {
  // The channel calls no user code, so nothing can re-enter it: this loop is the whole
  // cycle and needs no recursion guard.
  while (!cipher_in.empty() && (state_ == State::Handshaking || state_ == State::Open)) {
    size_t n = std::min(cipher_in.size(), kFeedChunk);
    ERR_clear_error();
    if (BIO_write(in_, cipher_in.data(), static_cast<int>(n)) != static_cast<int>(n)) {
      state_ = State::Failed;
      error_ = openssl_error("out of memory");
      break;
    }
    cipher_in.remove_prefix(n);
    if (state_ == State::Handshaking) handshake();
    if (state_ == State::Open) read_all(plain_out);
    drain(cipher_out);
  }
  return status();
}

bool TlsChannel::handshake_just_completed() {
  return std::exchange(just_completed_, false);
}

bool TlsChannel::write(std::string_view plain, std::string& cipher_out) {
  if (state_ != State::Open || shutdown_sent_) return false;
  while (!plain.empty()) {
    size_t written = 0;
    ERR_clear_error();
    if (SSL_write_ex(ssl_, plain.data(), std::min(plain.size(), kRecordPlain), &written) != 1) {
      fail(SSL_get_error(ssl_, 0));
      drain(cipher_out);
      return false;
    }
    plain.remove_prefix(written);
    drain(cipher_out);
  }
  return true;
}

void TlsChannel::shutdown(std::string& cipher_out) {
  if (shutdown_sent_ || (state_ != State::Open && state_ != State::Closed)) return;
  shutdown_sent_ = true;
  ERR_clear_error();
  SSL_shutdown(ssl_);  // 0 means "sent, peer's not seen yet"; we do not wait for it
  ERR_clear_error();
  drain(cipher_out);
}

std::string TlsChannel::version() const {
  if (state_ == State::Handshaking || !ssl_ || !SSL_is_init_finished(ssl_)) return {};
  return SSL_get_version(ssl_);
}

std::string TlsChannel::cipher() const {
  if (state_ == State::Handshaking || !ssl_) return {};
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl_);
  return c ? SSL_CIPHER_get_name(c) : "";
}

void TlsChannel::handshake() {
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    state_ = State::Open;
    just_completed_ = true;
    return;
  }
  int err = SSL_get_error(ssl_, rc);
  if (err != SSL_ERROR_WANT_READ) fail(err);
}

void TlsChannel::read_all(std::string& plain_out) {
  // A stack buffer rather than growing plain_out speculatively: plain_out grows by
  // exactly the bytes decrypted.
  char buf[kRecordPlain];
  for (;;) {
    size_t n = 0;
    ERR_clear_error();
    if (SSL_read_ex(ssl_, buf, sizeof buf, &n) == 1) {
      plain_out.append(buf, n);
      continue;
    }
    int err = SSL_get_error(ssl_, 0);
    if (err == SSL_ERROR_WANT_READ) return;
    if (err == SSL_ERROR_ZERO_RETURN) {
      state_ = State::Closed;
      return;
    }
    fail(err);
    return;
  }
}

void TlsChannel::drain(std::string& cipher_out) {
  if (!out_) return;
  size_t pending = BIO_ctrl_pending(out_);
  if (pending == 0) return;
  size_t old = cipher_out.size();
  cipher_out.resize(old + pending);
  int got = BIO_read(out_, cipher_out.data() + old, static_cast<int>(pending));
  cipher_out.resize(old + static_cast<size_t>(std::max(got, 0)));
}

void TlsChannel::fail(int ssl_error) {
  state_ = State::Failed;
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) {
    // SSL_ERROR_SYSCALL with nothing queued cannot come from memory BIOs; name it anyway.
    error_ = "TLS failure (SSL_get_error " + std::to_string(ssl_error) + ")";
    return;
  }
  const char* reason = ERR_reason_error_string(code);
  if (reason) {
    error_ = reason;
  } else {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    error_ = buf;
  }
  if (ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
    long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) error_ += std::string(": ") + X509_verify_cert_error_string(verify);
  }
}

TlsChannel::Status TlsChannel::status() const {
  switch (state_) {
    case State::Closed:
      return Status::Closed;
    case State::Failed:
      return Status::Error;
    default:
      return Status::Ok;
  }
}

}  // namespace smtpgate
