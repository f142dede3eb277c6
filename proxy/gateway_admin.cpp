// The admin endpoint's requests (proxy/admin_http.h serves them): health, readiness, metrics,
// reload, bans.
#include <cctype>

#include "policy/domain_set.h"
#include "policy/duration.h"
#include "proxy/backend_probe.h"
#include "proxy/gateway.h"
#include "proxy/shared_sync.h"
#include "proxy/unix_time.h"

namespace smtpgate {
namespace {

// Whole seconds for the admin API (a ban's times share their fraction, so until - since
// stays its duration); what is left of a ban rounds up.
int64_t floor_s(UnixMillis ms) {
  return ms / 1000;
}
int64_t ceil_s(UnixMillis ms) {
  return (ms + 999) / 1000;
}

// Admin answers carry text from files and clients (policy errors, ban reasons): invalid
// UTF-8 is replaced, never thrown inside a libuv callback.
std::string dump_json(const nlohmann::json& j, int indent = -1) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// %XX and '+' in a query value (the reason of `bans add`).
std::string url_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() &&
               std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

AdminResponse Gateway::handle(std::string_view method, std::string_view path,
                              std::string_view query) {
  const std::string json = "application/json";
  if (path == "/healthz") {
    if (method != "GET") return {405, "text/plain", "GET only\n", "GET"};
    if (draining_) return {503, "text/plain", "draining\n"};
    // Still serving (bans hold in memory), but an operator must see it.
    if (journal_failing_)
      return {200, "text/plain",
              "degraded: state file not written: " + journal_->last_error() + "\n"};
    return {200, "text/plain", "ok\n"};
  }
  if (path == "/readyz") {
    if (method != "GET") return {405, "text/plain", "GET only\n", "GET"};
    if (draining_) return {503, "text/plain", "not ready: draining\n"};
    const std::string why = probe_ ? probe_->check(uv_now(&loop_)) : "no probe";
    if (!why.empty()) return {503, "text/plain", "not ready: " + why + "\n"};
    return {200, "text/plain", "ready\n"};
  }
  if (path == "/metrics") {
    if (method != "GET") return {405, "text/plain", "GET only\n", "GET"};
    shared_.with([&](SharedState::Data& d) {
      metrics_.set_bans_active(d.bans.active(unix_now()).size());
      metrics_.set_logins(d.logins.locked(unix_now()), d.logins.suspended_count());
    });
    metrics_.set_log_dropped(log_.dropped_total());
    metrics_.set_state_write_errors(journal_ ? journal_->write_errors() : 0);
    return {200, "text/plain; version=0.0.4", metrics_.render_prometheus()};
  }
  if (path == "/reload") {
    if (method != "POST") return {405, "text/plain", "POST only\n", "POST"};
    std::vector<std::string> not_applied;
    std::string err = reload(&not_applied);
    if (!err.empty()) return {400, json, dump_json({{"result", "rejected"}, {"errors", err}})};
    if (not_applied.empty()) return {200, json, dump_json({{"result", "loaded"}})};
    return {200, json, dump_json({{"result", "partial"}, {"not_applied", not_applied}})};
  }
  if (path == "/bans") {
    if (method != "GET") return {405, "text/plain", "GET only\n", "GET"};
    UnixMillis now = unix_now();
    nlohmann::json list = nlohmann::json::array();
    const auto active = shared_.with([&](SharedState::Data& d) { return d.bans.active(now); });
    for (const auto& e : active)
      list.push_back({{"ip", e.target()},
                      {"since", floor_s(e.since)},
                      {"until", floor_s(e.until)},
                      {"remaining_s", ceil_s(e.until - now)},
                      {"offense", e.offense},
                      {"reason", e.reason}});
    return {200, json, dump_json({{"bans", list}}, 1)};
  }
  if (path == "/logins") {
    if (method != "GET") return {405, "text/plain", "GET only\n", "GET"};
    const auto list = shared_.with([](SharedState::Data& d) { return d.logins.list(unix_now()); });
    return {200, json, dump_json({{"logins", list}}, 1)};
  }
  if (path.starts_with("/logins/")) {
    if (method != "DELETE") return {405, "text/plain", "DELETE only\n", "DELETE"};
    const std::string login = url_decode(path.substr(8));
    if (!shared_.with([&](SharedState::Data& d) { return d.logins.release(login, unix_now()); }))
      return {404, json, "{\"error\": \"not locked or suspended\"}\n"};
    return {200, json, dump_json({{"released", ascii_lower(login)}})};
  }
  if (path.starts_with("/bans/") && method == "POST")
    return add_ban(url_decode(path.substr(6)), query);
  if (path.starts_with("/bans/")) {
    if (method != "DELETE") return {405, "text/plain", "POST or DELETE\n", "POST, DELETE"};
    // An address (an IPv6 one names its banned /ipv6_prefix), or the network as listed.
    const std::string target = url_decode(path.substr(6));
    const auto ip = IpAddress::parse(target);
    std::optional<IpAddress> network;
    if (!ip)
      if (auto net = Cidr::parse(target, true)) network = net->address;
    if (!ip && !network) return {400, json, "{\"error\": \"not an IP address\"}\n"};
    const bool lifted = shared_.with([&](SharedState::Data& d) {
      const IpAddress key = ip ? d.ban_key(*ip) : *network;
      if (!d.bans.unban(key)) return false;
      if (journal_) journal_->record_unban(key);
      if (d.sync) d.sync->unban(key);
      return true;
    });
    if (!lifted) return {404, json, "{\"error\": \"not banned\"}\n"};
    log_.write("ban", {{"ip", target}, {"action", "unban"}, {"reason", "admin"}});
    return {200, json, dump_json({{"unbanned", target}})};
  }
  return {404, "text/plain", "not found\n"};
}

AdminResponse Gateway::add_ban(std::string_view ip_text, std::string_view query) {
  const std::string json = "application/json";
  auto ip = IpAddress::parse(ip_text);
  if (!ip) return {400, json, "{\"error\": \"not an IP address\"}\n"};
  Seconds duration = policy_->brute_force.ban;
  std::string reason = "admin";
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    const auto eq = kv.find('=');
    const std::string_view key = kv.substr(0, eq);
    const std::string value = eq == std::string_view::npos ? "" : url_decode(kv.substr(eq + 1));
    if (key == "for") {
      auto d = parse_duration(value);
      if (!d) return {400, json, dump_json({{"error", "for: " + d.error()}})};
      duration = *d;
    } else if (key == "reason") {
      reason = "admin: " + value;
    }
  }
  // never_ban outranks a ban at connect: a ban here would be a promise the gateway breaks.
  if (policy_->brute_force.never_ban.lookup(*ip))
    return {409, json, dump_json({{"error", ip->to_string() + " is in brute_force.never_ban"}})};
  if (policy_->trusted_proxies.lookup(*ip))
    return {409, json, dump_json({{"error", ip->to_string() + " is in trusted_proxies"}})};
  const UnixMillis now = unix_now();
  const BanEntry e = shared_.with([&](SharedState::Data& d) {
    BanEntry b =
        d.bans.ban_for(d.ban_key(*ip), now, static_cast<UnixMillis>(duration.count()) * 1000,
                       reason, d.ban_prefix(*ip));
    if (journal_) journal_->record_ban(b);  // in order with the other records of this address
    if (d.sync) d.sync->ban(b);
    return b;
  });
  metrics_.ban_issued();
  log_.write("ban", {{"ip", e.target()},
                     {"action", "ban"},
                     {"enforced", true},
                     {"until", iso_time(e.until)},
                     {"duration_s", (e.until - e.since) / 1000},
                     {"offense", e.offense},
                     {"reason", reason}});
  return {200, json,
          dump_json({{"banned", ip->to_string()},
                     {"until", iso_time(e.until)},
                     {"duration_s", (e.until - e.since) / 1000}})};
}

}  // namespace smtpgate
