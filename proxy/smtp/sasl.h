// SASL helpers for AUTH PLAIN/LOGIN: strict base64, credential parsing, and xtext.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "policy/result.h"

namespace smtpgate::smtp {

// Standard base64 (RFC 4648 §4) with padding.
std::string base64_encode(std::string_view in);

// Strict base64: only the 64 letters, "=" padding only at the end and only as needed, length
// a multiple of 4, unused trailing bits zero, no whitespace. Anything else is nullopt: a
// lenient decoder would let two parsers read different credentials from one string.
// The result may hold a secret: wipe it with secure_wipe().
std::optional<std::string> base64_decode(std::string_view in);

// A SASL client response (RFC 4954 §4): "=" is the empty response, otherwise base64.
// "*" (the client cancels) is the session's to check before calling this.
std::optional<std::string> decode_sasl_response(std::string_view in);

// Overwrites the string's bytes in a way the compiler may not elide, then empties it.
void secure_wipe(std::string& s);

// Credentials collected from a client, held only until the backend has judged them.
// The password is wiped when the object dies or is moved from; copies are not allowed so
// that no forgotten duplicate outlives it.
struct Credentials {
  std::string authzid;  // empty, or equal to authcid
  std::string authcid;  // the login
  std::string password;

  Credentials() = default;
  Credentials(Credentials&& other) noexcept;
  Credentials& operator=(Credentials&& other) noexcept;
  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;
  ~Credentials();
};

// Splits a decoded PLAIN message "authzid NUL authcid NUL password" (RFC 4616). Refused:
// a wrong number of NULs, an empty login or password, CR or LF anywhere, and an authzid that
// differs from the login (the gateway does not let one user act as another).
Result<Credentials> decode_plain(std::string_view decoded);

// decode_sasl_response() + decode_plain(), wiping the decoded intermediate.
Result<Credentials> parse_plain_response(std::string_view response);

// Credentials from the two AUTH LOGIN answers (already base64-decoded), with the same
// checks as PLAIN.
Result<Credentials> make_login_credentials(std::string_view login, std::string_view password);

// The base64 PLAIN initial response the gateway sends the backend: "" NUL authcid NUL
// password. Holds the secret: wipe it after writing.
std::string encode_plain(const Credentials& c);

// RFC 3461 xtext, as XCLIENT wants its values: bytes below '!' or above '~', and '+' and
// '=', become "+HH" (upper-case hex).
std::string xtext_encode(std::string_view in);

}  // namespace smtpgate::smtp
