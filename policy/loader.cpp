#include "policy/loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <system_error>
#include <tuple>
#include <utility>

#include "policy/json_locator.h"

namespace smtpgate {

std::string LoadError::to_string() const {
  std::string out = file;
  if (line > 0) {
    out += ':' + std::to_string(line);
    if (column > 0) out += ':' + std::to_string(column);
  }
  out += ": ";
  if (!pointer.empty()) out += pointer + ": ";
  out += message;
  return out;
}

namespace {

using json = nlohmann::json;

// JSON string syntax: shows control characters and quotes unambiguously. Text from files
// may be any bytes: invalid UTF-8 is shown as U+FFFD, never thrown (a throw here would end
// the process from a reload).
std::string quote(std::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// A bad list file gets this many line errors, then one summary: a wrong file given as a
// list (a log, a binary) must not bury the other errors under a million lines.
constexpr int kMaxListFileErrors = 50;
constexpr uint64_t kU32Max = UINT32_MAX;

// ---------------------------------------------------------------------------------------
// The keys each object may hold. Also used to tell a user where a misplaced key belongs.

struct Section {
  std::string_view name;  // as shown to the user; "" = the top level
  std::vector<std::string_view> keys;
};

const std::vector<Section>& schema() {
  static const std::vector<Section> sections = {
      {"",
       {"version", "hostname", "mode", "local_domains", "lists", "listeners", "tls", "mx",
        "submission", "brute_force", "connections", "timeouts", "message", "backend",
        "trusted_proxies", "log", "admin"}},
      {"listeners[]", {"name", "listen", "class", "tls"}},
      {"lists.<name>", {"file"}},
      {"tls", {"cert", "key", "min_version", "ciphers"}},
      {"mx", {"mode", "access", "auth", "reject_local_sender", "max_recipients"}},
      {"mx.access", {"default", "allow", "deny"}},
      {"submission", {"mode", "access", "require_tls", "auth_match", "senders", "limits"}},
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

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

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

struct Endpoint {
  std::string host;  // without brackets, as written
  IpAddress ip;
  uint16_t port = 0;
};

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

// ---------------------------------------------------------------------------------------

class Loader {
 public:
  Loader(std::string_view text, const std::string& display_name, const LoadOptions& options)
      : text_(text), file_(display_name), options_(options), locator_(text) {}

  LoadResult run();

 private:
  struct Pending {
    LoadError error;
    std::tuple<int, int, int, size_t> order;  // policy line, column, list-file line, sequence
  };
  struct NamedList {
    uint32_t origin = 0;
    std::vector<Cidr> entries;
  };
  struct ParsedListener {
    Listener listener;
    std::string pointer;
  };

  // Errors ----------------------------------------------------------------------------
  void add_error(const std::string& file, TextPosition at, int file_line, std::string pointer,
                 std::string message, TextPosition order_at) {
    LoadError e;
    e.file = file;
    e.line = at.line;
    e.column = at.column;
    e.pointer = std::move(pointer);
    e.message = std::move(message);
    int line = order_at.line > 0 ? order_at.line : INT_MAX;
    pending_.push_back({std::move(e), {line, order_at.column, file_line, pending_.size()}});
  }
  // At the value of pointer (for a missing key: the enclosing object, passed as pointer).
  void error(const std::string& pointer, std::string message) {
    TextPosition at = locator_.value(pointer).value_or(TextPosition{});
    add_error(file_, at, 0, pointer, std::move(message), at);
  }
  // At the key of the member at pointer (falls back to its value).
  void key_error(const std::string& pointer, std::string message) {
    TextPosition at =
        locator_.key(pointer).value_or(locator_.value(pointer).value_or(TextPosition{}));
    add_error(file_, at, 0, pointer, std::move(message), at);
  }
  void type_error(const json& v, const std::string& pointer, std::string_view expected) {
    error(pointer, "must be " + std::string(expected) + ", not " + type_name(v));
  }

  // Structure -------------------------------------------------------------------------
  void check_keys(const json& obj, const std::string& pointer, std::string_view section_name);
  bool require(const json& obj, const std::string& pointer, std::string_view key) {
    if (obj.contains(std::string(key))) return true;
    error(pointer, "missing required key " + quote(key));
    return false;
  }
  // The member as an object, or nullptr (absent, or wrong type: reported).
  const json* object_member(const json& obj, const std::string& pointer, std::string_view key) {
    auto it = obj.find(std::string(key));
    if (it == obj.end()) return nullptr;
    if (!it->is_object()) {
      type_error(*it, child(pointer, key), "an object");
      return nullptr;
    }
    return &*it;
  }
  // Calls f(value, pointer) for the member key when present; f returns optional<T>.
  template <class T, class F>
  bool read(const json& obj, const std::string& pointer, std::string_view key, T& out, F&& f) {
    auto it = obj.find(std::string(key));
    if (it == obj.end()) return false;
    const std::string at = child(pointer, key);
    auto v = f(*it, at);
    if (!v) return false;
    out = std::move(*v);
    return true;
  }

  // Values ----------------------------------------------------------------------------
  std::optional<std::string> as_string(const json& v, const std::string& p,
                                       bool allow_empty = false) {
    if (!v.is_string()) {
      type_error(v, p, "a string");
      return std::nullopt;
    }
    auto s = v.get<std::string>();
    if (s.empty() && !allow_empty) {
      error(p, "must not be empty");
      return std::nullopt;
    }
    return s;
  }
  std::optional<bool> as_bool(const json& v, const std::string& p) {
    if (!v.is_boolean()) {
      type_error(v, p, "true or false");
      return std::nullopt;
    }
    return v.get<bool>();
  }
  std::optional<uint64_t> as_uint(const json& v, const std::string& p, uint64_t min, uint64_t max) {
    auto range = [&] {
      error(p, "must be an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                   ", not " + v.dump());
      return std::nullopt;
    };
    if (v.is_number_unsigned()) {
      auto n = v.get<uint64_t>();
      if (n < min || n > max) return range();
      return n;
    }
    if (v.is_number_integer()) return range();  // negative (non-negative ones are unsigned)
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (std::floor(d) == d) return range();  // too large for an integer, or "5.0"
      error(p, "must be an integer, not " + v.dump());
      return std::nullopt;
    }
    type_error(v, p, "an integer");
    return std::nullopt;
  }
  std::optional<uint32_t> as_u32(const json& v, const std::string& p, uint32_t min = 0) {
    auto n = as_uint(v, p, min, kU32Max);
    if (!n) return std::nullopt;
    return static_cast<uint32_t>(*n);
  }
  template <class E>
  std::optional<E> as_enum(const json& v, const std::string& p,
                           const std::vector<std::pair<std::string_view, E>>& choices) {
    std::vector<std::string_view> names;
    for (const auto& c : choices) names.push_back(c.first);
    if (!v.is_string()) {
      type_error(v, p, "one of " + join_choices(names));
      return std::nullopt;
    }
    auto s = v.get<std::string>();
    for (const auto& c : choices) {
      if (c.first == s) return c.second;
    }
    std::string msg = quote(s) + " is not one of " + join_choices(names);
    if (auto near = closest(s, names)) msg += " (did you mean " + quote(*near) + "?)";
    error(p, msg);
    return std::nullopt;
  }
  std::optional<Mode> as_mode(const json& v, const std::string& p) {
    return as_enum<Mode>(v, p, {{"enforce", Mode::Enforce}, {"dry-run", Mode::DryRun}});
  }
  std::optional<Seconds> as_duration(const json& v, const std::string& p, bool allow_zero) {
    if (v.is_string()) {
      auto d = parse_duration(v.get<std::string>(), allow_zero);
      if (!d) {
        error(p, d.error());
        return std::nullopt;
      }
      return *d;
    }
    if (v.is_number()) {
      auto n = as_uint(v, p, allow_zero ? 0 : 1, kU32Max);
      if (!n) return std::nullopt;
      return Seconds(static_cast<int64_t>(*n));
    }
    type_error(v, p, "a duration (\"90s\", \"10m\", \"1h30m\") or a number of seconds");
    return std::nullopt;
  }
  std::optional<Rate> as_rate(const json& v, const std::string& p) {
    if (!v.is_string()) {
      type_error(v, p, "a rate string (\"60/m\")");
      return std::nullopt;
    }
    auto r = parse_rate(v.get<std::string>());
    if (!r) {
      error(p, r.error());
      return std::nullopt;
    }
    return *r;
  }
  std::optional<Endpoint> as_endpoint(const json& v, const std::string& p, bool allow_port_zero) {
    auto s = as_string(v, p);
    if (!s) return std::nullopt;
    auto e = parse_endpoint(*s, allow_port_zero);
    if (!e) {
      error(p, e.error());
      return std::nullopt;
    }
    return *e;
  }
  // A path to a file that must be readable (checked only with check_files).
  std::optional<std::string> as_readable_file(const json& v, const std::string& p) {
    auto s = as_string(v, p);
    if (!s) return std::nullopt;
    if (options_.check_files) {
      std::string why = unreadable_reason(*s);
      if (!why.empty()) {
        error(p, "cannot read " + quote(*s) + ": " + why);
        return std::nullopt;
      }
    }
    return s;
  }

  // Sections --------------------------------------------------------------------------
  void parse_root(const json& root);
  void parse_local_domains(const json& v, const std::string& p);
  void parse_lists(const json& v, const std::string& p);
  void parse_list_file(const std::string& path, const std::string& p, NamedList& out);
  void parse_tls(const json& v, const std::string& p);
  void parse_listeners(const json& v, const std::string& p);
  void parse_listener(const json& v, const std::string& p);
  void parse_access(const json& v, const std::string& p, std::string_view section_name,
                    AccessPolicy& out);
  void add_entries(const json& v, const std::string& p, AddressSet& set, Access access);
  void parse_mx(const json& v, const std::string& p);
  void parse_submission(const json& v, const std::string& p);
  void parse_senders(const json& v, const std::string& p);
  void parse_brute_force(const json& v, const std::string& p);
  void parse_connections(const json& v, const std::string& p);
  void parse_timeouts(const json& v, const std::string& p);
  void parse_message(const json& v, const std::string& p);
  void parse_backend(const json& v, const std::string& p);
  void parse_log(const json& v, const std::string& p);
  void parse_admin(const json& v, const std::string& p);
  // A file the gateway writes (`what`: "state file", "log file"): its directory exists
  // and is writable, and the file, if present, is a regular file it can write.
  void check_written_file(const std::string& path, const std::string& p, std::string_view what);
  void check_require_tls(const json& root);
  void check_tls_files();

  LoadResult finish();

  std::string_view text_;
  std::string file_;
  const LoadOptions& options_;
  JsonLocator locator_;
  std::vector<Pending> pending_;
  std::shared_ptr<Policy> policy_ = std::make_shared<Policy>();
  std::map<std::string, NamedList> lists_;
  std::vector<ParsedListener> listeners_;
  bool tls_section_ = false;   // a "tls" object exists, whatever its errors
  bool tls_files_ok_ = false;  // cert and key given and (with check_files) readable
};

void Loader::check_keys(const json& obj, const std::string& pointer,
                        std::string_view section_name) {
  const Section& here = section(section_name);
  for (const auto& [key, value] : obj.items()) {
    if (std::find(here.keys.begin(), here.keys.end(), key) != here.keys.end()) continue;
    std::string msg = "unknown key " + quote(key);
    if (auto near = closest(key, here.keys)) {
      msg += " (did you mean " + quote(*near) + "?)";
    } else {
      // A key put in the wrong section: say where it belongs.
      std::vector<std::string> homes;
      for (const Section& s : schema()) {
        if (s.name == section_name) continue;
        if (std::find(s.keys.begin(), s.keys.end(), key) == s.keys.end()) continue;
        homes.push_back(section_display(s.name));
      }
      if (!homes.empty() && homes.size() <= 3) {
        msg += " (it belongs in ";
        for (size_t i = 0; i < homes.size(); ++i) {
          if (i > 0) msg += i + 1 == homes.size() ? " or " : ", ";
          msg += homes[i];
        }
        msg += ")";
      }
    }
    key_error(child(pointer, key), msg);
  }
}

LoadResult Loader::run() {
  json root;
  try {
    root = json::parse(text_, nullptr, /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const json::parse_error& e) {
    // nlohmann counts bytes from 1 and names the last byte it read, the end of the bad
    // token; its own "line, column" counts bytes. Show the token's start, in characters.
    TextPosition at = syntax_error_position(text_, e.byte > 0 ? e.byte - 1 : 0);
    std::string what = e.what();
    if (auto colon = what.find(": "); colon != std::string::npos) what.erase(0, colon + 2);
    add_error(file_, at, 0, "", what, at);
    return finish();
  } catch (const json::exception& e) {
    add_error(file_, {}, 0, "", e.what(), {});
    return finish();
  }

  for (const auto& dup : locator_.duplicate_keys()) {
    add_error(file_, dup.position, 0, dup.pointer,
              "duplicate key (first given at " + std::to_string(dup.first.line) + ":" +
                  std::to_string(dup.first.column) + "); JSON would silently keep only the last",
              dup.position);
  }

  if (!root.is_object()) {
    error("", "the policy must be a JSON object, not " + type_name(root));
    return finish();
  }
  parse_root(root);
  return finish();
}

void Loader::parse_root(const json& root) {
  Policy& pol = *policy_;
  const std::string p;
  check_keys(root, p, "");
  // The submission default differs from the struct's (which serves mx as well).
  pol.submission.access.default_access = Access::Deny;
  pol.list_names = {""};

  if (require(root, p, "version")) {
    const json& v = root["version"];
    if (auto n = as_uint(v, "/version", 1, kU32Max)) {
      if (*n != 1) {
        error("/version",
              "unsupported version " + std::to_string(*n) + " (this smtpgate reads version 1)");
      }
    }
  }
  if (require(root, p, "hostname")) {
    if (auto h = as_string(root["hostname"], "/hostname")) {
      if (is_domain(*h)) {
        pol.hostname = *h;
      } else {
        error("/hostname", quote(*h) + " is not a valid host name");
      }
    }
  }
  read(root, p, "mode", pol.mode, [&](auto& v, auto& q) { return as_mode(v, q); });
  if (auto it = root.find("local_domains"); it != root.end()) {
    parse_local_domains(*it, "/local_domains");
  }
  if (const json* v = object_member(root, p, "lists")) parse_lists(*v, "/lists");
  if (const json* v = object_member(root, p, "tls")) parse_tls(*v, "/tls");
  if (require(root, p, "listeners")) parse_listeners(root["listeners"], "/listeners");

  if (const json* v = object_member(root, p, "mx")) parse_mx(*v, "/mx");
  if (const json* v = object_member(root, p, "submission")) parse_submission(*v, "/submission");
  if (const json* v = object_member(root, p, "brute_force")) {
    parse_brute_force(*v, "/brute_force");
  }
  if (const json* v = object_member(root, p, "connections")) {
    parse_connections(*v, "/connections");
  }
  if (const json* v = object_member(root, p, "timeouts")) parse_timeouts(*v, "/timeouts");
  if (const json* v = object_member(root, p, "message")) parse_message(*v, "/message");
  if (require(root, p, "backend")) {
    if (const json* v = object_member(root, p, "backend")) parse_backend(*v, "/backend");
  }
  if (auto it = root.find("trusted_proxies"); it != root.end()) {
    add_entries(*it, "/trusted_proxies", pol.trusted_proxies, Access::Allow);
  }
  if (const json* v = object_member(root, p, "log")) parse_log(*v, "/log");
  if (const json* v = object_member(root, p, "admin")) parse_admin(*v, "/admin");

  check_require_tls(root);
  check_tls_files();

  if (options_.cli_dry_run) {
    // --dry-run means nothing is enforced: section overrides included.
    pol.mode = Mode::DryRun;
    pol.mx.mode = Mode::DryRun;
    pol.submission.mode = Mode::DryRun;
    pol.brute_force.mode = Mode::DryRun;
  }

  pol.mx.access.entries.build();
  pol.submission.access.entries.build();
  pol.brute_force.never_ban.build();
  pol.trusted_proxies.build();
}

void Loader::parse_local_domains(const json& v, const std::string& p) {
  if (!v.is_array()) {
    type_error(v, p, "an array of domains");
    return;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string q = child(p, i);
    auto s = as_string(v[i], q);
    if (!s) continue;
    std::string_view name = *s;
    bool wildcard = name.starts_with("*.");
    if (!is_domain(wildcard ? name.substr(2) : name)) {
      error(q, quote(*s) + " is not a domain (use \"example.com\" or \"*.example.com\")");
      continue;
    }
    policy_->local_domains.add(ascii_lower(*s));
  }
}

void Loader::parse_lists(const json& v, const std::string& p) {
  // Origin tags follow the order of Policy::list_names; 0 is reserved for inline entries.
  for (const auto& [name, value] : v.items()) {
    const std::string q = child(p, name);
    if (!is_simple_name(name)) {
      key_error(
          q, quote(name) + " is not a valid list name (letters, digits, \".\", \"_\" and \"-\")");
      continue;
    }
    NamedList list;
    list.origin = static_cast<uint32_t>(policy_->list_names.size());
    if (value.is_array()) {
      for (size_t i = 0; i < value.size(); ++i) {
        const std::string e = child(q, i);
        auto s = as_string(value[i], e);
        if (!s) continue;
        if (s->starts_with('@')) {
          error(e, quote(*s) + ": a list cannot refer to another list");
          continue;
        }
        auto cidr = Cidr::parse(*s);
        if (!cidr) {
          error(e, cidr.error());
          continue;
        }
        list.entries.push_back(*cidr);
      }
    } else if (value.is_object()) {
      check_keys(value, q, "lists.<name>");
      if (require(value, q, "file")) {
        const std::string fp = child(q, "file");
        if (auto path = as_string(value["file"], fp);
            path && (options_.check_files || options_.read_list_files)) {
          parse_list_file(*path, fp, list);
        }
      }
    } else {
      type_error(value, q, "an array of addresses or {\"file\": \"/path\"}");
      continue;
    }
    policy_->list_names.push_back(name);
    lists_.emplace(name, std::move(list));
  }
}

void Loader::parse_list_file(const std::string& path, const std::string& p, NamedList& out) {
  auto data = read_whole_file(path);
  if (!data) {
    error(p, "cannot read " + quote(path) + ": " + data.error());
    return;
  }
  TextPosition order_at = locator_.value(p).value_or(TextPosition{});
  int bad = 0;
  int line_no = 0;
  std::string_view rest = *data;
  while (!rest.empty()) {
    ++line_no;
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) {
      line.remove_suffix(1);
    }
    if (line.empty()) continue;
    auto cidr = Cidr::parse(line);
    if (cidr) {
      out.entries.push_back(*cidr);
      continue;
    }
    if (++bad <= kMaxListFileErrors) {
      add_error(path, {line_no, 0}, line_no, p, cidr.error(), order_at);
    }
  }
  if (bad > kMaxListFileErrors) {
    add_error(path, {}, INT_MAX, p,
              std::to_string(bad - kMaxListFileErrors) + " more bad lines not shown (" +
                  std::to_string(bad) + " in all)",
              order_at);
  }
}

void Loader::parse_tls(const json& v, const std::string& p) {
  TlsSettings& tls = policy_->tls;
  tls_section_ = true;
  check_keys(v, p, "tls");
  bool cert_ok = false;
  bool key_ok = false;
  if (require(v, p, "cert"))
    cert_ok =
        read(v, p, "cert", tls.cert, [&](auto& x, auto& q) { return as_readable_file(x, q); });
  if (require(v, p, "key"))
    key_ok = read(v, p, "key", tls.key, [&](auto& x, auto& q) { return as_readable_file(x, q); });
  read(v, p, "min_version", tls.min_version, [&](auto& x, auto& q) {
    return as_enum<std::string>(x, q, {{"TLSv1.2", "TLSv1.2"}, {"TLSv1.3", "TLSv1.3"}});
  });
  read(v, p, "ciphers", tls.ciphers, [&](auto& x, auto& q) { return as_string(x, q, true); });
  tls.configured =
      v.contains("cert") && v.contains("key") && v["cert"].is_string() && v["key"].is_string();
  tls_files_ok_ = cert_ok && key_ok;
}

void Loader::check_tls_files() {
  // The checker parses the files; it only makes sense once they are known to be readable.
  if (!options_.check_files || !options_.tls_checker || !tls_files_ok_) return;
  std::string message = options_.tls_checker(policy_->tls);
  if (!message.empty()) error("/tls/key", message);
}

void Loader::parse_listeners(const json& v, const std::string& p) {
  if (!v.is_array()) {
    type_error(v, p, "an array of listeners");
    return;
  }
  if (v.empty()) {
    error(p, "must name at least one listener");
    return;
  }
  for (size_t i = 0; i < v.size(); ++i) parse_listener(v[i], child(p, i));
  for (const ParsedListener& l : listeners_) policy_->listeners.push_back(l.listener);
}

void Loader::parse_listener(const json& v, const std::string& p) {
  if (!v.is_object()) {
    type_error(v, p, "an object");
    return;
  }
  check_keys(v, p, "listeners[]");
  ParsedListener parsed;
  parsed.pointer = p;
  Listener& l = parsed.listener;
  bool ok = true;

  if (require(v, p, "name")) {
    const std::string q = child(p, "name");
    if (auto name = as_string(v["name"], q)) {
      auto same = std::find_if(listeners_.begin(), listeners_.end(),
                               [&](const ParsedListener& o) { return o.listener.name == *name; });
      if (!is_simple_name(*name)) {
        error(q, quote(*name) +
                     " is not a valid listener name (letters, digits, \".\", \"_\" and \"-\")");
        ok = false;
      } else if (same != listeners_.end()) {
        error(q, "duplicate listener name " + quote(*name) + " (also " + same->pointer + ")");
        ok = false;
      } else {
        l.name = *name;
      }
    } else {
      ok = false;
    }
  } else {
    ok = false;
  }

  if (require(v, p, "listen")) {
    const std::string q = child(p, "listen");
    if (auto e = as_endpoint(v["listen"], q, /*allow_port_zero=*/true)) {
      for (const ParsedListener& o : listeners_) {
        if (e->port == 0 || o.listener.port != e->port) continue;
        auto other_ip = IpAddress::parse(o.listener.host);
        if (!other_ip || !binds_overlap(*other_ip, e->ip)) continue;
        std::string other = o.listener.host.find(':') != std::string::npos
                                ? "[" + o.listener.host + "]:" + std::to_string(o.listener.port)
                                : o.listener.host + ":" + std::to_string(o.listener.port);
        std::string text = v["listen"].get<std::string>();
        if (*other_ip == e->ip) {
          error(q, "duplicate listen address " + quote(text) + " (also listener " +
                       quote(o.listener.name) + ")");
        } else {
          error(q, quote(text) + " overlaps " + quote(other) + " of listener " +
                       quote(o.listener.name) + ": both cannot bind the same port");
        }
        ok = false;
        break;
      }
      l.host = e->host;
      l.port = e->port;
    } else {
      ok = false;
    }
  } else {
    ok = false;
  }

  if (require(v, p, "class")) {
    if (auto c = as_enum<ListenerClass>(v["class"], child(p, "class"),
                                        {{"mx", ListenerClass::Mx},
                                         {"submission", ListenerClass::Submission},
                                         {"auto", ListenerClass::Auto}})) {
      l.cls = *c;
    } else {
      ok = false;
    }
  } else {
    ok = false;
  }

  l.tls = tls_section_ ? TlsMode::StartTls : TlsMode::None;
  if (v.contains("tls")) {
    const std::string q = child(p, "tls");
    if (auto t = as_enum<TlsMode>(v["tls"], q,
                                  {{"starttls", TlsMode::StartTls},
                                   {"implicit", TlsMode::Implicit},
                                   {"none", TlsMode::None}})) {
      if (*t != TlsMode::None && !tls_section_) {
        error(q, quote(v["tls"].get<std::string>()) +
                     " needs a top-level \"tls\" section with \"cert\" and \"key\"");
        ok = false;
      }
      l.tls = *t;
    } else {
      ok = false;
    }
  }
  // Listeners with errors still count for the duplicate checks of the ones that follow.
  if (ok || !l.name.empty() || l.port != 0) listeners_.push_back(std::move(parsed));
}

void Loader::parse_access(const json& v, const std::string& p, std::string_view section_name,
                          AccessPolicy& out) {
  check_keys(v, p, section_name);
  read(v, p, "default", out.default_access, [&](auto& x, auto& q) {
    return as_enum<Access>(x, q, {{"allow", Access::Allow}, {"deny", Access::Deny}});
  });
  if (auto it = v.find("allow"); it != v.end()) {
    add_entries(*it, child(p, "allow"), out.entries, Access::Allow);
  }
  if (auto it = v.find("deny"); it != v.end()) {
    add_entries(*it, child(p, "deny"), out.entries, Access::Deny);
  }
}

void Loader::add_entries(const json& v, const std::string& p, AddressSet& set, Access access) {
  if (!v.is_array()) {
    type_error(v, p, "an array of addresses, CIDRs or \"@list\" names");
    return;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string q = child(p, i);
    auto s = as_string(v[i], q);
    if (!s) continue;
    if (s->starts_with('@')) {
      std::string name = s->substr(1);
      auto it = lists_.find(name);
      if (it == lists_.end()) {
        std::string msg = "undefined list " + quote(*s);
        std::vector<std::string_view> names(policy_->list_names.begin() + 1,
                                            policy_->list_names.end());
        if (auto near = closest(name, names)) {
          msg += " (did you mean " + quote("@" + std::string(*near)) + "?)";
        } else {
          msg += " (define it under \"lists\")";
        }
        error(q, msg);
        continue;
      }
      for (const Cidr& c : it->second.entries) set.add(c, access, it->second.origin);
      continue;
    }
    auto cidr = Cidr::parse(*s);
    if (!cidr) {
      error(q, cidr.error());
      continue;
    }
    set.add(*cidr, access, 0);
  }
}

void Loader::parse_mx(const json& v, const std::string& p) {
  MxPolicy& mx = policy_->mx;
  check_keys(v, p, "mx");
  read(v, p, "mode", mx.mode, [&](auto& x, auto& q) { return as_mode(x, q); });
  if (const json* a = object_member(v, p, "access")) {
    parse_access(*a, child(p, "access"), "mx.access", mx.access);
  }
  read(v, p, "auth", mx.auth, [&](auto& x, auto& q) {
    return as_enum<MxPolicy::AuthAction>(
        x, q, {{"refuse", MxPolicy::AuthAction::Refuse}, {"ban", MxPolicy::AuthAction::Ban}});
  });
  read(v, p, "reject_local_sender", mx.reject_local_sender,
       [&](auto& x, auto& q) { return as_bool(x, q); });
  read(v, p, "max_recipients", mx.max_recipients,
       [&](auto& x, auto& q) { return as_u32(x, q, 1); });
}

void Loader::parse_submission(const json& v, const std::string& p) {
  SubmissionPolicy& sub = policy_->submission;
  check_keys(v, p, "submission");
  read(v, p, "mode", sub.mode, [&](auto& x, auto& q) { return as_mode(x, q); });
  if (const json* a = object_member(v, p, "access")) {
    parse_access(*a, child(p, "access"), "submission.access", sub.access);
  }
  read(v, p, "require_tls", sub.require_tls, [&](auto& x, auto& q) { return as_bool(x, q); });
  read(v, p, "auth_match", sub.auth_match, [&](auto& x, auto& q) {
    return as_enum<AuthMatch>(x, q,
                              {{"address", AuthMatch::Address},
                               {"domain", AuthMatch::Domain},
                               {"none", AuthMatch::None}});
  });
  if (const json* s = object_member(v, p, "senders")) parse_senders(*s, child(p, "senders"));
  if (const json* l = object_member(v, p, "limits")) {
    const std::string q = child(p, "limits");
    check_keys(*l, q, "submission.limits");
    auto u32 = [&](auto& x, auto& r) { return as_u32(x, r); };
    read(*l, q, "messages_per_hour", sub.limits.messages_per_hour, u32);
    read(*l, q, "recipients_per_hour", sub.limits.recipients_per_hour, u32);
    read(*l, q, "max_recipients", sub.limits.max_recipients, u32);
  }
}

void Loader::parse_senders(const json& v, const std::string& p) {
  auto& senders = policy_->submission.senders;
  std::map<std::string, std::string> seen;  // lower-cased login -> as written
  for (const auto& [login, list] : v.items()) {
    const std::string q = child(p, login);
    std::string key = ascii_lower(login);
    if (login.empty()) {
      key_error(q, "a login must not be empty");
      continue;
    }
    if (auto [it, inserted] = seen.emplace(key, login); !inserted) {
      key_error(q, "login " + quote(login) + " is also listed as " + quote(it->second) +
                       " (logins are compared case-insensitively)");
      continue;
    }
    if (!list.is_array()) {
      type_error(list, q, "an array of addresses, \"@domain\", \"@*.domain\" or \"*\"");
      continue;
    }
    std::vector<std::string> entries;
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string e = child(q, i);
      auto s = as_string(list[i], e);
      if (!s) continue;
      if (*s == "*") {  // any sender for this login
        entries.push_back(*s);
        continue;
      }
      size_t at = s->rfind('@');
      std::string_view domain =
          at == std::string::npos ? std::string_view{} : std::string_view(*s).substr(at + 1);
      // "@*.domain": any subdomain (only as a whole entry, never with a local part).
      if (at == 0 && domain.starts_with("*.")) domain.remove_prefix(2);
      bool ok = at != std::string::npos && is_domain(domain);
      if (ok && at > 0) {
        // A local part: printable, no spaces (quoted local parts are not worth supporting).
        ok = std::none_of(s->begin(), s->begin() + static_cast<std::ptrdiff_t>(at), [](char c) {
          return static_cast<unsigned char>(c) <= ' ' || c == '<' || c == '>';
        });
      }
      if (!ok) {
        error(e, quote(*s) + " is not an address, \"@domain\", \"@*.domain\" or \"*\"");
        continue;
      }
      entries.push_back(ascii_lower(*s));
    }
    senders[key] = std::move(entries);
  }
}

void Loader::parse_brute_force(const json& v, const std::string& p) {
  BruteForcePolicy& bf = policy_->brute_force;
  check_keys(v, p, "brute_force");
  read(v, p, "mode", bf.mode, [&](auto& x, auto& q) { return as_mode(x, q); });
  read(v, p, "max_failures", bf.max_failures, [&](auto& x, auto& q) { return as_u32(x, q, 1); });
  read(v, p, "count_access_refusals", bf.count_access_refusals,
       [&](auto& x, auto& q) { return as_bool(x, q); });
  read(v, p, "distinct_passwords", bf.distinct_passwords,
       [&](auto& x, auto& q) { return as_bool(x, q); });
  read(v, p, "ipv6_prefix", bf.ipv6_prefix, [&](auto& x, auto& q) -> std::optional<uint8_t> {
    auto n = as_u32(x, q, 16);
    if (!n) return std::nullopt;
    if (*n > 128) {
      error(q, std::to_string(*n) + " is not an IPv6 prefix length (16 to 128)");
      return std::nullopt;
    }
    return static_cast<uint8_t>(*n);
  });
  auto duration = [&](auto& x, auto& q) { return as_duration(x, q, false); };
  read(v, p, "window", bf.window, duration);
  bool ban_ok = read(v, p, "ban", bf.ban, duration);
  bool max_ok = read(v, p, "max_ban", bf.max_ban, duration);
  read(v, p, "ban_multiplier", bf.ban_multiplier, [&](auto& x, auto& q) -> std::optional<double> {
    if (!x.is_number()) {
      type_error(x, q, "a number");
      return std::nullopt;
    }
    double m = x.template get<double>();
    if (!(m >= 1 && m <= 1000)) {
      error(q, "must be from 1 to 1000, not " + x.dump());
      return std::nullopt;
    }
    return m;
  });
  if (bf.max_ban < bf.ban && (ban_ok || max_ok)) {
    bool ban_given = v.contains("ban") && ban_ok;
    bool max_given = v.contains("max_ban") && max_ok;
    // Point at whichever of the two the admin wrote (max_ban when both).
    error(max_given   ? child(p, "max_ban")
          : ban_given ? child(p, "ban")
                      : p,
          "max_ban (" + format_duration(bf.max_ban) + ") is shorter than ban (" +
              format_duration(bf.ban) + ")");
  }
  if (auto it = v.find("never_ban"); it != v.end()) {
    add_entries(*it, child(p, "never_ban"), bf.never_ban, Access::Allow);
  }
  if (const json* pl = object_member(v, p, "per_login")) {
    const std::string q = child(p, "per_login");
    check_keys(*pl, q, "brute_force.per_login");
    PerLoginPolicy per;
    read(*pl, q, "max_failures", per.max_failures,
         [&](auto& x, auto& r) { return as_u32(x, r, 1); });
    read(*pl, q, "window", per.window, duration);
    read(*pl, q, "lock", per.lock, duration);
    read(*pl, q, "known_good", per.known_good, duration);
    bf.per_login = per;
  }
  if (read(v, p, "state_file", bf.state_file, [&](auto& x, auto& q) { return as_string(x, q); })) {
    if (options_.check_files)
      check_written_file(bf.state_file, child(p, "state_file"), "state file");
  }
}

void Loader::check_written_file(const std::string& path, const std::string& p,
                                std::string_view what) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    error(p, "directory " + quote(dir) + " of the " + std::string(what) + ": " +
                 std::error_code(errno, std::generic_category()).message());
    return;
  }
  if (!S_ISDIR(st.st_mode)) {
    error(p, quote(dir) + " is not a directory");
    return;
  }
  // The state file is replaced by rename, and a log file may be created: the directory
  // must be writable.
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    error(p, "directory " + quote(dir) + " of the " + std::string(what) +
                 " is not writable: " + std::error_code(errno, std::generic_category()).message());
    return;
  }
  if (::stat(path.c_str(), &st) == 0) {
    // A log may be a pipe or a device (a FIFO to a log shipper); the state file is read back.
    const bool state = what == "state file";
    if (state && !S_ISREG(st.st_mode)) {
      error(p, quote(path) + " is not a regular file");
    } else if (::access(path.c_str(), state ? R_OK | W_OK : W_OK) != 0) {
      error(p, std::string(state ? "cannot read and write " : "cannot write ") + quote(path) +
                   ": " + std::error_code(errno, std::generic_category()).message());
    }
  }
}

void Loader::parse_connections(const json& v, const std::string& p) {
  ConnectionLimits& c = policy_->connections;
  check_keys(v, p, "connections");
  read(v, p, "max_total", c.max_total, [&](auto& x, auto& q) { return as_u32(x, q, 1); });
  read(v, p, "max_per_ip", c.max_per_ip, [&](auto& x, auto& q) { return as_u32(x, q, 1); });
  read(v, p, "rate_per_ip", c.rate_per_ip, [&](auto& x, auto& q) { return as_rate(x, q); });
}

void Loader::parse_timeouts(const json& v, const std::string& p) {
  Timeouts& t = policy_->timeouts;
  check_keys(v, p, "timeouts");
  auto positive = [&](auto& x, auto& q) { return as_duration(x, q, false); };
  read(v, p, "command", t.command, positive);
  read(v, p, "data", t.data, positive);
  read(v, p, "backend_connect", t.backend_connect, positive);
  read(v, p, "backend_reply", t.backend_reply, positive);
  read(v, p, "backend_data_done", t.backend_data_done, positive);
  // Zero is meaningful here: stop at once on SIGTERM.
  read(v, p, "drain", t.drain, [&](auto& x, auto& q) { return as_duration(x, q, true); });
}

void Loader::parse_message(const json& v, const std::string& p) {
  MessagePolicy& m = policy_->message;
  check_keys(v, p, "message");
  read(v, p, "max_bytes", m.max_bytes,
       [&](auto& x, auto& q) { return as_uint(x, q, 1, UINT64_MAX); });
  read(v, p, "bare_newline", m.bare_newline, [&](auto& x, auto& q) {
    return as_enum<BareNewline>(
        x, q, {{"reject", BareNewline::Reject}, {"normalize", BareNewline::Normalize}});
  });
  read(v, p, "received_header", m.received_header, [&](auto& x, auto& q) { return as_bool(x, q); });
  read(v, p, "received_auth", m.received_auth, [&](auto& x, auto& q) { return as_bool(x, q); });
}

void Loader::parse_backend(const json& v, const std::string& p) {
  BackendSettings& b = policy_->backend;
  check_keys(v, p, "backend");
  if (require(v, p, "address")) {
    if (auto e = as_endpoint(v["address"], child(p, "address"), /*allow_port_zero=*/false)) {
      b.host = e->host;
      b.port = e->port;
    }
  }
  read(v, p, "tls", b.tls, [&](auto& x, auto& q) {
    return as_enum<BackendTls>(x, q,
                               {{"none", BackendTls::None},
                                {"starttls", BackendTls::StartTls},
                                {"implicit", BackendTls::Implicit}});
  });
  read(v, p, "client_ip", b.client_ip, [&](auto& x, auto& q) {
    return as_enum<ClientIpMode>(x, q,
                                 {{"none", ClientIpMode::None},
                                  {"xclient", ClientIpMode::Xclient},
                                  {"proxy-v1", ClientIpMode::ProxyV1},
                                  {"proxy-v2", ClientIpMode::ProxyV2}});
  });
  read(v, p, "ca", b.ca, [&](auto& x, auto& q) { return as_readable_file(x, q); });
  read(v, p, "verify", b.verify, [&](auto& x, auto& q) { return as_bool(x, q); });
  read(v, p, "server_name", b.server_name, [&](auto& x, auto& q) -> std::optional<std::string> {
    auto s = as_string(x, q);
    if (s && !is_domain(*s)) {
      error(q, quote(*s) + " is not a valid host name");
      return std::nullopt;
    }
    return s;
  });
}

void Loader::parse_log(const json& v, const std::string& p) {
  LogSettings& log = policy_->log;
  check_keys(v, p, "log");
  read(v, p, "format", log.format, [&](auto& x, auto& q) {
    return as_enum<LogFormat>(x, q, {{"json", LogFormat::Json}, {"text", LogFormat::Text}});
  });
  if (read(v, p, "path", log.path, [&](auto& x, auto& q) { return as_string(x, q); }) &&
      options_.check_files && log.path != "-")
    // `check` passing and `run` then failing to open its log is a restart loop under systemd.
    check_written_file(log.path, child(p, "path"), "log file");
}

void Loader::parse_admin(const json& v, const std::string& p) {
  AdminSettings& admin = policy_->admin;
  check_keys(v, p, "admin");
  read(v, p, "allow_remote", admin.allow_remote, [&](auto& x, auto& q) { return as_bool(x, q); });
  if (auto it = v.find("listen"); it != v.end()) {
    const std::string q = child(p, "listen");
    if (auto e = as_endpoint(*it, q, /*allow_port_zero=*/true)) {
      if (!e->ip.is_loopback() && !admin.allow_remote) {
        // The admin endpoint has no authentication and can unban and reload.
        error(q, quote(it->get<std::string>()) +
                     " is not a loopback address; the admin endpoint has no authentication, "
                     "set \"allow_remote\": true to expose it anyway");
      } else {
        admin.host = e->host;
        admin.port = e->port;
      }
    }
  }
}

void Loader::check_require_tls(const json& root) {
  const SubmissionPolicy& sub = policy_->submission;
  if (!sub.require_tls) return;
  const ParsedListener* first_auth = nullptr;
  bool any_tls = false;
  for (const ParsedListener& l : listeners_) {
    if (l.listener.cls == ListenerClass::Mx) continue;
    if (!first_auth) first_auth = &l;
    if (l.listener.tls != TlsMode::None) any_tls = true;
  }
  // A listener that asks for TLS without a "tls" section has its own error already.
  if (!first_auth || any_tls) return;

  std::string why = tls_section_ ? "every submission/auto listener has \"tls\": \"none\""
                                 : "there is no \"tls\" section";
  std::string fix = tls_section_ ? "give a listener \"tls\": \"starttls\" or \"implicit\""
                                 : "add a \"tls\" section";
  bool explicit_setting = root.contains("submission") && root["submission"].is_object() &&
                          root["submission"].contains("require_tls");
  if (explicit_setting) {
    error("/submission/require_tls", "require_tls is true but " + why +
                                         ", so AUTH could never be offered; " + fix +
                                         ", or set \"require_tls\": false");
  } else {
    error(first_auth->pointer,
          "listener " + quote(first_auth->listener.name) +
              " offers AUTH, but submission.require_tls is true (the default) and " + why +
              ", so AUTH could never be offered; " + fix +
              ", or set \"submission\": {\"require_tls\": false}");
  }
}

LoadResult Loader::finish() {
  std::stable_sort(pending_.begin(), pending_.end(),
                   [](const Pending& a, const Pending& b) { return a.order < b.order; });
  LoadResult result;
  for (Pending& e : pending_) result.errors.push_back(std::move(e.error));
  if (result.errors.empty()) {
    policy_->source_path = file_;
    result.policy = std::move(policy_);
  }
  return result;
}

}  // namespace

LoadResult load_policy_text(std::string_view text, const std::string& display_name,
                            const LoadOptions& options) {
  return Loader(text, display_name, options).run();
}

LoadResult load_policy_file(const std::string& path, const LoadOptions& options) {
  auto text = read_whole_file(path);
  if (!text) {
    LoadResult result;
    LoadError e;
    e.file = path;
    e.message = "cannot read: " + text.error();
    result.errors.push_back(std::move(e));
    return result;
  }
  return load_policy_text(*text, path, options);
}

}  // namespace smtpgate
