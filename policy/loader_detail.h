// The policy loader's internals (JSON -> Policy), shared by its .cpp files: loader.cpp (entry
// points, top level, cross-section checks), loader_values.cpp (free helpers: text, names,
// endpoints, file reading), loader_lists.cpp, loader_listeners.cpp and loader_sections.cpp
// (the sections). Not a public interface: use policy/loader.h.
#pragma once

#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "policy/ip_address.h"
#include "policy/json_locator.h"
#include "policy/loader.h"
#include "policy/policy.h"
#include "policy/result.h"

namespace smtpgate::loader_detail {

using json = nlohmann::json;

inline constexpr uint64_t kU32Max = UINT32_MAX;

// Free helpers (loader_values.cpp) -------------------------------------------------------

// A string in JSON syntax, for messages (invalid UTF-8 shown as U+FFFD, never thrown).
std::string quote(std::string_view s);

// The keys each object may hold. Also used to tell a user where a misplaced key belongs.
struct Section {
  std::string_view name;  // as shown to the user; "" = the top level
  std::vector<std::string_view> keys;
};
const std::vector<Section>& schema();
const Section& section(std::string_view name);
std::string section_display(std::string_view name);  // as in "it belongs in …"

// Typo suggestions.
size_t edit_distance(std::string_view a, std::string_view b);
std::optional<std::string_view> closest(std::string_view word,
                                        const std::vector<std::string_view>& candidates);

// JSON pointers and how values read in messages.
std::string child(const std::string& pointer, std::string_view key);
std::string child(const std::string& pointer, size_t index);
std::string type_name(const json& v);
std::string join_choices(const std::vector<std::string_view>& choices);

// Names.
bool is_domain(std::string_view name);
bool is_simple_name(std::string_view name);

// Files.
std::string unreadable_reason(const std::string& path);  // "" when readable
Result<std::string> read_whole_file(const std::string& path);

// Listen and backend addresses: IP literals with a port.
struct Endpoint {
  std::string host;  // without brackets, as written
  IpAddress ip;
  uint16_t port = 0;
};
Result<Endpoint> parse_endpoint(std::string_view text, bool allow_port_zero);
bool is_wildcard(const IpAddress& ip);
bool binds_overlap(const IpAddress& a, const IpAddress& b);

// The loader ----------------------------------------------------------------------------
// One per load. Its members are defined by role: loader.cpp (run, the top level, the checks
// across sections, finish), loader_lists.cpp (local_domains, lists, access entries),
// loader_listeners.cpp (tls, listeners) and loader_sections.cpp (the other sections).
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
  void parse_shared(const json& v, const std::string& p);
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

}  // namespace smtpgate::loader_detail
