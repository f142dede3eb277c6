// Shared by the learn and replay tests: a temporary directory, log lines as the gateway
// writes them (proxy/session_services.cpp), and policies written inline.
#pragma once

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/loader.h"

namespace tools_test {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/smtpgate-tools-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const char* name) const { return (path / name).string(); }
  std::string write(const char* name, const std::string& text) const {
    std::ofstream out(file(name), std::ios::binary);
    out << text;
    return file(name);
  }
  // `name` gzipped by gzip(1) into `name` + ".gz" (the original is removed).
  std::string gzip(const char* name) const {
    REQUIRE(std::system(("gzip -n -f " + file(name)).c_str()) == 0);
    return file(name) + ".gz";
  }
};

// A `transaction` line; the defaults are a delivered mx message.
struct Tx {
  std::string ts = "2026-12-01T10:00:00.000Z", session = "s1", client = "192.0.2.7:40000",
              listener = "mx", cls = "mx", outcome = "delivered", stage = "data", rule,
              reply = "250 2.0.0 Ok", from = "sender@elsewhere.test";
  std::vector<std::string> recipients = {"user@example.com"}, accepted = {"user@example.com"};
  std::string helo = "client.example";
  bool tls = false;
  std::string auth = "none", login;

  std::string line() const {
    nlohmann::ordered_json j = {
        {"ts", ts},           {"event", "transaction"}, {"session", session},
        {"client", client},   {"listener", listener},   {"class", cls},
        {"outcome", outcome}, {"stage", stage}};
    if (!rule.empty()) j["rule"] = rule;
    j["reply"] = reply;
    j["from"] = from;
    j["recipients"] = recipients;
    j["accepted"] = accepted;
    j["size"] = outcome == "delivered" ? 120 : 0;
    j["helo"] = helo;
    j["tls"] = tls;
    j["auth"] = auth;
    if (!login.empty()) j["login"] = login;
    return j.dump() + "\n";
  }
};

// A submission transaction of `login` from `client`, sending as `from`.
inline Tx submission(std::string login, std::string from,
                     std::string client = "203.0.113.10:5000") {
  Tx t;
  t.listener = "sub";
  t.cls = "submission";
  t.client = std::move(client);
  t.login = std::move(login);
  t.auth = "ok";
  t.tls = true;
  t.from = std::move(from);
  t.recipients = t.accepted = {"customer@gmail.example"};
  return t;
}

// An enforced refusal of a recipient, as the session logs it before its transaction line.
inline std::string rcpt_refused(const std::string& session, const std::string& client,
                                const std::string& rule, const std::string& rcpt) {
  nlohmann::ordered_json j = {{"ts", "2026-12-01T10:00:00.000Z"},
                              {"event", "decision"},
                              {"session", session},
                              {"client", client},
                              {"listener", "mx"},
                              {"class", "mx"},
                              {"stage", "rcpt"},
                              {"rule", rule},
                              {"verdict", "reject"},
                              {"enforced", true},
                              {"reason", "test"},
                              {"reply", "554 5.7.1 Relay access denied"},
                              {"rcpt", rcpt}};
  return j.dump() + "\n";
}

// mx, a STARTTLS submission listener and an auto one; `extra` adds top-level members.
// `lists`: the members of "lists"; `domains`: the local domains.
inline std::shared_ptr<smtpgate::Policy> policy(
    const std::string& extra = "", const std::string& lists = R"("cms": ["203.0.113.10"])",
    const std::string& domains = R"("example.com", "example.net")") {
  std::string text = R"({
    "version": 1, "hostname": "mx.example.com",
    "local_domains": [)" +
                     domains + R"(],
    "lists": { )" + lists +
                     R"( },
    "listeners": [
      { "name": "mx", "listen": "127.0.0.1:25", "class": "mx" },
      { "name": "sub", "listen": "127.0.0.1:587", "class": "submission" },
      { "name": "legacy", "listen": "127.0.0.1:2525", "class": "auto" }
    ],
    "tls": { "cert": "/nonexistent/cert.pem", "key": "/nonexistent/key.pem" },
    "backend": { "address": "127.0.0.1:10025" })" +
                     extra + "}";
  smtpgate::LoadOptions o;
  o.check_files = false;
  auto r = smtpgate::load_policy_text(text, "test.json", o);
  for (const auto& e : r.errors) UNSCOPED_INFO(e.to_string());
  REQUIRE(r.ok());
  return r.policy;
}

}  // namespace tools_test
