// `smtpgate learn` on small logs written inline: what each login sent as and where from,
// gzip and malformed input, and a fragment the policy loader takes.
#include <catch2/catch.hpp>

#include "policy/loader.h"
#include "proxy/smtp/explain.h"
#include "proxy/tools/learn.h"
#include "tools_fixture.h"

using namespace smtpgate;
using namespace tools_test;

namespace {

const std::string kSubmission = R"(,
    "submission": { "access": { "default": "deny", "allow": ["@cms"] },
                    "senders": { "cms@example.com": ["noreply@example.com", "@old.example"] } })";

// The CMS: as itself, as noreply@ (listed), as 6 addresses of shop.example (collapsed), as
// one of other.example; from its host and from an IPv6 address. Plus what learn skips.
std::string cms_log() {
  std::string log;
  log += submission("cms@example.com", "cms@example.com").line();
  log += submission("CMS@example.com", "noreply@example.com").line();  // logins ignore case
  log += submission("cms@example.com", "noreply@example.com").line();
  for (int i = 1; i <= 6; ++i)
    log += submission("cms@example.com", "user" + std::to_string(i) + "@Shop.example").line();
  log += submission("cms@example.com", "info@other.example", "[2001:db8::5]:4000").line();
  log += submission("cms@example.com", "").line();  // the null sender needs no entry
  Tx failed = submission("guesser@example.com", "x@example.com", "198.51.100.9:1");
  failed.auth = "failed";
  log += failed.line();
  log += Tx{}.line();  // an mx delivery: no login
  log += "garbage that is not JSON\n";
  log += "{\"ts\":\"2026-12-01T10:00:00.000Z\",\"event\":\"transacti\n";  // cut short
  log += "{\"ts\":\"x\",\"event\":\"session_open\",\"session\":\"s9\"}\n";
  log += "{\"ts\":\"x\",\"event\":\"transaction\",\"session\":\"s9\"}\n";  // no outcome, client
  log += "\n";
  return log;
}

const LearnedLogin& only_login(const LearnReport& r) {
  REQUIRE(r.logins.size() == 1);
  return r.logins[0];
}

}  // namespace

TEST_CASE("learn: senders and clients per login, a busy domain collapsed", "[learn]") {
  TempDir dir;
  auto p = policy(kSubmission);
  auto r = learn_files(*p, {dir.write("gw.log", cms_log())});
  REQUIRE(r);
  CHECK(r->counts.files == 1);
  CHECK(r->counts.not_json == 2);
  CHECK(r->counts.malformed == 1);
  CHECK(r->counts.other_events == 1);
  CHECK(r->transactions == 13);
  CHECK(r->without_login == 2);

  const LearnedLogin& l = only_login(*r);
  CHECK(l.login == "cms@example.com");
  CHECK(l.list == "learned-cms-example.com");
  CHECK(l.transactions == 11);
  std::vector<std::string> entries;
  for (const auto& e : l.proposed) entries.push_back(e.entry);
  CHECK(entries ==
        std::vector<std::string>{"@shop.example", "info@other.example", "noreply@example.com"});
  CHECK(l.proposed[0].addresses == 6);
  CHECK_FALSE(l.proposed[0].in_policy);
  CHECK(l.proposed[2].in_policy);
  CHECK(l.proposed[2].transactions == 2);
  CHECK(l.unused == std::vector<std::string>{"@old.example"});
  // cms@example.com itself: auth_match "address" takes it, no entry.
  bool self = false;
  for (const auto& s : l.senders)
    if (s.address == "cms@example.com") self = s.by_auth_match;
  CHECK(self);

  REQUIRE(l.clients.size() == 2);
  CHECK(l.clients[0].cidr.to_string() == "203.0.113.10/32");
  CHECK(l.clients[0].transactions == 10);
  CHECK(l.clients[0].allowed_now);
  CHECK(l.clients[0].allowed_by == "cms");
  CHECK(l.clients[1].cidr.to_string() == "2001:db8::5/128");
  CHECK_FALSE(l.clients[1].allowed_now);
}

TEST_CASE("learn: four addresses of a domain stay addresses", "[learn]") {
  TempDir dir;
  std::string log;
  for (int i = 1; i <= 4; ++i)
    log += submission("cms@example.com", "u" + std::to_string(i) + "@shop.example").line();
  auto r = learn_files(*policy(), {dir.write("gw.log", log)});
  REQUIRE(r);
  CHECK(only_login(*r).proposed.size() == 4);
}

TEST_CASE("learn: auth_match domain needs no entry for the login's own domain", "[learn]") {
  TempDir dir;
  std::string log = submission("cms@example.com", "sales@example.com").line() +
                    submission("cms@example.com", "sales@example.net").line();
  auto r = learn_files(*policy(R"(, "submission": { "auth_match": "domain" })"),
                       {dir.write("gw.log", log)});
  REQUIRE(r);
  const LearnedLogin& l = only_login(*r);
  REQUIRE(l.proposed.size() == 1);
  CHECK(l.proposed[0].entry == "sales@example.net");
}

TEST_CASE("learn: gzip logs are recognised by their magic and read through gzip -dc", "[learn]") {
  TempDir dir;
  dir.write("gw.log.1", cms_log());
  const std::string gz = dir.gzip("gw.log.1");
  // Renamed without .gz: the two magic bytes decide, not the name.
  std::filesystem::rename(gz, dir.file("gw.log.2"));
  const std::string plain =
      dir.write("gw.log", submission("web@example.com", "a@b.example").line());
  auto r = learn_files(*policy(kSubmission), {dir.file("gw.log.2"), plain});
  REQUIRE(r);
  CHECK(r->warnings.empty());
  CHECK(r->counts.files == 2);
  CHECK(r->transactions == 14);
  REQUIRE(r->logins.size() == 2);
  CHECK(r->logins[0].proposed.size() == 3);
  CHECK(r->logins[1].login == "web@example.com");

  // A truncated gzip: what was read counts, and the report says it was cut short.
  const std::string whole = dir.file("gw.log.2");
  std::string bytes;
  {
    std::ifstream in(whole, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string cut = dir.write("cut.gz", bytes.substr(0, bytes.size() - 12));
  auto t = learn_files(*policy(kSubmission), {cut});
  REQUIRE(t);
  REQUIRE(t->warnings.size() == 1);
  CHECK_THAT(t->warnings[0], Catch::Contains("gzip -dc exited with status"));
}

TEST_CASE("learn: missing or unreadable files are errors before anything is read", "[learn]") {
  TempDir dir;
  const std::string ok = dir.write("gw.log", cms_log());
  auto missing = learn_files(*policy(), {ok, dir.file("nope.log")});
  REQUIRE_FALSE(missing);
  CHECK_THAT(missing.error(), Catch::Contains("nope.log: No such file or directory"));
  auto directory = learn_files(*policy(), {dir.path.string()});
  REQUIRE_FALSE(directory);
  CHECK_THAT(directory.error(), Catch::Contains("is a directory"));
}

TEST_CASE("learn: the text fragment is commented JSON the loader merges and enforces", "[learn]") {
  TempDir dir;
  auto p = policy(kSubmission);
  auto r = learn_files(*p, {dir.write("gw.log", cms_log())});
  REQUIRE(r);
  const std::string text = learn_text(*r);
  CHECK_THAT(text, Catch::Contains("\"@shop.example\",  "));
  CHECK_THAT(text, Catch::Contains("// 6 addresses, 6 transactions"));
  CHECK_THAT(text, Catch::Contains("in the policy, not used in these logs: \"@old.example\""));
  auto parsed = nlohmann::ordered_json::parse(text, nullptr, true, /*ignore_comments=*/true);
  CHECK(parsed == learn_fragment(*r));
  auto machine = nlohmann::json::parse(learn_json(*r));
  CHECK(machine["fragment"] == nlohmann::json::parse(parsed.dump()));
  CHECK(machine["logins"][0]["clients"][1]["cidr"] == "2001:db8::5/128");
  CHECK(machine["counts"]["not_json"] == 2);

  // Adopted: the learned senders pass, an unlearned one still does not.
  std::string adopted = R"(, "submission": { "access": )" + parsed["submission"]["access"].dump() +
                        R"(, "senders": )" + parsed["submission"]["senders"].dump() + " }";
  std::string lists = parsed["lists"].dump();  // {"learned-…": […]}, beside the policy's own
  lists = R"("cms": ["203.0.113.10"], )" + lists.substr(1, lists.size() - 2);
  auto np = policy(adopted, lists);
  ExplainInput in;
  in.client = *IpAddress::parse("2001:db8::5");
  in.listener = "sub";
  in.tls = true;
  in.auth_user = "cms@example.com";
  in.mail_from = "user9@shop.example";
  in.rcpts = {"someone@gmail.example"};
  auto e = explain(*np, in);
  REQUIRE(e);
  CHECK(e->accepted);
  in.mail_from = "ceo@example.com";
  e = explain(*np, in);
  REQUIRE(e);
  CHECK_FALSE(e->accepted);
}

TEST_CASE("learn: nothing to learn still prints a fragment that parses", "[learn]") {
  TempDir dir;
  auto r = learn_files(*policy(), {dir.write("gw.log", Tx{}.line())});
  REQUIRE(r);
  CHECK(r->logins.empty());
  const std::string text = learn_text(*r);
  CHECK_THAT(text, Catch::Contains("nothing to propose"));
  CHECK(nlohmann::json::parse(text, nullptr, true, true) == nlohmann::json::object());
}

TEST_CASE("learn: memory bounds count what they leave out", "[learn]") {
  TempDir dir;
  std::string log;
  for (int i = 0; i < 5; ++i) {
    const std::string n = std::to_string(i);
    log += submission("cms@example.com", "u" + n + "@x.example", "192.0.2." + n + ":1").line();
    log += submission("login" + n + "@example.com", "a@b.example").line();
  }
  LearnOptions o;
  o.max_senders_per_login = 2;
  o.max_clients_per_login = 3;
  o.max_logins = 3;
  auto r = learn_files(*policy(), {dir.write("gw.log", log)}, o);
  REQUIRE(r);
  REQUIRE(r->logins.size() == 3);
  const LearnedLogin& cms = r->logins[0];
  CHECK(cms.login == "cms@example.com");
  CHECK(cms.senders.size() == 2);
  CHECK(cms.senders_omitted == 3);
  CHECK(cms.clients.size() == 3);
  CHECK(cms.clients_omitted == 2);
  CHECK(r->logins_omitted == 3);
}

TEST_CASE("learn: list names are valid and distinct", "[learn]") {
  TempDir dir;
  std::string log = submission("a+b@example.com", "x@y.example").line() +
                    submission("a-b@example.com", "x@y.example").line();
  auto r = learn_files(*policy(), {dir.write("gw.log", log)});
  REQUIRE(r);
  REQUIRE(r->logins.size() == 2);
  CHECK(r->logins[0].list == "learned-a-b-example.com");
  CHECK(r->logins[1].list == "learned-a-b-example.com-2");
}
