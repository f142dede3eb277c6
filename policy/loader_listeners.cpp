// The loader's listeners and the TLS section they depend on.
#include <algorithm>
#include <string>
#include <utility>

#include "policy/loader_detail.h"

namespace smtpgate::loader_detail {

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
  read(v, p, "proxy_protocol", l.proxy_protocol, [&](auto& x, auto& q) { return as_bool(x, q); });
  // Listeners with errors still count for the duplicate checks of the ones that follow.
  if (ok || !l.name.empty() || l.port != 0) listeners_.push_back(std::move(parsed));
}

}  // namespace smtpgate::loader_detail
