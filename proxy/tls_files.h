// Certificate and key checks shared by `smtpgate check` and the TLS setup.
#pragma once

#include <string>

#include "policy/policy.h"

namespace smtpgate {

// Loads the PEM chain and key and checks that they belong together.
// Returns "" when usable, else an OpenSSL-derived message.
std::string check_tls_files(const TlsSettings& tls);

}  // namespace smtpgate
