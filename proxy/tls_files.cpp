#include "proxy/tls_files.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <memory>

namespace smtpgate {

std::string openssl_error(const std::string& what) {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return what;
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return what + ": " + buf;
}

std::string check_tls_files(const TlsSettings& tls) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()),
                                                        SSL_CTX_free);
  if (!ctx) return openssl_error("cannot create a TLS context");
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert.c_str()) != 1)
    return openssl_error("cannot load certificate chain " + tls.cert);
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return openssl_error("cannot load private key " + tls.key);
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return openssl_error("private key " + tls.key + " does not match certificate " + tls.cert);
  return {};
}

}  // namespace smtpgate
