#include "proxy/smtp/sasl.h"

#include <string.h>  // explicit_bzero

#include <array>
#include <cstdint>

namespace smtpgate::smtp {
namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> make_decode_table() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (size_t i = 0; i < kAlphabet.size(); ++i) {
    t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  }
  return t;
}
constexpr auto kDecode = make_decode_table();

int sextet(char c) {
  return kDecode[static_cast<unsigned char>(c)];
}

// CR and LF would let a credential inject lines into the backend dialogue; NUL would shift
// the PLAIN fields.
bool clean_field(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

Result<Credentials> build(std::string_view authzid, std::string_view authcid,
                          std::string_view password) {
  if (!clean_field(authzid) || !clean_field(authcid) || !clean_field(password)) {
    return Result<Credentials>::fail("credentials contain CR, LF or NUL");
  }
  if (authcid.empty()) return Result<Credentials>::fail("empty login");
  if (password.empty()) return Result<Credentials>::fail("empty password");
  if (!authzid.empty() && authzid != authcid) {
    return Result<Credentials>::fail("authorization identity differs from login");
  }
  Credentials c;
  c.authzid = authzid;
  c.authcid = authcid;
  c.password = password;
  return Result<Credentials>::ok(std::move(c));
}

}  // namespace

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  auto byte = [&in](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(in[k])); };
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  const size_t left = in.size() - i;
  if (left == 1) {
    const uint32_t v = byte(i) << 16;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.append("==");
  } else if (left == 2) {
    const uint32_t v = byte(i) << 16 | byte(i + 1) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back('=');
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  // Reserved once so that no reallocation leaves a copy of a secret behind.
  out.reserve(in.size() / 4 * 3);
  for (size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    const int a = sextet(in[i]);
    const int b = sextet(in[i + 1]);
    if (a < 0 || b < 0) return std::nullopt;
    const char c3 = in[i + 2];
    const char c4 = in[i + 3];
    if (last && c3 == '=' && c4 == '=') {
      if ((b & 0x0f) != 0) return std::nullopt;  // non-canonical: unused bits set
      out.push_back(static_cast<char>(a << 2 | b >> 4));
      break;
    }
    const int c = sextet(c3);
    if (c < 0) return std::nullopt;
    if (last && c4 == '=') {
      if ((c & 0x03) != 0) return std::nullopt;
      out.push_back(static_cast<char>(a << 2 | b >> 4));
      out.push_back(static_cast<char>((b & 0x0f) << 4 | c >> 2));
      break;
    }
    const int d = sextet(c4);
    if (d < 0) return std::nullopt;
    out.push_back(static_cast<char>(a << 2 | b >> 4));
    out.push_back(static_cast<char>((b & 0x0f) << 4 | c >> 2));
    out.push_back(static_cast<char>((c & 0x03) << 6 | d));
  }
  return out;
}

std::optional<std::string> decode_sasl_response(std::string_view in) {
  if (in == "=") return std::string();
  if (in.empty()) return std::nullopt;  // "=" is how an empty response is sent
  return base64_decode(in);
}

void secure_wipe(std::string& s) {
  if (!s.empty()) explicit_bzero(s.data(), s.size());
  s.clear();
}

Credentials::Credentials(Credentials&& other) noexcept
    : authzid(std::move(other.authzid)),
      authcid(std::move(other.authcid)),
      password(other.password) {
  // A copy, not a move: moving a short string copies its bytes and leaves them in the source.
  secure_wipe(other.password);
}

Credentials& Credentials::operator=(Credentials&& other) noexcept {
  if (this != &other) {
    authzid = std::move(other.authzid);
    authcid = std::move(other.authcid);
    secure_wipe(password);
    password.assign(other.password);
    secure_wipe(other.password);
  }
  return *this;
}

Credentials::~Credentials() {
  secure_wipe(password);
}

Result<Credentials> decode_plain(std::string_view decoded) {
  const size_t nul1 = decoded.find('\0');
  if (nul1 == std::string_view::npos) return Result<Credentials>::fail("malformed PLAIN message");
  const size_t nul2 = decoded.find('\0', nul1 + 1);
  if (nul2 == std::string_view::npos) return Result<Credentials>::fail("malformed PLAIN message");
  return build(decoded.substr(0, nul1), decoded.substr(nul1 + 1, nul2 - nul1 - 1),
               decoded.substr(nul2 + 1));
}

Result<Credentials> parse_plain_response(std::string_view response) {
  auto decoded = decode_sasl_response(response);
  if (!decoded) return Result<Credentials>::fail("invalid base64");
  auto result = decode_plain(*decoded);
  secure_wipe(*decoded);
  return result;
}

Result<Credentials> make_login_credentials(std::string_view login, std::string_view password) {
  return build({}, login, password);
}

std::string encode_plain(const Credentials& c) {
  std::string plain;
  plain.reserve(c.authcid.size() + c.password.size() + 2);
  plain.push_back('\0');
  plain.append(c.authcid);
  plain.push_back('\0');
  plain.append(c.password);
  std::string out = base64_encode(plain);
  secure_wipe(plain);
  return out;
}

std::string xtext_encode(std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(in.size());
  for (char ch : in) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < '!' || u > '~' || u == '+' || u == '=') {
      out.push_back('+');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0x0f]);
    } else {
      out.push_back(ch);
    }
  }
  return out;
}

}  // namespace smtpgate::smtp
