#include "proxy/password_key.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "proxy/smtp/sasl.h"

namespace smtpgate {
namespace {

std::atomic<uint64_t> next_keyer_id{1};

// One HMAC context per thread, keyed once: a one-shot HMAC() sets up the digest and the key on
// every call (about 1 µs; re-initialising a keyed context costs a fifth of that).
struct ThreadMac {
  EVP_MAC* mac = nullptr;
  EVP_MAC_CTX* ctx = nullptr;
  uint64_t keyer = 0;
  ~ThreadMac() {
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
  }
};

}  // namespace

PasswordKeyer::PasswordKeyer() : id_(next_keyer_id.fetch_add(1)) {
  if (RAND_bytes(key_.data(), static_cast<int>(key_.size())) != 1)
    throw std::runtime_error("RAND_bytes failed: no key for password hashes");
}

PasswordKeyer::~PasswordKeyer() {
  OPENSSL_cleanse(key_.data(), key_.size());
}

uint64_t PasswordKeyer::key(const IpAddress& ip, std::string_view login,
                            std::string_view password) const {
  std::string data;
  data.reserve(16 + login.size() + password.size() + 2);
  const auto& b = ip.bytes();
  data.append(reinterpret_cast<const char*>(b.data()), b.size());
  data += '\0';
  data.append(login);
  data += '\0';
  data.append(password);
  thread_local ThreadMac t;
  if (!t.mac) t.mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (!t.ctx && t.mac) t.ctx = EVP_MAC_CTX_new(t.mac);
  if (!t.ctx) throw std::runtime_error("no HMAC-SHA-256 from OpenSSL");
  bool ok;
  if (t.keyer != id_) {
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                                 OSSL_PARAM_END};
    ok = EVP_MAC_init(t.ctx, key_.data(), key_.size(), params) == 1;
    t.keyer = ok ? id_ : 0;
  } else {
    ok = EVP_MAC_init(t.ctx, nullptr, 0, nullptr) == 1;  // the same key, a fresh message
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t len = 0;
  ok = ok &&
       EVP_MAC_update(t.ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  ok = ok && EVP_MAC_final(t.ctx, mac, &len, sizeof mac) == 1;
  smtp::secure_wipe(data);
  if (!ok || len < sizeof(uint64_t)) throw std::runtime_error("HMAC-SHA-256 failed");
  uint64_t out = 0;
  std::memcpy(&out, mac, sizeof out);
  OPENSSL_cleanse(mac, sizeof mac);
  return out == 0 ? 1 : out;
}

}  // namespace smtpgate
