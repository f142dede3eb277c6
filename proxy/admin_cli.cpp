#include "proxy/admin_cli.h"

#include <cctype>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "policy/duration.h"
#include "proxy/admin_client.h"
#include "proxy/log.h"

namespace smtpgate {
namespace {

std::string url_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

bool failed(const AdminReply& r) {
  if (!r.error.empty()) {
    std::cerr << r.error << "\n";
    return true;
  }
  if (r.status < 200 || r.status >= 300) {
    std::cerr << "admin endpoint answered " << (r.status ? std::to_string(r.status) : "nothing")
              << ": " << r.body << "\n";
    return true;
  }
  return false;
}

}  // namespace

int bans_list(const std::string& admin, bool json) {
  const AdminReply r = admin_call(admin, "GET", "/bans");
  if (failed(r)) return 1;
  if (json) {
    std::cout << r.body;
    return 0;
  }
  nlohmann::json doc = nlohmann::json::parse(r.body, nullptr, false);
  if (doc.is_discarded() || !doc.contains("bans") || !doc["bans"].is_array()) {
    std::cerr << "admin endpoint: unexpected answer: " << r.body << "\n";
    return 1;
  }
  const auto& bans = doc["bans"];
  if (bans.empty()) {
    std::cout << "no active bans\n";
    return 0;
  }
  std::printf("%-39s  %-24s  %-10s  %-7s  %s\n", "IP", "UNTIL (UTC)", "LEFT", "OFFENSE", "REASON");
  for (const auto& b : bans) {
    const std::string ip = b.value("ip", "");
    const int64_t until = b.value("until", int64_t{0});
    const int64_t left = b.value("remaining_s", int64_t{0});
    const std::string reason = b.value("reason", "");
    std::printf("%-39s  %-24s  %-10s  %-7lld  %s\n", ip.c_str(), iso_time(until * 1000).c_str(),
                format_duration(Seconds(left)).c_str(),
                static_cast<long long>(b.value("offense", 0)), reason.c_str());
  }
  return 0;
}

int bans_add(const std::string& admin, const std::string& ip, const std::string& duration,
             const std::string& reason) {
  if (!duration.empty()) {
    if (auto d = parse_duration(duration); !d) {
      std::cerr << "--for: " << d.error() << "\n";
      return 1;
    }
  }
  std::string path = "/bans/" + url_encode(ip);
  std::string query;
  if (!duration.empty()) query += "for=" + url_encode(duration);
  if (!reason.empty())
    query += (query.empty() ? "" : "&") + std::string("reason=") + url_encode(reason);
  if (!query.empty()) path += "?" + query;
  const AdminReply r = admin_call(admin, "POST", path);
  if (failed(r)) return 1;
  nlohmann::json doc = nlohmann::json::parse(r.body, nullptr, false);
  if (doc.is_discarded()) {
    std::cout << r.body;
    return 0;
  }
  std::cout << "banned " << doc.value("banned", ip) << " until " << doc.value("until", "?") << " ("
            << format_duration(Seconds(doc.value("duration_s", int64_t{0}))) << ")\n";
  return 0;
}

}  // namespace smtpgate

namespace smtpgate {

int logins_list(const std::string& admin, bool json) {
  const AdminReply r = admin_call(admin, "GET", "/logins");
  if (failed(r)) return 1;
  if (json) {
    std::cout << r.body;
    return 0;
  }
  nlohmann::json doc = nlohmann::json::parse(r.body, nullptr, false);
  if (doc.is_discarded() || !doc.contains("logins") || !doc["logins"].is_array()) {
    std::cerr << "admin endpoint: unexpected answer: " << r.body << "\n";
    return 1;
  }
  if (doc["logins"].empty()) {
    std::cout << "no locked or suspended logins\n";
    return 0;
  }
  auto text = [](const nlohmann::json& l, const char* key) {
    auto it = l.find(key);
    return it != l.end() && it->is_string() ? it->get<std::string>() : std::string("-");
  };
  auto number = [](const nlohmann::json& l, const char* key) {
    auto it = l.find(key);
    return it != l.end() && it->is_number_unsigned() ? it->get<uint64_t>() : uint64_t{0};
  };
  std::printf("%-40s  %-9s  %-24s  %-24s  %s\n", "LOGIN", "STATE", "SINCE (UTC)", "UNTIL (UTC)",
              "WHY");
  for (const auto& l : doc["logins"]) {
    // A lock names its failure count; a suspension the breaker count against its threshold.
    const std::string why =
        l.contains("failures")
            ? std::to_string(number(l, "failures")) + " failures (" + text(l, "trigger") + ")"
            : std::to_string(number(l, "value")) + " > " + std::to_string(number(l, "threshold")) +
                  " (" + text(l, "trigger") + ")";
    const std::string until =
        l.value("state", "") == "suspended" ? "until released" : text(l, "until");
    std::printf("%-40s  %-9s  %-24s  %-24s  %s\n", text(l, "login").c_str(),
                text(l, "state").c_str(), text(l, "since").c_str(), until.c_str(), why.c_str());
  }
  return 0;
}

int logins_release(const std::string& admin, const std::string& login) {
  const AdminReply r = admin_call(admin, "DELETE", "/logins/" + url_encode(login));
  if (failed(r)) return 1;
  std::cout << "released " << login << "\n";
  return 0;
}

}  // namespace smtpgate
