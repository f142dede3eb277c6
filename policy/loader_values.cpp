// The loader's free helpers: quoting and type names for messages, the key schema and typo
// suggestions, DNS and list/listener names, endpoints, file reading.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "policy/loader_detail.h"

namespace smtpgate::loader_detail {

// JSON string syntax: shows control characters and quotes unambiguously. Text from files
// may be any bytes: invalid UTF-8 is shown as U+FFFD, never thrown (a throw here would end
// the process from a reload).
std::string quote(std::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------------------
// The keys each object may hold. Also used to tell a user where a misplaced key belongs.

const std::vector<Section>& schema() {
  static const std::vector<Section> sections = {
      {"",
       {"version", "hostname", "mode", "workers", "local_domains", "lists", "listeners", "tls",
        "mx", "submission", "brute_force", "connections", "timeouts", "message", "backend",
        "trusted_proxies", "log", "admin", "shared"}},
      {"listeners[]", {"name", "listen", "class", "tls", "proxy_protocol"}},
      {"lists.<name>", {"file"}},
      {"tls", {"cert", "key", "min_version", "ciphers"}},
      {"mx", {"mode", "access", "auth", "reject_local_sender", "max_recipients"}},
      {"mx.access", {"default", "allow", "deny"}},
      {"submission",
       {"mode", "access", "require_tls", "auth_match", "senders", "limits", "breaker"}},
      {"submission.breaker",
       {"max_ips_per_hour", "max_rcpt_domains_per_hour", "max_rejected_rcpts_per_hour"}},
      {"submission.access", {"default", "allow", "deny"}},
      {"submission.limits", {"messages_per_hour", "recipients_per_hour", "max_recipients"}},
      {"brute_force",
       {"mode", "max_failures", "window", "ban", "ban_multiplier", "max_ban", "never_ban",
        "state_file", "count_access_refusals", "distinct_passwords", "ipv6_prefix", "per_login"}},
      {"brute_force.per_login", {"max_failures", "window", "lock", "known_good"}},
      {"connections", {"max_total", "max_per_ip", "rate_per_ip"}},
      {"timeouts",
       {"command", "data", "backend_connect", "backend_reply", "backend_data_done", "drain"}},
      {"message", {"max_bytes", "bare_newline", "received_header", "received_auth"}},
      {"backend", {"address", "tls", "client_ip", "ca", "verify", "server_name"}},
      {"log", {"format", "path"}},
      {"admin", {"listen", "allow_remote"}},
      {"shared", {"redis", "password_file", "prefix", "instance"}},
  };
  return sections;
}

const Section& section(std::string_view name) {
  for (const Section& s : schema()) {
    if (s.name == name) return s;
  }
  return schema().front();  // unreachable: every caller names a section of the table
}

// How a section is named in "it belongs in …".
std::string section_display(std::string_view name) {
  if (name.empty()) return "the top level";
  if (name == "listeners[]") return "a listener";
  if (name == "lists.<name>") return "a file list";
  return quote(name);
}

namespace {

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

}  // namespace

// Optimal string alignment distance, case-insensitive: a typo, a swap, a wrong case.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) &&
          lower(a[i - 2]) == lower(b[j - 1])) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The candidate a typo most likely meant, if one is close enough to suggest.
std::optional<std::string_view> closest(std::string_view word,
                                        const std::vector<std::string_view>& candidates) {
  if (word.size() > 64) return std::nullopt;  // nobody mistypes a key that long
  size_t limit = word.size() <= 4 ? 1 : 2;
  std::optional<std::string_view> best;
  size_t best_distance = limit + 1;
  for (std::string_view c : candidates) {
    size_t dist = edit_distance(word, c);
    if (dist < best_distance) {
      best = c;
      best_distance = dist;
    }
  }
  return best;
}

std::string child(const std::string& pointer, std::string_view key) {
  return pointer + "/" + json_pointer_escape(key);
}
std::string child(const std::string& pointer, size_t index) {
  return pointer + "/" + std::to_string(index);
}

// "a string", "an integer" …: how a JSON value's type reads in "must be X, not Y".
std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a fractional number";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "an unsupported value";
  }
}

std::string join_choices(const std::vector<std::string_view>& choices) {
  std::string out;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i > 0) out += i + 1 == choices.size() ? " or " : ", ";
    out += quote(choices[i]);
  }
  return out;
}

// A DNS name: labels of letters, digits and hyphens (UTF-8 allowed, compared as given),
// 1-63 bytes each, at most 253 in all. One trailing root dot is tolerated.
bool is_domain(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.empty() || name.size() > 253) return false;
  size_t start = 0;
  while (true) {
    size_t dot = name.find('.', start);
    std::string_view label =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      auto u = static_cast<unsigned char>(c);
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || u >= 0x80;
      if (!ok) return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// Listener and list names end up in logs, metrics and on the command line.
bool is_simple_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

// "" when the path can be opened for reading as a regular file, else the reason.
std::string unreadable_reason(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::error_code(errno, std::generic_category()).message();
  struct stat st {};
  std::string reason;
  if (::fstat(fd, &st) != 0) {
    reason = std::error_code(errno, std::generic_category()).message();
  } else if (S_ISDIR(st.st_mode)) {
    reason = std::make_error_code(std::errc::is_a_directory).message();
  }
  ::close(fd);
  return reason;
}

Result<std::string> read_whole_file(const std::string& path) {
  auto failure = [] {
    return Result<std::string>::fail(std::error_code(errno, std::generic_category()).message());
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failure();
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    auto r = failure();
    ::close(fd);
    return r;
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return Result<std::string>::fail(std::make_error_code(std::errc::is_a_directory).message());
  }
  std::string data;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      auto r = failure();
      ::close(fd);
      return r;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return Result<std::string>::ok(std::move(data));
}

// "ip:port" or "[ipv6]:port"; only IP literals, so that no DNS lookup happens at load.
Result<Endpoint> parse_endpoint(std::string_view text, bool allow_port_zero) {
  const std::string q = quote(text);
  auto fail = [&](const std::string& why) { return Result<Endpoint>::fail(q + why); };
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return fail(" is missing the closing \"]\"");
    host = text.substr(1, close - 1);
    if (text.size() == close + 1) return fail(" has no port (expected \"[ipv6]:port\")");
    if (text[close + 1] != ':') return fail(" is not \"[ipv6]:port\"");
    port = text.substr(close + 2);
    if (host.find(':') == std::string_view::npos) {
      return fail(": brackets are only for IPv6 addresses");
    }
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return fail(" has no port (expected \"ip:port\" or \"[ipv6]:port\")");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return fail(": an IPv6 address needs brackets, as in \"[" + std::string(host) +
                  "]:" + std::string(port) + "\"");
    }
  }
  auto ip = IpAddress::parse(host);
  if (!ip) {
    bool looks_like_name = !host.empty() && std::any_of(host.begin(), host.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    });
    if (looks_like_name && is_domain(host)) {
      return fail(": the host must be an IP address, not a name (names would need DNS)");
    }
    return fail(": " + quote(host) + " is not an IP address");
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return fail(": " + quote(port) + " is not a port number");
  }
  unsigned long n = std::stoul(std::string(port));
  if (n > 65535 || (n == 0 && !allow_port_zero)) {
    return fail(allow_port_zero ? ": port must be 0-65535" : ": port must be 1-65535");
  }
  Endpoint e;
  e.host = std::string(host);
  e.ip = *ip;
  e.port = static_cast<uint16_t>(n);
  return Result<Endpoint>::ok(std::move(e));
}

bool is_wildcard(const IpAddress& ip) {
  const auto& b = ip.bytes();
  size_t len = ip.is_v4() ? 4 : 16;
  return std::all_of(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(len),
                     [](uint8_t x) { return x == 0; });
}

// Whether two listen sockets on the same port would collide at bind time. "[::]" is
// dual-stack (SPEC §2), so it also takes the port on every IPv4 address.
bool binds_overlap(const IpAddress& a, const IpAddress& b) {
  if (a == b) return true;
  auto covers = [](const IpAddress& wide, const IpAddress& other) {
    if (!is_wildcard(wide)) return false;
    return wide.is_v6() || other.is_v4();
  };
  return covers(a, b) || covers(b, a);
}

}  // namespace smtpgate::loader_detail
