// Keyed hashes of login attempts, for brute_force.distinct_passwords: HMAC-SHA-256 under a
// key drawn at start that lives only in this process's memory, so neither a password nor a
// hash anyone could test guesses against is ever written anywhere.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "policy/ip_address.h"

namespace smtpgate {

class PasswordKeyer {
 public:
  PasswordKeyer();  // draws the key (RAND_bytes)
  ~PasswordKeyer();
  PasswordKeyer(const PasswordKeyer&) = delete;
  PasswordKeyer& operator=(const PasswordKeyer&) = delete;

  // The first 64 bits of HMAC(key, address | login | password); never 0.
  uint64_t key(const IpAddress& ip, std::string_view login, std::string_view password) const;

 private:
  std::array<unsigned char, 32> key_{};
  uint64_t id_;  // which keyer a thread's cached MAC context was keyed by
};

}  // namespace smtpgate
