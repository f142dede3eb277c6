// The policy loader: every class of validation error, positions, defaults, and the examples.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/json_locator.h"
#include "policy/loader.h"
#include "policy/restart_needed.h"

using namespace smtpgate;

namespace {

// The smallest valid policy; tests splice extra top-level members in before the last "}".
const std::string kMinimal = R"({
  "version": 1,
  "hostname": "mail.example.com",
  "listeners": [ { "name": "mx", "listen": "127.0.0.1:2525", "class": "mx" } ],
  "backend": { "address": "127.0.0.1:10025" }
})";

std::string with(const std::string& members) {
  std::string text = kMinimal;
  text.insert(text.rfind("\n}"), ",\n" + members);
  return text;
}

// No file is touched: neither checked nor read.
LoadOptions no_files() {
  LoadOptions o;
  o.check_files = false;
  o.read_list_files = false;
  return o;
}

LoadResult load(const std::string& text, const LoadOptions& options = no_files()) {
  return load_policy_text(text, "policy.json", options);
}

std::vector<std::string> errors_of(const LoadResult& r) {
  std::vector<std::string> out;
  for (const LoadError& e : r.errors) out.push_back(e.to_string());
  return out;
}

std::string all_errors(const LoadResult& r) {
  std::string out;
  for (const auto& e : errors_of(r)) out += e + "\n";
  return out;
}

// The single error of a policy that must have exactly one.
LoadError only_error(const std::string& text, const LoadOptions& options = no_files()) {
  auto r = load(text, options);
  INFO(all_errors(r));
  REQUIRE(r.errors.size() == 1);
  REQUIRE_FALSE(r.ok());
  return r.errors[0];
}

std::string read_text(const std::string& path) {
  std::string text;
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
  }
  return text;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A scratch directory removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/smtpgate-loader-XXXXXX";
    const char* d = mkdtemp(tmpl);
    REQUIRE(d != nullptr);
    path_ = d;
  }
  ~TempDir() {
    for (const auto& f : files_) ::unlink(f.c_str());
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) ::rmdir(it->c_str());
    ::rmdir(path_.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string write(const std::string& name, const std::string& content) {
    std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << content;
    files_.push_back(p);
    return p;
  }
  std::string mkdir(const std::string& name) {
    std::string p = path_ + "/" + name;
    REQUIRE(::mkdir(p.c_str(), 0755) == 0);
    dirs_.push_back(p);
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::string> files_;
  std::vector<std::string> dirs_;
};

}  // namespace

// ----------------------------------------------------------------------------------------
// JsonLocator

TEST_CASE("locator: positions of values and keys", "[loader][locator]") {
  const std::string text =
      "{\n"
      "  \"a\": 1,\n"
      "  \"b\": [ \"x\", {\"c\": true} ],\n"
      "  \"s/t~u\": null\n"
      "}";
  JsonLocator loc(text);
  CHECK(loc.value("")->line == 1);
  CHECK(loc.value("")->column == 1);
  CHECK(loc.value("/a")->line == 2);
  CHECK(loc.value("/a")->column == 8);
  CHECK(loc.key("/a")->column == 3);
  CHECK(loc.value("/b/0")->column == 10);
  CHECK_FALSE(loc.key("/b/0").has_value());
  CHECK(loc.value("/b/1")->column == 15);
  CHECK(loc.value("/b/1/c")->column == 21);
  CHECK(loc.value("/s~1t~0u")->line == 4);
  CHECK_FALSE(loc.value("/nope").has_value());
  CHECK(loc.duplicate_keys().empty());
}

TEST_CASE("locator: strings with escapes and comments do not confuse it", "[loader][locator]") {
  const std::string text =
      "// leading comment with { and \"\n"
      "{ /* block \"comment\" ] */ \"k\\\"ey\": \"va//l /* not a comment */ \\\\\",\n"
      "  // \"fake\": 1,\n"
      "  \"n\": /* inline */ 2 }";
  JsonLocator loc(text);
  REQUIRE(loc.value("").has_value());
  CHECK(loc.value("")->line == 2);
  CHECK(loc.value("")->column == 1);
  CHECK(loc.key("/k\"ey")->column == 27);
  CHECK(loc.value("/n")->line == 4);
  CHECK(loc.value("/n")->column == 21);
  CHECK_FALSE(loc.value("/fake").has_value());
  // A line comment also ends at a bare CR, as in nlohmann.
  JsonLocator cr("{ // c\r\"a\": 1 }");
  CHECK(cr.value("/a").has_value());
}

TEST_CASE("locator: columns count characters, not bytes", "[loader][locator]") {
  // "é" is two bytes in UTF-8; an escaped key decodes to the same name.
  const std::string text = "\xEF\xBB\xBF{\"\xC3\xA9\": 1, \"\\u00e9x\": 2}";
  JsonLocator loc(text);
  CHECK(loc.value("")->column == 1);  // the byte order mark takes no column
  CHECK(loc.value("/\xC3\xA9")->column == 7);
  CHECK(loc.key("/\xC3\xA9x")->column == 10);
  CHECK(position_at(text, text.size()).column == 23);
}

TEST_CASE("locator: reports duplicate keys, escaped spellings included", "[loader][locator]") {
  const std::string text = "{\"a\": {\"x\": 1,\n \"x\": 2, \"\\u0078\": 3}}";
  JsonLocator loc(text);
  REQUIRE(loc.duplicate_keys().size() == 2);
  const auto& d = loc.duplicate_keys()[0];
  CHECK(d.pointer == "/a/x");
  CHECK(d.position.line == 2);
  CHECK(d.position.column == 2);
  CHECK(d.first.line == 1);
  CHECK(d.first.column == 8);
}

TEST_CASE("locator: survives malformed and deeply nested input", "[loader][locator]") {
  for (const char* bad : {"", "{", "{\"a\"", "{\"a\": [1, 2", "/* open", "{\"a\": \"\\u12", "[}",
                          "{\"a\" 1}", "\"\\"}) {
    JsonLocator loc(bad);
    (void)loc.value("");
  }
  JsonLocator deep(std::string(100000, '['));
  CHECK(deep.value("").has_value());
}

TEST_CASE("locator: JSON pointer escaping", "[loader][locator]") {
  CHECK(json_pointer_escape("a/b~c") == "a~1b~0c");
  CHECK(json_pointer_escape("cms@example.com") == "cms@example.com");
}

// ----------------------------------------------------------------------------------------
// Error format and positions

TEST_CASE("loader: error text format", "[loader]") {
  LoadError e{"policy.json", 14, 9, "/submission/access/allow/2",
              "\"203.0.113.300\" is not an IP address or CIDR"};
  CHECK(e.to_string() ==
        "policy.json:14:9: /submission/access/allow/2: \"203.0.113.300\" is not an IP address or "
        "CIDR");
  CHECK(LoadError{"p.json", 3, 0, "/x", "m"}.to_string() == "p.json:3: /x: m");
  CHECK(LoadError{"p.json", 0, 0, "", "m"}.to_string() == "p.json: m");
}

TEST_CASE("loader: exact line and column for a known input", "[loader]") {
  const std::string text = R"({
  "version": 1,
  "hostname": "mail.example.com",
  "listeners": [
    { "name": "mx", "listen": "0.0.0.0:25", "class": "mx" }
  ],
  "backend": { "address": "127.0.0.1:10025" },
  "submission": {
    "require_tls": false,
    "access": {
      "allow": [
        "203.0.113.10",
        "2001:db8::/32",
        "203.0.113.300"
      ]
    }
  }
})";
  auto e = only_error(text);
  CHECK(e.to_string() ==
        "policy.json:14:9: /submission/access/allow/2: \"203.0.113.300\" is not an IP address or "
        "CIDR");
  CHECK(e.file == "policy.json");
  CHECK(e.line == 14);
  CHECK(e.column == 9);
  CHECK(e.pointer == "/submission/access/allow/2");
}

TEST_CASE("loader: syntax errors carry line and column", "[loader]") {
  SECTION("missing comma") {
    auto e = only_error("{\n  \"version\": 1\n  \"hostname\": \"x\"\n}");
    CHECK(e.line == 3);
    CHECK(e.column == 3);
    CHECK(e.pointer.empty());
    CHECK(contains(e.to_string(), "policy.json:3:3: syntax error"));
    CHECK_FALSE(contains(e.message, "json.exception"));
  }
  SECTION("bad literal after multi-byte characters") {
    auto e = only_error("{\"h\xC3\xA9\": tru }");
    CHECK(e.line == 1);
    CHECK(e.column == 8);  // the start of "tru", in characters, not bytes
  }
  SECTION("unexpected end") {
    auto e = only_error("{\n  \"version\": 1,\n");
    CHECK(e.line == 3);
    CHECK(e.column == 1);
  }
  SECTION("unterminated comment") {
    auto e = only_error("{ /* oops \n }");
    CHECK(e.line >= 1);
    CHECK(contains(e.message, "comment"));
  }
  SECTION("empty file") {
    auto e = only_error("");
    CHECK(e.to_string().starts_with("policy.json:1:1: "));
  }
}

TEST_CASE("loader: comments are accepted", "[loader]") {
  const std::string text = R"(// smtpgate policy
{
  /* block comment */
  "version": 1,            // trailing comment
  "hostname": "mail.example.com",
  "listeners": [ { "name": "mx", "listen": "127.0.0.1:2525", "class": "mx" } ],
  "backend": { "address": "127.0.0.1:10025" /* loopback */ },
  "log": { "path": "/var/log/smtpgate//x.log" }   // "//" in a string is not a comment
})";
  auto r = load(text);
  INFO(all_errors(r));
  REQUIRE(r.ok());
  CHECK(r.policy->log.path == "/var/log/smtpgate//x.log");
}

TEST_CASE("loader: all errors of a file are reported, in file order", "[loader]") {
  const std::string text = R"({
  "version": 2,
  "hostname": 5,
  "mode": "dryrun",
  "listeners": [ { "name": "mx", "listen": "127.0.0.1:2525", "class": "smtp" } ],
  "backend": { "address": "localhost:10025" },
  "timeouts": { "command": "5x" }
})";
  auto r = load(text);
  auto errs = errors_of(r);
  INFO(all_errors(r));
  REQUIRE(errs.size() == 6);
  CHECK(errs[0] ==
        "policy.json:2:14: /version: unsupported version 2 (this smtpgate reads version 1)");
  CHECK(errs[1] == "policy.json:3:15: /hostname: must be a string, not an integer");
  CHECK(errs[2] ==
        "policy.json:4:11: /mode: \"dryrun\" is not one of \"enforce\" or \"dry-run\" (did you "
        "mean \"dry-run\"?)");
  CHECK(errs[3] ==
        "policy.json:5:71: /listeners/0/class: \"smtp\" is not one of \"mx\", \"submission\" or "
        "\"auto\"");
  CHECK(contains(errs[4],
                 "policy.json:6:27: /backend/address: \"localhost:10025\": the host "
                 "must be an IP address"));
  CHECK(contains(errs[5], "policy.json:7:28: /timeouts/command: \"5x\" is not a duration"));
  CHECK(r.policy == nullptr);
}

// ----------------------------------------------------------------------------------------
// Error classes

TEST_CASE("loader: unknown keys, with a suggestion", "[loader]") {
  SECTION("typo") {
    auto e = only_error(with(R"(  "submission": { "requre_tls": false })"));
    CHECK(e.pointer == "/submission/requre_tls");
    CHECK(e.message == "unknown key \"requre_tls\" (did you mean \"require_tls\"?)");
    CHECK(e.line == 6);
    CHECK(e.column == 19);  // the key itself
  }
  SECTION("wrong case") {
    auto e = only_error(with(R"(  "Hostname": "x")"));
    CHECK(e.message == "unknown key \"Hostname\" (did you mean \"hostname\"?)");
  }
  SECTION("misplaced key") {
    auto e = only_error(with(R"(  "max_failures": 3)"));
    CHECK(e.message ==
          "unknown key \"max_failures\" (it belongs in \"brute_force\" or "
          "\"brute_force.per_login\")");
  }
  SECTION("nothing close") {
    auto e = only_error(with(R"(  "frobnicate": true)"));
    CHECK(e.message == "unknown key \"frobnicate\"");
  }
  SECTION("in a listener") {
    auto r = load(R"({"version": 1, "hostname": "h.example",
      "listeners": [ { "name": "mx", "listen": "127.0.0.1:25", "class": "mx", "clas": "x" } ],
      "backend": { "address": "127.0.0.1:10025" } })");
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].pointer == "/listeners/0/clas");
    CHECK(contains(r.errors[0].message, "(did you mean \"class\"?)"));
  }
}

TEST_CASE("loader: wrong types", "[loader]") {
  CHECK(only_error(with(R"("mx": [])")).message == "must be an object, not an array");
  CHECK(only_error(with(R"("mx": {"reject_local_sender": "yes"})")).message ==
        "must be true or false, not a string");
  CHECK(only_error(with(R"("local_domains": "example.com")")).message ==
        "must be an array of domains, not a string");
  CHECK(only_error(with(R"("mx": {"max_recipients": 2.5})")).message ==
        "must be an integer, not 2.5");
  CHECK(only_error(with(R"("mx": {"auth": null})")).message ==
        "must be one of \"refuse\" or \"ban\", not null");
  CHECK(only_error("[1, 2]").message == "the policy must be a JSON object, not an array");
  auto e = only_error(with(R"("mx": {"access": {"deny": "10.0.0.0/8"}})"));
  CHECK(e.pointer == "/mx/access/deny");
  CHECK(contains(e.message, "must be an array"));
}

TEST_CASE("loader: bad addresses and CIDR prefixes", "[loader]") {
  auto e = only_error(with(R"("trusted_proxies": ["10.0.0.0/33"])"));
  CHECK(e.pointer == "/trusted_proxies/0");
  CHECK(e.message == "\"10.0.0.0/33\": prefix /33 is out of range for IPv4");
  e = only_error(with(R"("trusted_proxies": ["2001:db8::/129"])"));
  CHECK(e.message == "\"2001:db8::/129\": prefix /129 is out of range for IPv6");
  e = only_error(with(R"("mx": {"access": {"deny": ["10.0.0.0/8", "bogus"]}})"));
  CHECK(e.pointer == "/mx/access/deny/1");
  CHECK(e.message == "\"bogus\" is not an IP address or CIDR");
  e = only_error(with(R"("lists": {"x": ["192.0.2.256"]})"));
  CHECK(e.pointer == "/lists/x/0");
}

TEST_CASE("loader: host bits set are an error everywhere an address list is read", "[loader]") {
  const std::string why =
      "\"127.0.0.10/24\" has host bits set; did you mean \"127.0.0.0/24\" or \"127.0.0.10/32\"?";
  auto e = only_error(with(R"("mx": {"access": {"deny": ["127.0.0.10/24"]}})"));
  CHECK(e.pointer == "/mx/access/deny/0");
  CHECK(e.message == why);
  // never_ban: the whole /24 would never be banned.
  e = only_error(with(R"("brute_force": {"never_ban": ["127.0.0.10/24"]})"));
  CHECK(e.pointer == "/brute_force/never_ban/0");
  CHECK(e.message == why);
  e = only_error(with(R"("lists": {"x": ["127.0.0.10/24"]})"));
  CHECK(e.pointer == "/lists/x/0");
  CHECK(load(with(R"("lists": {"x": ["127.0.0.0/24", "127.0.0.10"]})")).ok());
}

TEST_CASE("loader: listen and backend addresses", "[loader]") {
  auto listen = [](const std::string& addr) {
    return load(R"({"version": 1, "hostname": "h.example", "listeners": [
      { "name": "l", "listen": ")" +
                addr + R"(", "class": "mx" } ], "backend": { "address": "127.0.0.1:10025" } })");
  };
  CHECK(listen("0.0.0.0:25").ok());
  CHECK(listen("[::]:25").ok());
  CHECK(listen("[2001:db8::1]:2525").ok());
  CHECK(listen("127.0.0.1:0").ok());  // an ephemeral port, for tests
  CHECK(contains(all_errors(listen("::1:25")), "needs brackets, as in \"[::1]:25\""));
  CHECK(contains(all_errors(listen("127.0.0.1")), "has no port"));
  CHECK(contains(all_errors(listen("127.0.0.1:65536")), "port must be 0-65535"));
  CHECK(contains(all_errors(listen("127.0.0.1:x")), "\"x\" is not a port number"));
  CHECK(contains(all_errors(listen("mail.example.com:25")), "must be an IP address, not a name"));
  CHECK(contains(all_errors(listen("1.2.3.4.5:25")), "\"1.2.3.4.5\" is not an IP address"));
  CHECK(contains(all_errors(listen("[1.2.3.4]:25")), "brackets are only for IPv6"));

  auto r = load(R"({"version": 1, "hostname": "h.example",
    "listeners": [ { "name": "l", "listen": "[::1]:25", "class": "mx" } ],
    "backend": { "address": "[::1]:10025" } })");
  REQUIRE(r.ok());
  CHECK(r.policy->listeners[0].host == "::1");
  CHECK(r.policy->listeners[0].port == 25);
  CHECK(r.policy->backend.host == "::1");
  CHECK(r.policy->backend.port == 10025);

  auto e = only_error(R"({"version": 1, "hostname": "h.example",
    "listeners": [ { "name": "l", "listen": "[::1]:25", "class": "mx" } ],
    "backend": { "address": "127.0.0.1:0" } })");
  CHECK(e.pointer == "/backend/address");
  CHECK(contains(e.message, "port must be 1-65535"));
}

TEST_CASE("loader: durations", "[loader]") {
  SECTION("strings and integers") {
    auto r = load(with(R"("timeouts": { "command": 120, "data": "1h30m", "drain": 0 },
      "brute_force": { "window": 60, "ban": "2h", "max_ban": "1d" })"));
    INFO(all_errors(r));
    REQUIRE(r.ok());
    CHECK(r.policy->timeouts.command == Seconds(120));
    CHECK(r.policy->timeouts.data == Seconds(5400));
    CHECK(r.policy->timeouts.drain == Seconds(0));
    CHECK(r.policy->brute_force.window == Seconds(60));
    CHECK(r.policy->brute_force.ban == Seconds(7200));
    CHECK(r.policy->brute_force.max_ban == Seconds(86400));
  }
  SECTION("bad string") {
    auto e = only_error(with(R"("timeouts": { "data": "10x" })"));
    CHECK(e.pointer == "/timeouts/data");
    CHECK(contains(e.message, "\"10x\" is not a duration"));
  }
  SECTION("zero where a pause is needed") {
    CHECK(contains(only_error(with(R"("timeouts": { "command": "0s" })")).message,
                   "longer than zero"));
    CHECK(contains(only_error(with(R"("timeouts": { "command": 0 })")).message,
                   "must be an integer from 1 to 4294967295, not 0"));
  }
  SECTION("negative and huge integers") {
    CHECK(only_error(with(R"("timeouts": { "data": -5 })")).message ==
          "must be an integer from 1 to 4294967295, not -5");
    CHECK(contains(only_error(with(R"("timeouts": { "data": 4294967296 })")).message,
                   "not 4294967296"));
  }
  SECTION("wrong type") {
    CHECK(contains(only_error(with(R"("timeouts": { "data": true })")).message,
                   "must be a duration"));
  }
  SECTION("max_ban shorter than ban") {
    auto e = only_error(with(R"("brute_force": { "ban": "2d", "max_ban": "1d" })"));
    CHECK(e.pointer == "/brute_force/max_ban");
    CHECK(e.message == "max_ban (1d) is shorter than ban (2d)");
    e = only_error(with(R"("brute_force": { "ban": "60d" })"));
    CHECK(e.pointer == "/brute_force/ban");
  }
}

TEST_CASE("loader: rates", "[loader]") {
  auto r = load(with(R"("connections": { "rate_per_ip": "60/m" })"));
  REQUIRE(r.ok());
  REQUIRE(r.policy->connections.rate_per_ip.has_value());
  CHECK(r.policy->connections.rate_per_ip->count == 60);
  CHECK(r.policy->connections.rate_per_ip->per == Seconds(60));
  auto e = only_error(with(R"("connections": { "rate_per_ip": "60/d" })"));
  CHECK(e.pointer == "/connections/rate_per_ip");
  CHECK(contains(e.message, "\"60/d\" is not a rate"));
  CHECK(contains(only_error(with(R"("connections": { "rate_per_ip": 60 })")).message,
                 "must be a rate"));
}

TEST_CASE("loader: integer ranges", "[loader]") {
  CHECK(only_error(with(R"("mx": { "max_recipients": -1 })")).message ==
        "must be an integer from 1 to 4294967295, not -1");
  CHECK(only_error(with(R"("mx": { "max_recipients": 4294967296 })")).message ==
        "must be an integer from 1 to 4294967295, not 4294967296");
  CHECK(only_error(with(R"("brute_force": { "max_failures": 0 })")).pointer ==
        "/brute_force/max_failures");
  CHECK(contains(only_error(with(R"("brute_force": { "ban_multiplier": 0.5 })")).message,
                 "from 1 to 1000"));
  CHECK(only_error(with(R"("message": { "max_bytes": 0 })")).pointer == "/message/max_bytes");
  auto r = load(with(R"("message": { "max_bytes": 10000000000 },
                        "submission": { "limits": { "max_recipients": 0 } },
                        "brute_force": { "ban_multiplier": 2.5 })"));
  INFO(all_errors(r));
  REQUIRE(r.ok());
  CHECK(r.policy->message.max_bytes == 10000000000ULL);
  CHECK(r.policy->brute_force.ban_multiplier == 2.5);
}

TEST_CASE("loader: listener classes and TLS modes", "[loader]") {
  auto e = only_error(R"({"version": 1, "hostname": "h.example",
    "listeners": [ { "name": "l", "listen": "127.0.0.1:25", "class": "submision" } ],
    "backend": { "address": "127.0.0.1:10025" } })");
  CHECK(e.pointer == "/listeners/0/class");
  CHECK(contains(e.message, "(did you mean \"submission\"?)"));

  e = only_error(R"({"version": 1, "hostname": "h.example",
    "listeners": [ { "name": "l", "listen": "127.0.0.1:465", "class": "mx", "tls": "implicit" } ],
    "backend": { "address": "127.0.0.1:10025" } })");
  CHECK(e.pointer == "/listeners/0/tls");
  CHECK(e.message == "\"implicit\" needs a top-level \"tls\" section with \"cert\" and \"key\"");

  auto r = load(R"({"version": 1, "hostname": "h.example",
    "tls": { "cert": "/c.pem", "key": "/k.pem" },
    "listeners": [ { "name": "a", "listen": "127.0.0.1:25", "class": "mx" },
                   { "name": "b", "listen": "127.0.0.1:465", "class": "submission", "tls": "implicit" },
                   { "name": "c", "listen": "127.0.0.1:2525", "class": "auto", "tls": "none" } ],
    "backend": { "address": "127.0.0.1:10025" } })");
  INFO(all_errors(r));
  REQUIRE(r.ok());
  CHECK(r.policy->listeners[0].tls == TlsMode::StartTls);  // the default with a tls section
  CHECK(r.policy->listeners[1].tls == TlsMode::Implicit);
  CHECK(r.policy->listeners[1].cls == ListenerClass::Submission);
  CHECK(r.policy->listeners[2].tls == TlsMode::None);
  CHECK(r.policy->listeners[2].cls == ListenerClass::Auto);
  CHECK(r.policy->tls.configured);
  REQUIRE(r.policy->find_listener("b") != nullptr);
  CHECK(r.policy->find_listener("b")->port == 465);
  CHECK(r.policy->find_listener("zz") == nullptr);
}

TEST_CASE("loader: duplicate listener names and listen addresses", "[loader]") {
  auto r = load(R"({"version": 1, "hostname": "h.example",
    "listeners": [
      { "name": "mx", "listen": "0.0.0.0:25", "class": "mx" },
      { "name": "mx", "listen": "127.0.0.1:2525", "class": "mx" },
      { "name": "c", "listen": "0.0.0.0:25", "class": "mx" },
      { "name": "d", "listen": "127.0.0.1:25", "class": "mx" },
      { "name": "e", "listen": "[::]:2526", "class": "mx" },
      { "name": "f", "listen": "192.0.2.1:2526", "class": "mx" },
      { "name": "g", "listen": "[::1]:25", "class": "mx" },
      { "name": "h", "listen": "127.0.0.1:0", "class": "mx" },
      { "name": "i", "listen": "127.0.0.1:0", "class": "mx" }
    ],
    "backend": { "address": "127.0.0.1:10025" } })");
  auto errs = errors_of(r);
  INFO(all_errors(r));
  REQUIRE(errs.size() == 4);
  CHECK(errs[0] ==
        "policy.json:4:17: /listeners/1/name: duplicate listener name \"mx\" (also /listeners/0)");
  CHECK(errs[1] ==
        "policy.json:5:32: /listeners/2/listen: duplicate listen address "
        "\"0.0.0.0:25\" (also listener \"mx\")");
  CHECK(contains(errs[2], "/listeners/3/listen: \"127.0.0.1:25\" overlaps \"0.0.0.0:25\""));
  CHECK(contains(errs[3], "/listeners/5/listen: \"192.0.2.1:2526\" overlaps \"[::]:2526\""));
}

TEST_CASE("loader: listeners are required and not empty", "[loader]") {
  auto e = only_error(R"({"version": 1, "hostname": "h.example", "listeners": [],
    "backend": { "address": "127.0.0.1:10025" } })");
  CHECK(e.pointer == "/listeners");
  CHECK(e.message == "must name at least one listener");
  auto r = load(R"({"version": 1, "hostname": "h.example", "listeners": [ {} ],
    "backend": { "address": "127.0.0.1:10025" } })");
  auto errs = errors_of(r);
  REQUIRE(errs.size() == 3);
  CHECK(errs[0] == "policy.json:1:56: /listeners/0: missing required key \"name\"");
  CHECK(contains(errs[1], "missing required key \"listen\""));
  CHECK(contains(errs[2], "missing required key \"class\""));
}

TEST_CASE("loader: missing required keys point at the enclosing object", "[loader]") {
  auto r = load("\n  {}");
  auto errs = errors_of(r);
  REQUIRE(errs.size() == 4);
  CHECK(errs[0] == "policy.json:2:3: missing required key \"version\"");
  CHECK(errs[1] == "policy.json:2:3: missing required key \"hostname\"");
  CHECK(errs[2] == "policy.json:2:3: missing required key \"listeners\"");
  CHECK(errs[3] == "policy.json:2:3: missing required key \"backend\"");

  auto e = only_error(R"({"version": 1, "hostname": "h.example",
    "listeners": [ { "name": "mx", "listen": "127.0.0.1:25", "class": "mx" } ],
    "backend": { "tls": "none" } })");
  CHECK(e.to_string() == "policy.json:3:16: /backend: missing required key \"address\"");

  e = only_error(with(R"("tls": { "cert": "/c.pem" })"));
  CHECK(e.pointer == "/tls");
  CHECK(e.message == "missing required key \"key\"");
}

TEST_CASE("loader: named lists", "[loader]") {
  SECTION("undefined list, with a suggestion") {
    auto e = only_error(with(R"("lists": { "blocked": ["198.51.100.0/24"] },
      "mx": { "access": { "deny": ["@blokced"] } })"));
    CHECK(e.pointer == "/mx/access/deny/0");
    CHECK(e.message == "undefined list \"@blokced\" (did you mean \"@blocked\"?)");
    e = only_error(with(R"("trusted_proxies": ["@proxies"])"));
    CHECK(e.message == "undefined list \"@proxies\" (define it under \"lists\")");
  }
  SECTION("origins name the list an entry came from") {
    auto r = load(with(R"("lists": { "blocked": ["198.51.100.0/24"], "cms": ["203.0.113.10"] },
      "mx": { "access": { "deny": ["@blocked", "192.0.2.0/24"] } },
      "submission": { "require_tls": false, "access": { "allow": ["@cms"] } },
      "brute_force": { "never_ban": ["@cms"] })"));
    INFO(all_errors(r));
    REQUIRE(r.ok());
    const Policy& p = *r.policy;
    REQUIRE(p.list_names.size() == 3);
    CHECK(p.list_names[0].empty());
    auto m = p.mx.access.entries.lookup(*IpAddress::parse("198.51.100.7"));
    REQUIRE(m.has_value());
    CHECK(m->access == Access::Deny);
    CHECK(p.list_names.at(m->origin) == "blocked");
    CHECK(m->entry.to_string() == "198.51.100.0/24");
    m = p.mx.access.entries.lookup(*IpAddress::parse("192.0.2.1"));
    REQUIRE(m.has_value());
    CHECK(m->origin == 0);
    m = p.submission.access.entries.lookup(*IpAddress::parse("203.0.113.10"));
    REQUIRE(m.has_value());
    CHECK(m->access == Access::Allow);
    CHECK(p.list_names.at(m->origin) == "cms");
    CHECK(p.brute_force.never_ban.lookup(*IpAddress::parse("203.0.113.10")).has_value());
    CHECK_FALSE(p.brute_force.never_ban.lookup(*IpAddress::parse("203.0.113.11")).has_value());
  }
  SECTION("bad list definitions") {
    auto r = load(with(R"("lists": { "a": "10.0.0.0/8", "b": ["@a"], "bad name": [],
                                     "c": { "file": "/x", "files": 1 } })"));
    auto errs = errors_of(r);
    INFO(all_errors(r));
    REQUIRE(errs.size() == 4);
    CHECK(contains(errs[0], "/lists/a: must be an array of addresses or {\"file\": \"/path\"}"));
    CHECK(contains(errs[1], "/lists/b/0: \"@a\": a list cannot refer to another list"));
    CHECK(contains(errs[2], "/lists/bad name: \"bad name\" is not a valid list name"));
    CHECK(contains(errs[3], "/lists/c/files: unknown key \"files\" (did you mean \"file\"?)"));
  }
}

TEST_CASE("loader: list files", "[loader]") {
  TempDir dir;
  std::string good =
      dir.write("good.txt", "# blocked hosts\n\n198.51.100.0/24\n  192.0.2.7  # a bot\r\n");
  std::string bad = dir.write("bad.txt", "10.0.0.0/8\nnot-an-ip\n\n# fine\n10.1.2.3/40\n");
  auto policy = [&](const std::string& path) {
    return with(R"("lists": { "blocked": { "file": ")" + path + R"(" } },
      "mx": { "access": { "deny": ["@blocked"] } })");
  };
  LoadOptions files;  // check_files = true

  auto r = load(policy(good), files);
  INFO(all_errors(r));
  REQUIRE(r.ok());
  auto m = r.policy->mx.access.entries.lookup(*IpAddress::parse("192.0.2.7"));
  REQUIRE(m.has_value());
  CHECK(r.policy->list_names.at(m->origin) == "blocked");
  CHECK(r.policy->mx.access.entries.lookup(*IpAddress::parse("198.51.100.9")).has_value());

  r = load(policy(bad), files);
  auto errs = errors_of(r);
  REQUIRE(errs.size() == 2);
  CHECK(errs[0] == bad + ":2: /lists/blocked/file: \"not-an-ip\" is not an IP address or CIDR");
  CHECK(errs[1] ==
        bad + ":5: /lists/blocked/file: \"10.1.2.3/40\": prefix /40 is out of range for IPv4");

  r = load(policy(dir.path() + "/missing.txt"), files);
  errs = errors_of(r);
  REQUIRE(errs.size() == 1);
  CHECK(contains(errs[0], "policy.json:6:33: /lists/blocked/file: cannot read \"" + dir.path() +
                              "/missing.txt\": No such file or directory"));

  // Without check_files and read_list_files the file is not read at all.
  CHECK(load(policy(dir.path() + "/missing.txt")).ok());
  // read_list_files alone (explain): entries are loaded, certificates are not checked.
  LoadOptions lists_only = no_files();
  lists_only.read_list_files = true;
  r = load(policy(good), lists_only);
  REQUIRE(r.ok());
  CHECK(r.policy->mx.access.entries.lookup(*IpAddress::parse("192.0.2.7")).has_value());
  CHECK(load(policy(bad), lists_only).errors.size() == 2);
}

TEST_CASE("loader: invalid UTF-8 in a list file is an error, never an exception", "[loader]") {
  TempDir dir;
  std::string path = dir.write("latin1.txt", "192.0.2.1\n198.51.100.\xe9\xff/24\n");
  LoadOptions files;
  LoadResult r;
  REQUIRE_NOTHROW(r = load(with(R"("lists": { "l": { "file": ")" + path + R"(" } })"), files));
  auto errs = errors_of(r);
  REQUIRE(errs.size() == 1);
  // The bytes as they are; whoever renders the message as JSON replaces them.
  CHECK(contains(errs[0], "latin1.txt:2: /lists/l/file: \"198.51.100.\xe9\xff/24\" is not an IP"));
}

TEST_CASE("loader: a hopeless list file is summarised", "[loader]") {
  TempDir dir;
  std::string junk;
  for (int i = 0; i < 200; ++i) junk += "junk line " + std::to_string(i) + "\n";
  std::string path = dir.write("junk.txt", junk);
  LoadOptions files;
  auto r = load(with(R"("lists": { "j": { "file": ")" + path + R"(" } })"), files);
  REQUIRE(r.errors.size() == 51);
  CHECK(contains(r.errors.back().message, "150 more bad lines not shown (200 in all)"));
}

TEST_CASE("loader: duplicate JSON keys are errors", "[loader]") {
  auto r = load(R"({"version": 1, "hostname": "h.example",
    "listeners": [ { "name": "mx", "listen": "127.0.0.1:25", "class": "mx" } ],
    "mx": { "access": { "default": "deny",
                        "default": "allow" } },
    "backend": { "address": "127.0.0.1:10025" } })");
  auto errs = errors_of(r);
  REQUIRE(errs.size() == 1);
  CHECK(errs[0] ==
        "policy.json:4:25: /mx/access/default: duplicate key (first given at 3:25); "
        "JSON would silently keep only the last");
}

TEST_CASE("loader: require_tls without usable TLS", "[loader]") {
  SECTION("the default, no tls section: points at the listener") {
    auto e = only_error(R"({"version": 1, "hostname": "h.example",
      "listeners": [ { "name": "mx", "listen": "127.0.0.1:25", "class": "mx" },
                     { "name": "sub", "listen": "127.0.0.1:587", "class": "submission" } ],
      "backend": { "address": "127.0.0.1:10025" } })");
    CHECK(e.pointer == "/listeners/1");
    CHECK(e.line == 3);
    CHECK(e.column == 22);
    CHECK(contains(e.message, "listener \"sub\" offers AUTH"));
    CHECK(contains(e.message, "AUTH could never be offered"));
  }
  SECTION("explicit require_tls, every auth listener without TLS") {
    auto e = only_error(R"({"version": 1, "hostname": "h.example",
      "tls": { "cert": "/c.pem", "key": "/k.pem" },
      "listeners": [ { "name": "legacy", "listen": "127.0.0.1:25", "class": "auto", "tls": "none" } ],
      "submission": { "require_tls": true },
      "backend": { "address": "127.0.0.1:10025" } })");
    CHECK(e.pointer == "/submission/require_tls");
    CHECK(contains(e.message, "every submission/auto listener has \"tls\": \"none\""));
  }
  SECTION("a listener asking for TLS without a tls section: one error, not two") {
    auto e = only_error(R"({"version": 1, "hostname": "h.example",
      "listeners": [ { "name": "sub", "listen": "127.0.0.1:587", "class": "submission",
                       "tls": "starttls" } ],
      "backend": { "address": "127.0.0.1:10025" } })");
    CHECK(e.pointer == "/listeners/0/tls");
  }
  SECTION("fine: mx only, require_tls off, or one TLS listener") {
    CHECK(load(kMinimal).ok());
    CHECK(load(R"({"version": 1, "hostname": "h.example",
      "listeners": [ { "name": "sub", "listen": "127.0.0.1:587", "class": "submission" } ],
      "submission": { "require_tls": false },
      "backend": { "address": "127.0.0.1:10025" } })")
              .ok());
    CHECK(load(R"({"version": 1, "hostname": "h.example",
      "tls": { "cert": "/c.pem", "key": "/k.pem" },
      "listeners": [ { "name": "a", "listen": "127.0.0.1:587", "class": "auto", "tls": "none" },
                     { "name": "b", "listen": "127.0.0.1:465", "class": "submission", "tls": "implicit" } ],
      "backend": { "address": "127.0.0.1:10025" } })")
              .ok());
  }
}

TEST_CASE("loader: admin endpoint", "[loader]") {
  auto e = only_error(with(R"("admin": { "listen": "0.0.0.0:9025" })"));
  CHECK(e.pointer == "/admin/listen");
  CHECK(contains(e.message, "\"0.0.0.0:9025\" is not a loopback address"));
  CHECK(contains(e.message, "\"allow_remote\": true"));

  auto r = load(with(R"("admin": { "listen": "192.0.2.1:9025", "allow_remote": true })"));
  REQUIRE(r.ok());
  CHECK(r.policy->admin.host == "192.0.2.1");
  CHECK(r.policy->admin.allow_remote);

  r = load(with(R"("admin": { "listen": "[::1]:9025" })"));
  REQUIRE(r.ok());
  CHECK(r.policy->admin.host == "::1");
  CHECK(r.policy->admin.port == 9025);
}

TEST_CASE("loader: files named by the policy", "[loader]") {
  TempDir dir;
  std::string cert = dir.write("cert.pem", "CERT");
  std::string key = dir.write("key.pem", "KEY");
  auto tls = [&](const std::string& c, const std::string& k) {
    return with(R"("tls": { "cert": ")" + c + R"(", "key": ")" + k + R"(" })");
  };
  LoadOptions files;

  SECTION("missing cert file") {
    auto e = only_error(tls(dir.path() + "/nope.pem", key), files);
    CHECK(e.pointer == "/tls/cert");
    CHECK(e.message == "cannot read \"" + dir.path() + "/nope.pem\": No such file or directory");
    CHECK(e.line == 6);
    CHECK(e.column == 18);
    CHECK(load(tls(dir.path() + "/nope.pem", key)).ok());  // not checked without check_files
  }
  SECTION("a directory is not a key") {
    auto e = only_error(tls(cert, dir.path()), files);
    CHECK(e.pointer == "/tls/key");
    CHECK(contains(e.message, "Is a directory"));
  }
  SECTION("the TLS checker's verdict is reported at /tls/key") {
    LoadOptions checked;
    int calls = 0;
    checked.tls_checker = [&](const TlsSettings& t) -> std::string {
      ++calls;
      CHECK(t.cert == cert);
      return "key does not match certificate";
    };
    auto e = only_error(tls(cert, key), checked);
    CHECK(calls == 1);
    CHECK(e.pointer == "/tls/key");
    CHECK(e.message == "key does not match certificate");
    checked.tls_checker = [](const TlsSettings&) { return std::string(); };
    CHECK(load(tls(cert, key), checked).ok());
  }
  SECTION("state file directory") {
    auto state = [&](const std::string& path) {
      return with(R"("brute_force": { "state_file": ")" + path + R"(" })");
    };
    auto r = load(state(dir.path() + "/bans.json"), files);
    INFO(all_errors(r));
    REQUIRE(r.ok());
    CHECK(r.policy->brute_force.state_file == dir.path() + "/bans.json");
    auto e = only_error(state(dir.path() + "/nodir/bans.json"), files);
    CHECK(e.pointer == "/brute_force/state_file");
    CHECK(contains(e.message, "No such file or directory"));
    e = only_error(state(cert + "/bans.json"), files);
    CHECK(contains(e.message, "is not a directory"));
  }
  SECTION("log file directory") {
    auto log = [&](const std::string& path) {
      return with(R"("log": { "format": "json", "path": ")" + path + R"(" })");
    };
    auto r = load(log(dir.path() + "/gw.log"), files);
    INFO(all_errors(r));
    REQUIRE(r.ok());
    CHECK(load(log("-"), files).ok());
    auto e = only_error(log(dir.path() + "/nodir/gw.log"), files);
    CHECK(e.pointer == "/log/path");
    CHECK(e.message ==
          "directory \"" + dir.path() + "/nodir\" of the log file: No such file or directory");
    // Not checked without check_files (run's reload still reads the file as given).
    CHECK(load(log(dir.path() + "/nodir/gw.log")).ok());
  }
  SECTION("backend CA bundle") {
    auto e = only_error(R"({"version": 1, "hostname": "h.example",
      "listeners": [ { "name": "mx", "listen": "127.0.0.1:25", "class": "mx" } ],
      "backend": { "address": "127.0.0.1:10025", "ca": "/nonexistent/ca.pem" } })",
                        files);
    CHECK(e.pointer == "/backend/ca");
  }
}

TEST_CASE("loader: reading the policy file", "[loader]") {
  auto r = load_policy_file("/nonexistent/policy.json");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].to_string() ==
        "/nonexistent/policy.json: cannot read: No such file or directory");
  CHECK_FALSE(r.ok());

  TempDir dir;
  std::string path = dir.write("policy.json", kMinimal);
  r = load_policy_file(path);
  REQUIRE(r.ok());
  CHECK(r.policy->source_path == path);
  std::string bad = dir.write("bad.json", "{\n  \"version\": 1,\n  \"hostname\": 7\n}");
  r = load_policy_file(bad);
  REQUIRE(r.errors.size() == 3);
  CHECK(r.errors[0].to_string() == bad + ":1:1: missing required key \"listeners\"");
  CHECK(r.errors[2].to_string() == bad + ":3:15: /hostname: must be a string, not an integer");
}

// ----------------------------------------------------------------------------------------
// Values and defaults

TEST_CASE("loader: every default on a minimal policy", "[loader]") {
  auto r = load(kMinimal);
  INFO(all_errors(r));
  REQUIRE(r.ok());
  const Policy& p = *r.policy;
  CHECK(p.version == 1);
  CHECK(p.hostname == "mail.example.com");
  CHECK(p.mode == Mode::Enforce);
  CHECK(p.local_domains.empty());
  CHECK(p.list_names == std::vector<std::string>{""});
  REQUIRE(p.listeners.size() == 1);
  CHECK(p.listeners[0].name == "mx");
  CHECK(p.listeners[0].host == "127.0.0.1");
  CHECK(p.listeners[0].port == 2525);
  CHECK(p.listeners[0].cls == ListenerClass::Mx);
  CHECK(p.listeners[0].tls == TlsMode::None);  // no tls section

  CHECK_FALSE(p.tls.configured);
  CHECK(p.tls.min_version == "TLSv1.2");
  CHECK(p.tls.ciphers.empty());

  CHECK_FALSE(p.mx.mode.has_value());
  CHECK(p.mx_mode() == Mode::Enforce);
  CHECK(p.mx.access.default_access == Access::Allow);
  CHECK(p.mx.access.entries.empty());
  CHECK(p.mx.auth == MxPolicy::AuthAction::Refuse);
  CHECK_FALSE(p.mx.reject_local_sender);
  CHECK(p.mx.max_recipients == 100);

  CHECK_FALSE(p.submission.mode.has_value());
  CHECK(p.submission.access.default_access == Access::Deny);
  CHECK(p.submission.access.entries.empty());
  CHECK(p.submission.require_tls);
  CHECK(p.submission.auth_match == AuthMatch::Address);
  CHECK(p.submission.senders.empty());
  CHECK(p.submission.limits.messages_per_hour == 0);
  CHECK(p.submission.limits.recipients_per_hour == 0);
  CHECK(p.submission.limits.max_recipients == 0);

  CHECK_FALSE(p.brute_force.mode.has_value());
  CHECK(p.brute_force.max_failures == 5);
  CHECK(p.brute_force.window == Seconds(600));
  CHECK(p.brute_force.ban == Seconds(3600));
  CHECK(p.brute_force.ban_multiplier == 4);
  CHECK(p.brute_force.max_ban == Seconds(30 * 86400));
  CHECK(p.brute_force.never_ban.empty());
  CHECK(p.brute_force.state_file.empty());

  CHECK(p.connections.max_total == 10000);
  CHECK(p.connections.max_per_ip == 50);
  CHECK_FALSE(p.connections.rate_per_ip.has_value());

  CHECK(p.timeouts.command == Seconds(300));
  CHECK(p.timeouts.data == Seconds(600));
  CHECK(p.timeouts.backend_connect == Seconds(10));
  CHECK(p.timeouts.backend_reply == Seconds(300));
  CHECK(p.timeouts.drain == Seconds(30));

  CHECK(p.message.max_bytes == 52428800);
  CHECK(p.message.bare_newline == BareNewline::Reject);
  CHECK(p.message.received_header);

  CHECK(p.backend.host == "127.0.0.1");
  CHECK(p.backend.port == 10025);
  CHECK(p.backend.tls == BackendTls::None);
  CHECK(p.backend.client_ip == ClientIpMode::None);
  CHECK(p.backend.ca.empty());
  CHECK(p.backend.verify);
  CHECK(p.backend.server_name.empty());

  CHECK(p.trusted_proxies.empty());
  CHECK(p.log.format == LogFormat::Json);
  CHECK(p.log.path == "-");
  CHECK(p.admin.host.empty());
  CHECK(p.admin.port == 0);
  CHECK_FALSE(p.admin.allow_remote);
  CHECK(p.source_path == "policy.json");
}

TEST_CASE("loader: access sections keep their own defaults", "[loader]") {
  auto r =
      load(with(R"("submission": { "require_tls": false, "access": { "allow": ["10.0.0.0/8"] } },
    "mx": { "access": { "deny": ["10.0.0.0/8"] } })"));
  INFO(all_errors(r));
  REQUIRE(r.ok());
  CHECK(r.policy->submission.access.default_access == Access::Deny);
  CHECK(r.policy->mx.access.default_access == Access::Allow);
  r = load(with(R"("submission": { "require_tls": false, "access": { "default": "allow" } },
    "mx": { "access": { "default": "deny" } })"));
  REQUIRE(r.ok());
  CHECK(r.policy->submission.access.default_access == Access::Allow);
  CHECK(r.policy->mx.access.default_access == Access::Deny);
  CHECK(only_error(with(R"("mx": { "access": { "default": "reject" } })")).pointer ==
        "/mx/access/default");
}

TEST_CASE("loader: domains, senders and hostnames", "[loader]") {
  auto r = load(with(R"("local_domains": ["Example.COM", "*.Example.net"],
    "submission": { "require_tls": false, "senders": {
      "CMS@Example.com": ["NoReply@Example.com", "@Customers.Example.org"] } })"));
  INFO(all_errors(r));
  REQUIRE(r.ok());
  const Policy& p = *r.policy;
  CHECK(p.local_domains.contains("example.com"));
  CHECK(p.local_domains.contains("mail.example.net"));
  CHECK_FALSE(p.local_domains.contains("example.net"));
  REQUIRE(p.submission.senders.count("cms@example.com") == 1);
  CHECK(p.submission.senders.at("cms@example.com") ==
        std::vector<std::string>{"noreply@example.com", "@customers.example.org"});

  CHECK(only_error(with(R"("local_domains": ["exa mple.com"])")).pointer == "/local_domains/0");
  CHECK(only_error(with(R"("local_domains": ["*"])")).pointer == "/local_domains/0");
  auto e = only_error(with(R"("submission": { "senders": { "a@x.example": ["noreply"] } })"));
  CHECK(e.pointer == "/submission/senders/a@x.example/0");
  CHECK(e.message == "\"noreply\" is not an address, \"@domain\", \"@*.domain\" or \"*\"");
  auto wild = load(
      with(R"("submission": { "senders": { "a@x.example": ["@*.customers.example", "*"] } })"));
  INFO(all_errors(wild));
  REQUIRE(wild.ok());
  CHECK(wild.policy->submission.senders.at("a@x.example") ==
        std::vector<std::string>{"@*.customers.example", "*"});
  for (const char* bad : {"x@*.example.com", "@*", "@*.", "**", "@*.*.example"}) {
    INFO(bad);
    CHECK(only_error(with(std::string(R"("submission": { "senders": { "a@x.example": [")") + bad +
                          R"("] } })"))
              .pointer == "/submission/senders/a@x.example/0");
  }
  e = only_error(with(R"("submission": { "senders": { "a@x.example": [], "A@x.example": [] } })"));
  CHECK(contains(e.message, "compared case-insensitively"));
  e = only_error(with(R"("submission": { "senders": { "a@x.example": "b@x.example" } })"));
  CHECK(contains(e.message, "must be an array"));
  e = only_error(R"({"version": 1, "hostname": "not a host",
    "listeners": [ { "name": "mx", "listen": "127.0.0.1:25", "class": "mx" } ],
    "backend": { "address": "127.0.0.1:10025" } })");
  CHECK(e.pointer == "/hostname");
}

TEST_CASE("loader: modes and --dry-run", "[loader]") {
  auto r = load(with(R"("mode": "dry-run", "mx": { "mode": "enforce" })"));
  REQUIRE(r.ok());
  CHECK(r.policy->mode == Mode::DryRun);
  CHECK(r.policy->mx_mode() == Mode::Enforce);
  CHECK(r.policy->submission_mode() == Mode::DryRun);

  LoadOptions dry = no_files();
  dry.cli_dry_run = true;
  r = load(with(R"("mx": { "mode": "enforce" }, "brute_force": { "mode": "enforce" })"), dry);
  REQUIRE(r.ok());
  CHECK(r.policy->mode == Mode::DryRun);
  CHECK(r.policy->mx_mode() == Mode::DryRun);
  CHECK(r.policy->submission_mode() == Mode::DryRun);
  CHECK(r.policy->brute_force_mode() == Mode::DryRun);
}

TEST_CASE("loader: a full policy like SPEC section 4 loads", "[loader]") {
  const std::string text = R"({
  "version": 1,
  "hostname": "mail.example.com",
  "mode": "enforce",                      // "enforce" | "dry-run"
  "local_domains": ["example.com", "example.net"],
  "lists": {
    "cms":     ["203.0.113.10", "2001:db8:10::/64"],
    "blocked": { "file": "/var/lib/smtpgate/blocked.txt" }   // one entry a line, # comments
  },
  "listeners": [
    { "name": "mx",          "listen": "0.0.0.0:25",  "class": "mx" },
    { "name": "submission",  "listen": "0.0.0.0:587", "class": "submission" },
    { "name": "submissions", "listen": "0.0.0.0:465", "class": "submission", "tls": "implicit" },
    { "name": "legacy",      "listen": "[::]:2525",   "class": "auto" }
  ],
  "tls": { "cert": "/etc/smtpgate/fullchain.pem", "key": "/etc/smtpgate/key.pem",
           "min_version": "TLSv1.2" },
  "mx": {
    "mode": "enforce",                    // a section may override the global mode
    "access": { "default": "allow", "deny": ["@blocked"] },
    "auth": "refuse",                     // "refuse" | "ban": any AUTH attempt bans the IP
    "reject_local_sender": true,          // unauthenticated MAIL FROM in a local domain
    "max_recipients": 100
  },
  "submission": {
    "access": { "default": "deny", "allow": ["@cms"] },
    "require_tls": true,
    "auth_match": "address",              // "address" | "domain" | "none"
    "senders": {                          // extra addresses (or "@domain") a login may use
      "cms@example.com": ["noreply@example.com", "@customers.example.org"]
    },
    "limits": { "messages_per_hour": 2000, "recipients_per_hour": 20000, "max_recipients": 100 }
  },
  "brute_force": {
    "max_failures": 5, "window": "10m",
    "ban": "1h", "ban_multiplier": 4, "max_ban": "30d",   // repeat offenders: 1h, 4h, 16h …
    "never_ban": ["@cms"],
    "state_file": "/var/lib/smtpgate/bans.json"           // survives restarts
  },
  "connections": { "max_total": 10000, "max_per_ip": 20, "rate_per_ip": "60/m" },
  "timeouts": { "command": "5m", "data": "10m", "backend_connect": "10s",
                "backend_reply": "5m", "drain": "30s" },
  "message": { "max_bytes": 52428800, "bare_newline": "reject", "received_header": true },
  "backend": {
    "address": "127.0.0.1:10025",
    "tls": "none",                        // "none" | "starttls" | "implicit"
    "client_ip": "none"                   // "none" | "xclient" | "proxy-v1" | "proxy-v2"
  },
  "trusted_proxies": [],                  // inbound PROXY protocol accepted only from these
  "log":   { "format": "json", "path": "-" },
  "admin": { "listen": "127.0.0.1:9025" }
})";
  auto r = load(text);
  INFO(all_errors(r));
  REQUIRE(r.ok());
  // The locator finds every value the parser saw.
  JsonLocator locator(text);
  const auto leaves = nlohmann::json::parse(text, nullptr, true, true).flatten();
  for (const auto& item : leaves.items()) {
    INFO(item.key());
    CHECK(locator.value(item.key()).has_value());
  }
  CHECK(locator.value("/tls/min_version")->line == 17);
  CHECK(locator.value("/tls/min_version")->column == 27);
  const Policy& p = *r.policy;
  CHECK(p.listeners.size() == 4);
  CHECK(p.find_listener("legacy")->host == "::");
  CHECK(p.find_listener("legacy")->cls == ListenerClass::Auto);
  CHECK(p.find_listener("legacy")->tls == TlsMode::StartTls);
  CHECK(p.find_listener("submissions")->tls == TlsMode::Implicit);
  CHECK(p.tls.configured);
  CHECK(p.tls.cert == "/etc/smtpgate/fullchain.pem");
  CHECK(p.mx.reject_local_sender);
  CHECK(p.mx.mode == Mode::Enforce);
  CHECK(p.submission.limits.messages_per_hour == 2000);
  CHECK(p.submission.limits.recipients_per_hour == 20000);
  CHECK(p.submission.limits.max_recipients == 100);
  CHECK(p.connections.max_per_ip == 20);
  CHECK(p.brute_force.state_file == "/var/lib/smtpgate/bans.json");
  CHECK(p.admin.host == "127.0.0.1");
  CHECK(p.admin.port == 9025);
  CHECK(p.list_names == std::vector<std::string>{"", "blocked", "cms"});
  auto m = p.submission.access.entries.lookup(*IpAddress::parse("2001:db8:10::5"));
  REQUIRE(m.has_value());
  CHECK(p.list_names.at(m->origin) == "cms");
}

TEST_CASE("loader: every example loads", "[loader][examples]") {
  const std::string dir = std::string(SMTPGATE_SOURCE_DIR) + "/examples";
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* ent = readdir(d)) {
      std::string n = ent->d_name;
      if (n.size() > 5 && n.ends_with(".json")) names.push_back(n);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  REQUIRE(std::find(names.begin(), names.end(), "quickstart.json") != names.end());
  REQUIRE(std::find(names.begin(), names.end(), "smartermail-bulk.json") != names.end());
  REQUIRE(std::find(names.begin(), names.end(), "postfix-backend.json") != names.end());
  for (const auto& n : names) {
    const std::string path = dir + "/" + n;
    std::string text = read_text(path);
    // Examples that name production paths (/etc/smtpgate, /var/lib/smtpgate) cannot have
    // their files on a build machine; the rest are checked with their files.
    LoadOptions options;
    options.check_files = !contains(text, "/etc/smtpgate") && !contains(text, "/var/lib/smtpgate");
    auto r = load_policy_file(path, options);
    INFO(path << "\n" << all_errors(r));
    CHECK(r.ok());
  }
}

TEST_CASE("reload: changes that need a restart are named", "[loader][reload]") {
  auto base = load(kMinimal);
  REQUIRE(base.ok());
  CHECK(changes_needing_restart(*base.policy, *base.policy).empty());
  std::string moved_text = kMinimal;
  moved_text.replace(moved_text.find("127.0.0.1:2525"), 14, "127.0.0.1:2626");
  auto moved = load(moved_text);
  REQUIRE(moved.ok());
  auto kept = changes_needing_restart(*base.policy, *moved.policy);
  REQUIRE(kept.size() == 1);
  CHECK(kept[0] ==
        "listeners[0] \"mx\": listen 127.0.0.1:2525, class mx, tls none -> \"mx\": listen "
        "127.0.0.1:2626, class mx, tls none (needs a restart)");
  auto logged = load(with(R"("log": { "path": "/var/log/smtpgate.log" })"));
  REQUIRE(logged.ok());
  kept = changes_needing_restart(*base.policy, *logged.policy);
  REQUIRE(kept.size() == 1);
  CHECK(kept[0] == "log.path \"-\" -> \"/var/log/smtpgate.log\" (needs a restart)");
  // Everything else applies at reload: no restart named.
  auto other = load(with(R"("mx": { "max_recipients": 5 })"));
  REQUIRE(other.ok());
  CHECK(changes_needing_restart(*base.policy, *other.policy).empty());
}

TEST_CASE("loader: submission.breaker", "[loader]") {
  SECTION("off unless set") {
    auto r = load(with(R"("submission": {"access": {"default": "allow"}})"), no_files());
    REQUIRE(r.ok());
    CHECK_FALSE(r.policy->submission.breaker);
  }
  SECTION("any threshold may be left out") {
    auto r = load(with(R"("submission": {"breaker": {"max_ips_per_hour": 5,
                                                     "max_rejected_rcpts_per_hour": 50}})"),
                  no_files());
    REQUIRE(r.ok());
    REQUIRE(r.policy->submission.breaker);
    CHECK(r.policy->submission.breaker->max_ips_per_hour == 5u);
    CHECK_FALSE(r.policy->submission.breaker->max_rcpt_domains_per_hour);
    CHECK(r.policy->submission.breaker->max_rejected_rcpts_per_hour == 50u);
  }
  SECTION("a threshold is a positive integer") {
    auto e = only_error(with(R"("submission": {"breaker": {"max_rcpt_domains_per_hour": 0}})"));
    CHECK(e.pointer == "/submission/breaker/max_rcpt_domains_per_hour");
    CHECK(e.message == "must be an integer from 1 to 4294967295, not 0");
    CHECK(e.line == 6);
  }
  SECTION("a typo is named with its neighbour") {
    auto e = only_error(with(R"("submission": {"breaker": {"max_ip_per_hour": 5}})"));
    CHECK(e.message == "unknown key \"max_ip_per_hour\" (did you mean \"max_ips_per_hour\"?)");
  }
  SECTION("an empty breaker is a mistake, not an off switch") {
    auto e = only_error(with(R"("submission": {"breaker": {}})"));
    CHECK(e.pointer == "/submission/breaker");
    CHECK(contains(e.message, "sets no threshold"));
  }
}

TEST_CASE("loader: proxy_protocol listeners need trusted_proxies", "[loader]") {
  const std::string pp = R"({
  "version": 1,
  "hostname": "mail.example.com",
  "listeners": [ { "name": "mx", "listen": "127.0.0.1:2525", "class": "mx",
                   "proxy_protocol": true } ],
  "backend": { "address": "127.0.0.1:10025" })";
  SECTION("without trusted_proxies: an error at the listener's key") {
    auto e = only_error(pp + "\n}");
    CHECK(e.pointer == "/listeners/0/proxy_protocol");
    CHECK(contains(e.message, "\"trusted_proxies\" is empty"));
    CHECK(e.line == 5);
  }
  SECTION("with them: the listener takes the header") {
    auto r = load(pp + R"(, "trusted_proxies": ["10.0.0.5", "10.0.1.0/24"] })", no_files());
    INFO(all_errors(r));
    REQUIRE(r.ok());
    CHECK(r.policy->listeners[0].proxy_protocol);
    CHECK(r.policy->trusted_proxies.lookup(*IpAddress::parse("10.0.1.9")));
  }
  SECTION("a boolean") {
    auto e = only_error(with(R"("trusted_proxies": ["10.0.0.5"])")
                            .replace(kMinimal.find("\"class\": \"mx\""), 13,
                                     R"("class": "mx", "proxy_protocol": "yes")"));
    CHECK(e.message == "must be true or false, not a string");
  }
}

TEST_CASE("loader: workers", "[loader]") {
  CHECK(load(kMinimal, no_files()).policy->workers == 0);  // auto
  CHECK(load(with(R"("workers": "auto")"), no_files()).policy->workers == 0);
  CHECK(load(with(R"("workers": 2)"), no_files()).policy->workers == 2);
  CHECK(only_error(with(R"("workers": 0)")).message == "must be an integer from 1 to 64, not 0");
  CHECK(only_error(with(R"("workers": "many")")).message ==
        "must be \"auto\" or a number of event loops from 1 to 64, not \"many\"");
}

TEST_CASE("loader: shared (Redis)", "[loader]") {
  SECTION("absent: nothing shared") {
    CHECK_FALSE(load(kMinimal, no_files()).policy->shared);
  }
  SECTION("TCP with defaults: prefix smtpgate:, instance left to the host name") {
    auto r = load(with(R"("shared": { "redis": "127.0.0.1:6379" })"), no_files());
    INFO(all_errors(r));
    REQUIRE(r.ok());
    REQUIRE(r.policy->shared);
    const SharedSettings& s = *r.policy->shared;
    CHECK(s.redis == "127.0.0.1:6379");
    CHECK(s.host == "127.0.0.1");
    CHECK(s.port == 6379);
    CHECK(s.unix_path.empty());
    CHECK(s.password_file.empty());
    CHECK(s.prefix == "smtpgate:");
    CHECK(s.instance.empty());  // gethostname() at run time, not at load
  }
  SECTION("IPv6, a unix socket, every key") {
    auto v6 = load(with(R"("shared": { "redis": "[::1]:6380" })"), no_files());
    REQUIRE(v6.ok());
    CHECK(v6.policy->shared->host == "::1");
    CHECK(v6.policy->shared->port == 6380);
    auto r = load(with(R"("shared": { "redis": "unix:/run/redis/redis.sock",
                                      "password_file": "/etc/smtpgate/redis.pass",
                                      "prefix": "mx:", "instance": "gw1" })"),
                  no_files());
    INFO(all_errors(r));
    REQUIRE(r.ok());
    const SharedSettings& s = *r.policy->shared;
    CHECK(s.unix_path == "/run/redis/redis.sock");
    CHECK(s.host.empty());
    CHECK(s.port == 0);
    CHECK(s.password_file == "/etc/smtpgate/redis.pass");
    CHECK(s.prefix == "mx:");
    CHECK(s.instance == "gw1");
  }
  SECTION("redis is required, at the section") {
    auto e = only_error(with(R"("shared": { "prefix": "x:" })"));
    CHECK(e.pointer == "/shared");
    CHECK(e.message == "missing required key \"redis\"");
    CHECK(e.line == 6);
  }
  SECTION("bad addresses: position and reason") {
    auto e = only_error(with(R"("shared": { "redis": "redis.example.com:6379" })"));
    CHECK(e.to_string() ==
          "policy.json:6:22: /shared/redis: \"redis.example.com:6379\": the host must be an IP "
          "address, not a name (names would need DNS) (expected \"IP:port\" or \"unix:/path\")");
    CHECK(
        contains(only_error(with(R"("shared": { "redis": "127.0.0.1" })")).message, "has no port"));
    CHECK(contains(only_error(with(R"("shared": { "redis": "127.0.0.1:0" })")).message,
                   "port must be 1-65535"));
    CHECK(only_error(with(R"("shared": { "redis": "unix:run/redis.sock" })")).message ==
          "\"unix:run/redis.sock\": the socket path must be absolute, as in "
          "\"unix:/run/redis/redis.sock\"");
    CHECK(only_error(with(R"("shared": { "redis": "/run/redis.sock" })")).message ==
          "\"/run/redis.sock\" is not \"IP:port\"; a unix socket is written "
          "\"unix:/run/redis.sock\"");
    CHECK(contains(
        only_error(with(R"("shared": { "redis": "unix:/)" + std::string(120, 'a') + "\" }"))
            .message,
        "at most 107 bytes"));
    CHECK(only_error(with(R"("shared": { "redis": 6379 })")).message ==
          "must be a string, not an integer");
  }
  SECTION("prefix and instance") {
    CHECK(only_error(with(R"("shared": { "redis": "127.0.0.1:6379", "prefix": "" })")).message ==
          "must not be empty");
    CHECK(only_error(with(R"("shared": { "redis": "127.0.0.1:6379", "prefix": "a b" })")).message ==
          "\"a b\" is not a valid prefix (1-64 printable ASCII characters, no spaces)");
    auto e = only_error(with(R"("shared": { "redis": "127.0.0.1:6379", "instance": "gw 1" })"));
    CHECK(e.pointer == "/shared/instance");
    CHECK(contains(e.message, "is not a valid instance name"));
  }
  SECTION("unknown keys; the password itself is no key") {
    auto e = only_error(with(R"("shared": { "redis": "127.0.0.1:6379", "password": "x" })"));
    CHECK(e.pointer == "/shared/password");
    CHECK(contains(e.message,
                   "unknown key \"password\": the password is never written in the "
                   "policy"));
    CHECK(contains(e.message, "\"password_file\""));
    e = only_error(with(R"("redis": "127.0.0.1:6379")"));
    CHECK(e.message == "unknown key \"redis\" (it belongs in \"shared\")");
    CHECK(e.pointer == "/redis");
  }
  SECTION("password_file must be readable, checked with check_files") {
    TempDir dir;
    std::string pass = dir.write("redis.pass", "s3cret\n");
    LoadOptions files;
    files.read_list_files = false;
    auto ok =
        load(with(R"("shared": { "redis": "127.0.0.1:6379", "password_file": ")" + pass + "\" }"),
             files);
    INFO(all_errors(ok));
    REQUIRE(ok.ok());
    CHECK(ok.policy->shared->password_file == pass);
    auto e = only_error(with(R"("shared": { "redis": "127.0.0.1:6379", "password_file": ")" +
                             dir.path() + "/missing\" }"),
                        files);
    CHECK(e.pointer == "/shared/password_file");
    CHECK(e.message == "cannot read \"" + dir.path() + "/missing\": No such file or directory");
    // Without check_files (tests, `explain` of a copied policy) it is not opened.
    CHECK(load(with(R"("shared": { "redis": "127.0.0.1:6379", "password_file": "/nonexistent" })"),
               no_files())
              .ok());
  }
}
