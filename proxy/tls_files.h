// Certificate and key checks shared by `smtpgate check` and the TLS setup.
#pragma once

#include <string>

#include "policy/policy.h"

namespace smtpgate {

// Loads the PEM chain and key and checks that they belong together.
// Returns "" when usable, else an OpenSSL-derived message.
std::string check_tls_files(const TlsSettings& tls);

// `what`, followed by OpenSSL's first queued error if there is one; clears the queue.
std::string openssl_error(const std::string& what);

}  // namespace smtpgate
