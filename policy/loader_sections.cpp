// The loader's remaining sections: mx, submission (and its senders), brute_force,
// connections, timeouts, message, backend, log, admin, shared; and the check of files the gateway
// writes (state file, log file).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "policy/loader_detail.h"

namespace smtpgate::loader_detail {

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
  if (const json* b = object_member(v, p, "breaker")) {
    const std::string q = child(p, "breaker");
    check_keys(*b, q, "submission.breaker");
    BreakerPolicy breaker;
    auto at_least_one = [&](auto& x, auto& r) { return as_u32(x, r, 1); };
    read(*b, q, "max_ips_per_hour", breaker.max_ips_per_hour, at_least_one);
    read(*b, q, "max_rcpt_domains_per_hour", breaker.max_rcpt_domains_per_hour, at_least_one);
    read(*b, q, "max_rejected_rcpts_per_hour", breaker.max_rejected_rcpts_per_hour, at_least_one);
    if (b->empty())
      error(q,
            "sets no threshold (max_ips_per_hour, max_rcpt_domains_per_hour, "
            "max_rejected_rcpts_per_hour); leave \"breaker\" out to turn it off");
    sub.breaker = breaker;
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

void Loader::parse_shared(const json& v, const std::string& p) {
  SharedSettings shared;
  if (v.contains("password")) {
    // The obvious key, refused with the way to do it instead of a bare "unknown key".
    key_error(child(p, "password"),
              "unknown key \"password\": the password is never written in the policy; put it "
              "on the first line of a file only smtpgate can read and name that file in "
              "\"password_file\"");
    json rest = v;
    rest.erase("password");
    check_keys(rest, p, "shared");
  } else {
    check_keys(v, p, "shared");
  }
  if (require(v, p, "redis")) {
    const std::string q = child(p, "redis");
    if (auto s = as_string(v["redis"], q)) {
      shared.redis = *s;
      if (s->starts_with("unix:")) {
        std::string path = s->substr(5);
        if (path.empty() || path.front() != '/') {
          error(q, quote(*s) + ": the socket path must be absolute, as in " +
                       quote("unix:/run/redis/redis.sock"));
        } else if (path.size() > 107) {
          // sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
          error(q, quote(*s) + ": a unix socket path has at most 107 bytes");
        } else {
          shared.unix_path = std::move(path);
        }
      } else if (s->starts_with("/")) {
        error(q,
              quote(*s) + " is not \"IP:port\"; a unix socket is written " + quote("unix:" + *s));
      } else {
        // No DNS at load, as for every other address: an IP literal and a port.
        auto e = parse_endpoint(*s, /*allow_port_zero=*/false);
        if (!e) {
          std::string why = e.error();
          if (why.find("(expected") == std::string::npos)
            why += " (expected \"IP:port\" or \"unix:/path\")";
          error(q, why);
        } else {
          shared.host = e->host;
          shared.port = e->port;
        }
      }
    }
  }
  // The password stays out of the policy: only the file's name is here.
  read(v, p, "password_file", shared.password_file,
       [&](auto& x, auto& q) { return as_readable_file(x, q); });
  read(v, p, "prefix", shared.prefix, [&](auto& x, auto& q) -> std::optional<std::string> {
    auto s = as_string(x, q);
    if (!s) return std::nullopt;
    // Printable ASCII without spaces: the prefix is shown in logs and typed into redis-cli.
    bool printable = std::all_of(s->begin(), s->end(), [](char c) { return c > ' ' && c < 127; });
    if (s->size() > 64 || !printable) {
      error(q, quote(*s) + " is not a valid prefix (1-64 printable ASCII characters, no spaces)");
      return std::nullopt;
    }
    return s;
  });
  read(v, p, "instance", shared.instance, [&](auto& x, auto& q) -> std::optional<std::string> {
    auto s = as_string(x, q);
    if (!s) return std::nullopt;
    if (!is_simple_name(*s)) {
      error(q, quote(*s) +
                   " is not a valid instance name (letters, digits, '.', '_' and '-', at most 64)");
      return std::nullopt;
    }
    return s;
  });
  policy_->shared = std::move(shared);
}

}  // namespace smtpgate::loader_detail
