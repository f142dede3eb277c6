#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "proxy/tls_channel.h"

using namespace smtpgate;
using Status = TlsChannel::Status;

namespace {

// ---- certificates made at test time, so no key material lives in the repository ----

struct KeyPair {
  std::string cert;  // PEM file paths
  std::string key;
};

EVP_PKEY* make_key() {
  EVP_PKEY* key = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr);
  REQUIRE(ctx);
  REQUIRE(EVP_PKEY_keygen_init(ctx) == 1);
  REQUIRE(EVP_PKEY_CTX_set_group_name(ctx, "P-256") == 1);
  REQUIRE(EVP_PKEY_generate(ctx, &key) == 1);
  EVP_PKEY_CTX_free(ctx);
  return key;
}

// A self-signed certificate for CN=localhost, subjectAltName DNS:localhost.
X509* make_cert(EVP_PKEY* key, long serial) {
  X509* x = X509_new();
  REQUIRE(x);
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 30L * 86400);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
  X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, "DNS:localhost");
  REQUIRE(san);
  X509_add_ext(x, san, -1);
  X509_EXTENSION_free(san);
  REQUIRE(X509_sign(x, key, EVP_sha256()) > 0);
  return x;
}

void write_pem(const std::string& path, EVP_PKEY* key, X509* cert) {
  BIO* bio = BIO_new_file(path.c_str(), "w");
  REQUIRE(bio);
  if (key) REQUIRE(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  if (cert) REQUIRE(PEM_write_bio_X509(bio, cert) == 1);
  BIO_free(bio);
}

// Two unrelated self-signed identities in a temporary directory, removed at exit.
struct TestCerts {
  std::filesystem::path dir;
  KeyPair a, b;

  TestCerts() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "smtpgate-tls-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()));
    dir = tmpl;
    a = make("a", 1);
    b = make("b", 2);
  }
  ~TestCerts() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  KeyPair make(const std::string& name, long serial) {
    EVP_PKEY* key = make_key();
    X509* cert = make_cert(key, serial);
    KeyPair kp{(dir / (name + "-cert.pem")).string(), (dir / (name + "-key.pem")).string()};
    write_pem(kp.cert, nullptr, cert);
    write_pem(kp.key, key, nullptr);
    X509_free(cert);
    EVP_PKEY_free(key);
    return kp;
  }
};

const TestCerts& certs() {
  static TestCerts instance;
  return instance;
}

TlsSettings server_settings(const KeyPair& kp, std::string min_version = "TLSv1.2") {
  TlsSettings s;
  s.configured = true;
  s.cert = kp.cert;
  s.key = kp.key;
  s.min_version = std::move(min_version);
  return s;
}

std::shared_ptr<TlsContext> server_context(const TlsSettings& s) {
  auto ctx = TlsContext::server(s);
  INFO(ctx.error());
  REQUIRE(ctx);
  return *ctx;
}

// A backend client that trusts certificate `a` and checks the name "localhost".
BackendSettings trusting_client() {
  BackendSettings b;
  b.tls = BackendTls::StartTls;
  b.ca = certs().a.cert;
  b.verify = true;
  b.server_name = "localhost";
  return b;
}

std::shared_ptr<TlsContext> client_context(const BackendSettings& b) {
  auto ctx = TlsContext::client(b);
  INFO(ctx.error());
  REQUIRE(ctx);
  return *ctx;
}

// ---- peers: a TlsChannel, or plain OpenSSL for versions our contexts refuse to speak ----

struct Peer {
  explicit Peer(std::shared_ptr<const TlsContext> ctx) : channel(std::move(ctx)) {}
  TlsChannel channel;
  std::string plain;  // application bytes received
  std::string out;    // ciphertext not yet delivered to the other side
  Status status = Status::Ok;
  int completions = 0;

  void start() { channel.start(out); }
  void receive(std::string_view in) {
    status = channel.feed(in, plain, out);
    if (channel.handshake_just_completed()) ++completions;
  }
  bool failed() const { return status == Status::Error; }
};

struct RawPeer {
  RawPeer(SSL_CTX* ctx, bool server) : ssl(SSL_new(ctx)) {
    REQUIRE(ssl);
    BIO* in = BIO_new(BIO_s_mem());
    BIO* o = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(in, -1);
    SSL_set_bio(ssl, in, o);
    if (server) {
      SSL_set_accept_state(ssl);
    } else {
      SSL_set_connect_state(ssl);
    }
  }
  ~RawPeer() { SSL_free(ssl); }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  SSL* ssl;
  std::string plain, out, error;

  void start() { receive({}); }
  void receive(std::string_view in) {
    if (!in.empty()) BIO_write(SSL_get_rbio(ssl), in.data(), static_cast<int>(in.size()));
    ERR_clear_error();
    if (error.empty() && !SSL_is_init_finished(ssl)) {
      int rc = SSL_do_handshake(ssl);
      if (rc != 1 && SSL_get_error(ssl, rc) != SSL_ERROR_WANT_READ) {
        const char* reason = ERR_reason_error_string(ERR_get_error());
        error = reason ? reason : "handshake failed";
      }
    }
    char buf[4096];
    size_t n = 0;
    while (error.empty() && SSL_is_init_finished(ssl) && SSL_read_ex(ssl, buf, sizeof buf, &n))
      plain.append(buf, n);
    ERR_clear_error();
    BIO* w = SSL_get_wbio(ssl);
    while (BIO_ctrl_pending(w) > 0) {
      n = BIO_read(w, buf, sizeof buf);
      out.append(buf, n);
    }
  }
  bool failed() const { return !error.empty(); }
};

// Carries ciphertext between two peers until both fall quiet. Each delivery is cut
// into pieces of `step` bytes to exercise records that arrive in fragments.
template <class A, class B>
void pump(A& a, B& b, size_t step = std::string::npos) {
  auto deliver = [step](std::string& from, auto& to) {
    std::string bytes = std::exchange(from, {});
    std::string_view rest(bytes);
    while (!rest.empty()) {
      size_t n = std::min(step, rest.size());
      to.receive(rest.substr(0, n));
      rest.remove_prefix(n);
    }
  };
  for (int round = 0; round < 1000 && (!a.out.empty() || !b.out.empty()); ++round) {
    deliver(a.out, b);
    deliver(b.out, a);
  }
  REQUIRE(a.out.empty());
  REQUIRE(b.out.empty());
}

template <class Client, class Server>
void handshake(Client& client, Server& server, size_t step = std::string::npos) {
  client.start();
  server.start();
  pump(client, server, step);
}

std::string pattern(size_t size, unsigned seed) {
  std::string s(size, '\0');
  unsigned x = seed;
  for (char& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 16);
  }
  return s;
}

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using RawCtx = std::unique_ptr<SSL_CTX, SslCtxFree>;

}  // namespace

TEST_CASE("tls: a client and a server channel complete a handshake", "[tls]") {
  auto server_ctx = server_context(server_settings(certs().a));
  Peer server(server_ctx);
  Peer client(client_context(trusting_client()));
  // The channel keeps its context: a reload that drops ours must not disturb it.
  server_ctx.reset();

  std::string scratch;
  CHECK_FALSE(client.channel.write("too early", scratch));
  CHECK(scratch.empty());
  CHECK_FALSE(client.channel.established());

  handshake(client, server);
  INFO(client.channel.error() << " / " << server.channel.error());
  REQUIRE(client.channel.established());
  REQUIRE(server.channel.established());
  CHECK(client.completions == 1);
  CHECK(server.completions == 1);
  CHECK_FALSE(server.channel.handshake_just_completed());
  CHECK(server.channel.version() == "TLSv1.3");
  CHECK(client.channel.version() == "TLSv1.3");
  CHECK(server.channel.cipher() == client.channel.cipher());
  CHECK_FALSE(server.channel.cipher().empty());
  CHECK(server.channel.error().empty());

  REQUIRE(client.channel.write("EHLO client.example\r\n", client.out));
  pump(client, server);
  CHECK(server.plain == "EHLO client.example\r\n");
  REQUIRE(server.channel.write("250 ok\r\n", server.out));
  pump(client, server);
  CHECK(client.plain == "250 ok\r\n");
  CHECK(client.status == Status::Ok);
  CHECK(server.status == Status::Ok);
}

TEST_CASE("tls: the whole exchange works with ciphertext fed a byte at a time", "[tls]") {
  Peer server(server_context(server_settings(certs().a)));
  Peer client(client_context(trusting_client()));
  handshake(client, server, 1);
  REQUIRE(client.channel.established());
  REQUIRE(server.channel.established());
  CHECK(client.completions == 1);
  CHECK(server.completions == 1);

  const std::string up = pattern(40000, 1), down = pattern(33333, 2);
  REQUIRE(client.channel.write(up, client.out));
  REQUIRE(server.channel.write(down, server.out));
  pump(client, server, 1);
  CHECK(server.plain == up);
  CHECK(client.plain == down);
}

TEST_CASE("tls: 1 MB each way, written and fed in odd sizes, arrives byte-exact", "[tls]") {
  Peer server(server_context(server_settings(certs().a)));
  Peer client(client_context(trusting_client()));
  handshake(client, server);
  REQUIRE(server.channel.established());

  const std::string up = pattern(1 << 20, 3), down = pattern((1 << 20) + 7, 4);
  const size_t write_sizes[] = {1, 65537, 3, 16384, 16385, 999, 200001};
  const size_t feed_sizes[] = {1, 7, 997, 16389, 65521};
  size_t off_up = 0, off_down = 0, round = 0;
  while (off_up < up.size() || off_down < down.size()) {
    size_t w = write_sizes[round % std::size(write_sizes)];
    size_t n = std::min(w, up.size() - off_up);
    if (n) REQUIRE(client.channel.write(std::string_view(up).substr(off_up, n), client.out));
    off_up += n;
    n = std::min(w, down.size() - off_down);
    if (n) REQUIRE(server.channel.write(std::string_view(down).substr(off_down, n), server.out));
    off_down += n;
    pump(client, server, feed_sizes[round % std::size(feed_sizes)]);
    ++round;
  }
  CHECK(server.plain.size() == up.size());
  CHECK(server.plain == up);
  CHECK(client.plain == down);
}

TEST_CASE("tls: close_notify reaches the peer as Closed", "[tls]") {
  Peer server(server_context(server_settings(certs().a)));
  Peer client(client_context(trusting_client()));
  handshake(client, server);

  REQUIRE(client.channel.write("QUIT\r\n", client.out));
  client.channel.shutdown(client.out);
  CHECK_FALSE(client.channel.write("more", client.out));
  pump(client, server);
  CHECK(server.plain == "QUIT\r\n");
  CHECK(server.status == Status::Closed);
  CHECK(server.channel.error().empty());

  // The server answers with its own close_notify; the client sees Closed too.
  server.channel.shutdown(server.out);
  REQUIRE_FALSE(server.out.empty());
  pump(client, server);
  CHECK(client.status == Status::Closed);
  std::string plain, out;
  CHECK(server.channel.feed("anything", plain, out) == Status::Closed);
  CHECK(plain.empty());
  CHECK(out.empty());
}

TEST_CASE("tls: min_version and ciphers shape what is negotiated", "[tls]") {
  RawCtx ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);

  SECTION("TLSv1.2 allows a TLS 1.2 client, with the configured cipher") {
    auto settings = server_settings(certs().a, "TLSv1.2");
    settings.ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256";
    Peer server(server_context(settings));
    RawPeer client(ctx.get(), false);
    handshake(client, server);
    INFO(server.channel.error());
    REQUIRE(server.channel.established());
    CHECK(server.channel.version() == "TLSv1.2");
    CHECK(server.channel.cipher() == "ECDHE-ECDSA-AES128-GCM-SHA256");
  }
  SECTION("TLSv1.3 refuses it") {
    Peer server(server_context(server_settings(certs().a, "TLSv1.3")));
    RawPeer client(ctx.get(), false);
    handshake(client, server);
    CHECK(server.failed());
    CHECK(server.channel.error() == "unsupported protocol");
    CHECK(client.error == "tlsv1 alert protocol version");
  }
  SECTION("an unknown cipher list is a context error") {
    auto settings = server_settings(certs().a);
    settings.ciphers = "NO-SUCH-CIPHER";
    auto server = TlsContext::server(settings);
    REQUIRE_FALSE(server);
    CHECK_THAT(server.error(), Catch::Contains("tls.ciphers"));
  }
}

TEST_CASE("tls: a TLS 1.0/1.1 client is refused with a protocol error", "[tls]") {
  RawCtx ctx(SSL_CTX_new(TLS_client_method()));
  // Old versions need security level 0 in OpenSSL 3 (they sign with SHA-1).
  SSL_CTX_set_security_level(ctx.get(), 0);
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_1_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  RawPeer client(ctx.get(), false);
  Peer server(server_context(server_settings(certs().a)));
  handshake(client, server);
  CHECK(server.status == Status::Error);
  CHECK(server.channel.error() == "unsupported protocol");
  CHECK(client.error == "tlsv1 alert protocol version");
  CHECK_FALSE(server.channel.established());
  CHECK(server.completions == 0);
  CHECK(server.channel.version().empty());
}

TEST_CASE("tls: a plaintext client on an implicit-TLS port is an Error", "[tls]") {
  Peer server(server_context(server_settings(certs().a)));
  server.receive("EHLO x\r\n");
  CHECK(server.status == Status::Error);
  CHECK(server.channel.error() == "wrong version number");
  CHECK(server.plain.empty());
  // Later input is ignored rather than parsed.
  std::string plain, out;
  CHECK(server.channel.feed("MAIL FROM:<a@b>\r\n", plain, out) == Status::Error);
  CHECK(plain.empty());
}

TEST_CASE("tls: a tampered record fails the connection", "[tls]") {
  Peer server(server_context(server_settings(certs().a)));
  Peer client(client_context(trusting_client()));
  handshake(client, server);
  REQUIRE(client.channel.write("AUTH PLAIN secret\r\n", client.out));
  client.out[client.out.size() - 3] ^= 0x01;
  pump(client, server);
  CHECK(server.status == Status::Error);
  CHECK(server.channel.error() == "decryption failed or bad record mac");
  CHECK(server.plain.empty());
}

TEST_CASE("tls: the backend client verifies the certificate and the name", "[tls]") {
  Peer server(server_context(server_settings(certs().a)));
  BackendSettings b = trusting_client();

  SECTION("trusted through ca, name matches") {
    Peer client(client_context(b));
    handshake(client, server);
    INFO(client.channel.error());
    CHECK(client.channel.established());
    CHECK(server.channel.established());
  }
  SECTION("no name to check: the chain alone decides") {
    b.server_name.clear();
    Peer client(client_context(b));
    handshake(client, server);
    CHECK(client.channel.established());
  }
  SECTION("an untrusted self-signed certificate fails") {
    b.ca = certs().b.cert;
    Peer client(client_context(b));
    handshake(client, server);
    CHECK(client.status == Status::Error);
    CHECK_THAT(client.channel.error(), Catch::StartsWith("certificate verify failed: ") &&
                                           Catch::Contains("self-signed certificate"));
    // The client told the server why.
    CHECK(server.status == Status::Error);
    CHECK_THAT(server.channel.error(), Catch::Contains("alert"));
  }
  SECTION("the system CAs do not trust it either") {
    b.ca.clear();
    Peer client(client_context(b));
    handshake(client, server);
    CHECK(client.status == Status::Error);
    CHECK_THAT(client.channel.error(), Catch::StartsWith("certificate verify failed"));
  }
  SECTION("verify off accepts it") {
    b.ca = certs().b.cert;
    b.verify = false;
    Peer client(client_context(b));
    handshake(client, server);
    CHECK(client.channel.established());
  }
  SECTION("a name the certificate does not carry fails") {
    b.server_name = "mail.example.com";
    Peer client(client_context(b));
    handshake(client, server);
    CHECK(client.status == Status::Error);
    CHECK(client.channel.error() == "certificate verify failed: hostname mismatch");
  }
  SECTION("an IP literal is checked against IP names") {
    b.server_name = "127.0.0.1";
    Peer client(client_context(b));
    handshake(client, server);
    CHECK(client.status == Status::Error);
    CHECK(client.channel.error() == "certificate verify failed: IP address mismatch");
  }
}

TEST_CASE("tls: the client sends the server name as SNI", "[tls]") {
  RawCtx ctx(SSL_CTX_new(TLS_server_method()));
  REQUIRE(SSL_CTX_use_certificate_chain_file(ctx.get(), certs().a.cert.c_str()) == 1);
  REQUIRE(SSL_CTX_use_PrivateKey_file(ctx.get(), certs().a.key.c_str(), SSL_FILETYPE_PEM) == 1);
  RawPeer server(ctx.get(), true);
  Peer client(client_context(trusting_client()));
  handshake(client, server);
  REQUIRE(client.channel.established());
  const char* sni = SSL_get_servername(server.ssl, TLSEXT_NAMETYPE_host_name);
  REQUIRE(sni);
  CHECK(std::string(sni) == "localhost");
}

TEST_CASE("tls: contexts reject unusable settings with a clear message", "[tls]") {
  SECTION("a key that does not match the certificate") {
    TlsSettings s = server_settings(certs().a);
    s.key = certs().b.key;
    auto ctx = TlsContext::server(s);
    REQUIRE_FALSE(ctx);
    CHECK_THAT(ctx.error(),
               Catch::StartsWith("private key " + s.key + " does not match certificate " + s.cert));
  }
  SECTION("a missing certificate") {
    TlsSettings s = server_settings(certs().a);
    s.cert = (certs().dir / "missing.pem").string();
    auto ctx = TlsContext::server(s);
    REQUIRE_FALSE(ctx);
    CHECK_THAT(ctx.error(), Catch::StartsWith("cannot load certificate chain " + s.cert));
  }
  SECTION("an unknown minimum version") {
    TlsSettings s = server_settings(certs().a, "TLSv1.1");
    auto ctx = TlsContext::server(s);
    REQUIRE_FALSE(ctx);
    CHECK_THAT(ctx.error(), Catch::Contains("tls.min_version"));
  }
  SECTION("a missing CA file") {
    BackendSettings b = trusting_client();
    b.ca = (certs().dir / "missing-ca.pem").string();
    auto ctx = TlsContext::client(b);
    REQUIRE_FALSE(ctx);
    CHECK_THAT(ctx.error(), Catch::StartsWith("cannot load CA certificates " + b.ca));
  }
}

TEST_CASE("tls: application data right behind the client Finished is not lost", "[tls]") {
  // A pipelining client sends EHLO in the same packet as its Finished message.
  Peer server(server_context(server_settings(certs().a)));
  Peer client(client_context(trusting_client()));
  client.start();
  server.receive(std::exchange(client.out, {}));
  client.receive(std::exchange(server.out, {}));
  REQUIRE(client.channel.established());
  REQUIRE_FALSE(server.channel.established());
  REQUIRE(client.channel.write("EHLO client.example\r\n", client.out));
  server.receive(std::exchange(client.out, {}));
  CHECK(server.completions == 1);
  CHECK(server.plain == "EHLO client.example\r\n");
}

TEST_CASE("tls: a TLS 1.2 client cannot renegotiate", "[tls]") {
  RawCtx ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  RawPeer client(ctx.get(), false);
  Peer server(server_context(server_settings(certs().a)));
  handshake(client, server);
  REQUIRE(server.channel.established());
  REQUIRE(SSL_renegotiate(client.ssl) == 1);
  SSL_do_handshake(client.ssl);
  client.receive({});
  REQUIRE_FALSE(client.out.empty());
  pump(client, server);
  INFO(server.channel.error() << " / " << client.error);
  // The server answers no_renegotiation; OpenSSL's client gives up the connection.
  CHECK(server.completions == 1);
  CHECK(client.error == "no renegotiation");
  CHECK(server.status == Status::Error);
}
