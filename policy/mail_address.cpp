#include "policy/mail_address.h"

#include <optional>
#include <utility>

#include "policy/domain_set.h"

namespace smtpgate {

namespace {

// RFC 5321 4.5.3.1.3: a path is at most 256 octets including the angle brackets.
constexpr size_t kMaxPathOctets = 256;

bool is_alnum(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// SMTPUTF8 (RFC 6531) allows UTF-8 in local parts and domains; the backend judges those.
bool is_utf8_byte(unsigned char c) {
  return c >= 0x80;
}

bool is_control(unsigned char c) {
  return c < 0x20 || c == 0x7f;
}

// RFC 5322 atext.
bool is_atext(unsigned char c) {
  static constexpr std::string_view kSpecials = "!#$%&'*+-/=?^_`{|}~";
  return is_alnum(c) || is_utf8_byte(c) || kSpecials.find(static_cast<char>(c)) != kSpecials.npos;
}

using Error = std::optional<std::string>;

// Hostnames with letters, digits and hyphens; underscores too, since they occur in real
// mail domains. Labels must not be empty, apart from the optional root dot at the end.
Error check_domain(std::string_view d) {
  if (d.empty()) return "empty domain";
  if (d.front() == '[') {
    if (d.size() < 3 || d.back() != ']') return "malformed address literal";
    for (unsigned char c : d.substr(1, d.size() - 2)) {
      if (c == '[' || c == ']' || c == '\\' || c == ' ') return "malformed address literal";
    }
    return std::nullopt;
  }
  if (d.back() == '.') d.remove_suffix(1);
  size_t label = 0;
  for (unsigned char c : d) {
    if (c == '.') {
      if (label == 0) return "empty label in domain";
      label = 0;
      continue;
    }
    if (c == ' ') return "space outside quotes";
    if (!is_alnum(c) && c != '-' && c != '_' && !is_utf8_byte(c)) {
      return "invalid character in domain";
    }
    ++label;
  }
  if (label == 0) return "empty label in domain";
  return std::nullopt;
}

// "@a,@b" (the colon already removed).
Error check_route(std::string_view route) {
  while (true) {
    if (route.empty() || route.front() != '@') return "malformed source route";
    size_t comma = route.find(',');
    if (check_domain(route.substr(
            1, comma == std::string_view::npos ? std::string_view::npos : comma - 1))) {
      return "malformed source route";
    }
    if (comma == std::string_view::npos) return std::nullopt;
    route.remove_prefix(comma + 1);
  }
}

// Reads a quoted local part starting at text[0] == '"'; stores it unquoted.
Error read_quoted(std::string_view text, std::string& local, size_t& consumed) {
  for (size_t i = 1; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '"') {
      consumed = i + 1;
      return std::nullopt;
    }
    if (c == '\\') {
      if (++i == text.size()) break;
      local += text[i];
      continue;
    }
    local += static_cast<char>(c);
  }
  return "unterminated quoted local part";
}

Result<MailPath> fail(const char* why) {
  return Result<MailPath>::fail(why);
}

}  // namespace

// Error messages never echo the input: it is untrusted and ends up in logs.
Result<MailPath> parse_mail_path(std::string_view inner) {
  MailPath path;
  if (inner.empty()) {
    path.null = true;
    return Result<MailPath>::ok(std::move(path));
  }
  if (inner.size() + 2 > kMaxPathOctets) return fail("path longer than 256 octets");
  for (unsigned char c : inner) {
    if (is_control(c)) return fail("control character in address");
  }

  std::string_view rest = inner;
  if (rest.front() == '@') {
    size_t colon = rest.find(':');
    if (colon == std::string_view::npos) return fail("malformed source route");
    if (Error e = check_route(rest.substr(0, colon))) return fail(e->c_str());
    path.has_source_route = true;
    rest.remove_prefix(colon + 1);
    if (rest.empty()) return fail("source route without a mailbox");
  }

  size_t at;
  if (rest.front() == '"') {
    size_t consumed = 0;
    if (Error e = read_quoted(rest, path.local, consumed)) return fail(e->c_str());
    if (consumed == rest.size()) return fail("address has no domain");
    if (rest[consumed] != '@') return fail("invalid character after quoted local part");
    at = consumed;
  } else {
    at = rest.find('@');
    std::string_view local = rest.substr(0, at);
    for (unsigned char c : local) {
      if (c == ' ') return fail("space outside quotes");
      // Dots are not checked for placement: "a..b" and "a." occur in the wild and are the
      // backend's business, not a policy question.
      if (c != '.' && !is_atext(c)) return fail("invalid character in local part");
    }
    path.local.assign(local);
    if (at == std::string_view::npos) {
      // RFC 5321 4.1.1.3: "<Postmaster>" with no domain must be accepted.
      if (!path.has_source_route && iequals(local, "postmaster")) {
        return Result<MailPath>::ok(std::move(path));
      }
      return fail("address has no domain");
    }
  }
  if (path.local.empty()) return fail("empty local part");

  std::string_view domain = rest.substr(at + 1);
  if (Error e = check_domain(domain)) return fail(e->c_str());
  path.domain.assign(domain);
  return Result<MailPath>::ok(std::move(path));
}

std::string MailPath::address() const {
  std::string out;
  append_address(out);
  return out;
}

void MailPath::append_address(std::string& out) const {
  if (null) return;
  bool needs_quotes = local.empty();
  for (unsigned char c : local) {
    if (c != '.' && !is_atext(c)) needs_quotes = true;
  }
  if (needs_quotes) {
    out += '"';
    for (char c : local) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  } else {
    out += local;
  }
  if (domain.empty()) return;
  out += '@';
  out += domain;
}

}  // namespace smtpgate
