#include "proxy/password_key.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "proxy/smtp/sasl.h"

namespace smtpgate {

PasswordKeyer::PasswordKeyer() {
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
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  smtp::secure_wipe(data);
  uint64_t out = 0;
  std::memcpy(&out, mac, sizeof out);
  OPENSSL_cleanse(mac, sizeof mac);
  return out == 0 ? 1 : out;
}

}  // namespace smtpgate
