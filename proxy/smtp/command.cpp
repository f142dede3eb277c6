#include "proxy/smtp/command.h"

#include <limits>

namespace smtpgate::smtp {
namespace {

constexpr char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool is_control(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

bool is_alnum(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool starts_with_i(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view skip_spaces(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  return s;
}

std::string_view trim_trailing_spaces(std::string_view s) {
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// Splits off the first space-delimited word; `rest` starts after the spaces that follow it.
std::string_view next_word(std::string_view& rest) {
  const size_t sp = rest.find(' ');
  std::string_view word = rest.substr(0, sp);
  rest = sp == std::string_view::npos ? std::string_view{} : skip_spaces(rest.substr(sp));
  return word;
}

struct VerbName {
  std::string_view name;
  Verb verb;
};
constexpr std::array<VerbName, 14> kVerbs{{
    {"HELO", Verb::Helo},
    {"EHLO", Verb::Ehlo},
    {"MAIL", Verb::Mail},
    {"RCPT", Verb::Rcpt},
    {"DATA", Verb::Data},
    {"RSET", Verb::Rset},
    {"NOOP", Verb::Noop},
    {"QUIT", Verb::Quit},
    {"HELP", Verb::Help},
    {"VRFY", Verb::Vrfy},
    {"EXPN", Verb::Expn},
    {"AUTH", Verb::Auth},
    {"STARTTLS", Verb::StartTls},
    {"BDAT", Verb::Bdat},
}};

// Every verb but STARTTLS has four letters: compare them as one number, case folded.
constexpr uint32_t pack_lower(std::string_view w) {
  uint32_t k = 0;
  for (char ch : w) k = (k << 8) | static_cast<unsigned char>(lower(ch));
  return k;
}

constexpr auto kPackedVerbs = [] {
  std::array<uint32_t, kVerbs.size()> keys{};
  for (size_t i = 0; i < kVerbs.size(); ++i)
    keys[i] = kVerbs[i].name.size() == 4 ? pack_lower(kVerbs[i].name) : 0;
  return keys;
}();

Verb lookup_verb(std::string_view w) {
  if (w.size() != 4) return iequals(w, "STARTTLS") ? Verb::StartTls : Verb::Unknown;
  const uint32_t k = pack_lower(w);
  for (size_t i = 0; i < kVerbs.size(); ++i) {
    if (kVerbs[i].name.size() == 4 && kPackedVerbs[i] == k) return kVerbs[i].verb;
  }
  return Verb::Unknown;
}

// Helpers fill the caller's Command and return nothing: returning it by reference would
// copy the whole value (~500 bytes) into parse_command's result on every command.
void fail(Command& c, std::string_view why) {
  c.status = Command::Status::SyntaxError;
  c.error = why;
}

// Finds the '>' that closes a path starting after '<', skipping quoted strings so that
// <"a>b"@example.org> is read whole.
size_t find_path_end(std::string_view s) {
  bool quoted = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (quoted) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        quoted = false;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == '>') {
      return i;
    }
  }
  return std::string_view::npos;
}

bool valid_keyword(std::string_view k) {
  if (k.empty() || !is_alnum(k.front())) return false;
  for (char c : k) {
    if (!is_alnum(c) && c != '-') return false;
  }
  return true;
}

// esmtp-value: 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531). Spaces and controls are
// already excluded by the caller.
bool valid_value(std::string_view v) {
  if (v.empty()) return false;
  for (char c : v) {
    if (c == '=') return false;
  }
  return true;
}

void parse_mail_rcpt(Command& c, std::string_view prefix, bool null_path_ok) {
  std::string_view arg = c.argument;
  if (!starts_with_i(arg, prefix)) {
    return fail(
        c, c.verb == Verb::Mail ? "expected MAIL FROM:<address>" : "expected RCPT TO:<address>");
  }
  arg.remove_prefix(prefix.size());
  // Postfix accepts "MAIL FROM: <a@b>"; more than that is not worth tolerating.
  if (!arg.empty() && arg.front() == ' ') arg.remove_prefix(1);
  if (arg.empty() || arg.front() != '<') return fail(c, "address must be in angle brackets");
  arg.remove_prefix(1);
  const size_t end = find_path_end(arg);
  if (end == std::string_view::npos) return fail(c, "missing '>' after address");
  c.path = arg.substr(0, end);
  if (c.path.empty() && !null_path_ok) return fail(c, "empty recipient address");
  arg.remove_prefix(end + 1);
  if (!arg.empty() && arg.front() != ' ') return fail(c, "garbage after address");
  arg = skip_spaces(arg);

  while (!arg.empty()) {
    const std::string_view word = next_word(arg);
    if (c.param_count == kMaxParams) return fail(c, "too many parameters");
    Param p;
    const size_t eq = word.find('=');
    p.key = word.substr(0, eq);
    if (eq != std::string_view::npos) {
      p.value = word.substr(eq + 1);
      p.has_value = true;
      if (!valid_value(p.value)) return fail(c, "bad parameter value");
    }
    if (!valid_keyword(p.key)) return fail(c, "bad parameter keyword");
    if (c.find_param(p.key) != nullptr) return fail(c, "duplicate parameter");
    c.param_storage[c.param_count++] = p;
  }

  if (c.verb == Verb::Mail) {
    if (const Param* s = c.find_param("SIZE")) {
      c.size = s->has_value ? parse_u64(s->value) : std::nullopt;
      if (!c.size) return fail(c, "bad SIZE value");
    }
  }
}

bool valid_mechanism(std::string_view m) {
  if (m.empty() || m.size() > 20) return false;
  for (char c : m) {
    if (!is_alnum(c) && c != '-' && c != '_') return false;
  }
  return true;
}

}  // namespace

std::string_view to_string(Verb v) {
  for (const auto& vn : kVerbs) {
    if (vn.verb == v) return vn.name;
  }
  return "UNKNOWN";
}

std::optional<uint64_t> parse_u64(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

const Param* Command::find_param(std::string_view key) const {
  for (const Param& p : params()) {
    if (iequals(p.key, key)) return &p;
  }
  return nullptr;
}

namespace {

void parse_into(Command& c, std::string_view line) {
  std::string_view rest = trim_trailing_spaces(line);
  c.verb_text = next_word(rest);
  c.argument = rest;
  c.verb = lookup_verb(c.verb_text);
  for (char ch : line) {
    if (is_control(ch)) return fail(c, "control character in command");
  }

  switch (c.verb) {
    case Verb::Helo:
    case Verb::Ehlo: {
      if (c.argument.empty()) return fail(c, "hostname required");
      std::string_view arg = c.argument;
      c.domain = next_word(arg);
      return;
    }
    case Verb::Mail:
      return parse_mail_rcpt(c, "FROM:", true);
    case Verb::Rcpt:
      return parse_mail_rcpt(c, "TO:", false);
    case Verb::Data:
    case Verb::Rset:
    case Verb::Quit:
    case Verb::StartTls:
      if (!c.argument.empty()) return fail(c, "no arguments allowed");
      return;
    case Verb::Vrfy:
    case Verb::Expn:
      if (c.argument.empty()) return fail(c, "argument required");
      return;
    case Verb::Auth: {
      std::string_view arg = c.argument;
      c.auth_mechanism = next_word(arg);
      if (!valid_mechanism(c.auth_mechanism)) return fail(c, "bad or missing mechanism");
      if (!arg.empty()) {
        c.auth_initial_response = next_word(arg);
        if (!arg.empty()) return fail(c, "too many arguments");
      }
      return;
    }
    case Verb::Bdat: {
      std::string_view arg = c.argument;
      const auto n = parse_u64(next_word(arg));
      if (!n) return fail(c, "bad chunk size");
      c.bdat_size = *n;
      if (!arg.empty()) {
        if (!iequals(next_word(arg), "LAST") || !arg.empty()) return fail(c, "expected LAST");
        c.bdat_last = true;
      }
      return;
    }
    case Verb::Noop:
    case Verb::Help:
    case Verb::Unknown:
      return;
  }
}

}  // namespace

Command parse_command(std::string_view line) {
  Command c;
  parse_into(c, line);
  return c;
}

bool remove_auth_param(const Command& cmd, std::string_view line, std::string& out) {
  const Param* auth = cmd.find_param("AUTH");
  if (auth == nullptr) return false;
  const char* base = line.data();
  size_t start = static_cast<size_t>(auth->key.data() - base);
  const std::string_view last = auth->has_value ? auth->value : auth->key;
  const size_t end = static_cast<size_t>(last.data() + last.size() - base);
  if (start > line.size() || end > line.size() || start > end) return false;  // not from `line`
  while (start > 0 && line[start - 1] == ' ') --start;
  out.assign(line.substr(0, start));
  out.append(line.substr(end));
  return true;
}

bool has_non_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return true;
  }
  return false;
}

bool looks_like_http(std::string_view line) {
  static constexpr std::array<std::string_view, 6> kMethods{"GET ",     "POST ",    "HEAD ",
                                                            "CONNECT ", "OPTIONS ", "PUT "};
  for (std::string_view m : kMethods) {
    if (line.starts_with(m)) return true;
  }
  return false;
}

}  // namespace smtpgate::smtp
