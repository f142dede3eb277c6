// Loading a policy: the public entry points, the top level of the file, the checks across
// sections and the sorted error report. The sections themselves are in loader_*.cpp.
#include "policy/loader.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "policy/json_locator.h"
#include "policy/loader_detail.h"

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

namespace loader_detail {

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
  read(root, p, "workers", pol.workers, [&](auto& v, auto& q) -> std::optional<uint32_t> {
    if (v.is_string() && v.template get<std::string>() == "auto") return 0;
    if (v.is_string()) {
      error(q, "must be \"auto\" or a number of event loops from 1 to 64, not " + v.dump());
      return std::nullopt;
    }
    auto n = as_uint(v, q, 1, 64);
    if (!n) return std::nullopt;
    return static_cast<uint32_t>(*n);
  });
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
  if (const json* v = object_member(root, p, "shared")) parse_shared(*v, "/shared");

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
  if (pol.trusted_proxies.empty())
    for (const ParsedListener& l : listeners_)
      if (l.listener.proxy_protocol)
        error(child(l.pointer, "proxy_protocol"),
              "listener " + quote(l.listener.name) +
                  " takes the PROXY protocol, but \"trusted_proxies\" is empty: no "
                  "connection could be accepted (list the load balancers' addresses)");
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

}  // namespace loader_detail

LoadResult load_policy_text(std::string_view text, const std::string& display_name,
                            const LoadOptions& options) {
  return loader_detail::Loader(text, display_name, options).run();
}

LoadResult load_policy_file(const std::string& path, const LoadOptions& options) {
  auto text = loader_detail::read_whole_file(path);
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
