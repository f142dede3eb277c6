// The Received: trace header the gateway prepends to each message it forwards (RFC 5321
// §4.4), built in place in the backend's write buffer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "policy/ip_address.h"

namespace smtpgate {

// Client-supplied parts (HELO, login, recipient) are cut to this, a domain's maximum length,
// so no header line comes near RFC 5322's 998 octets.
inline constexpr size_t kMaxReceivedPart = 255;

struct ReceivedHeader {
  std::string_view helo;  // as the client sent it
  const IpAddress* client = nullptr;
  std::string_view hostname;  // the gateway's
  bool esmtp = true, tls = false, authenticated = false;
  std::string_view session_id;
  uint32_t message_number = 1;  // within the session
  std::string_view listener;
  std::string_view login;  // named only when authenticated and not empty
  std::string_view tls_version, tls_cipher;
  std::string_view recipient;  // the one recipient, or empty ("for" is left out)
};

// Appends "Received: from HELO ([IP])\r\n\tby HOSTNAME (smtpgate) with ESMTP[S][A] id ID.N
// \r\n\t(listener NAME[, authenticated as LOGIN])[\r\n\t(using VERSION with cipher C)]
// [\r\n\tfor <RCPT>]; DATE\r\n". Client-supplied text is reduced to printable ASCII without
// parentheses and cut to kMaxReceivedPart; a longer recipient is left out, not cut.
void append_received_header(std::string& out, const ReceivedHeader& h);

}  // namespace smtpgate
