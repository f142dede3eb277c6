#include <catch2/catch.hpp>

#include "policy/mail_address.h"

using smtpgate::MailPath;
using smtpgate::parse_mail_path;

namespace {

MailPath ok(std::string_view inner) {
  auto p = parse_mail_path(inner);
  INFO('<' << inner << ">: " << p.error());
  REQUIRE(p);
  return *p;
}

std::string error_of(std::string_view inner) {
  auto p = parse_mail_path(inner);
  INFO('<' << inner << '>');
  REQUIRE_FALSE(p);
  return p.error();
}

}  // namespace

TEST_CASE("parse_mail_path: plain mailboxes", "[mail_address]") {
  auto p = ok("User.Name+tag@Example.COM");
  CHECK_FALSE(p.null);
  CHECK(p.local == "User.Name+tag");
  CHECK(p.domain == "Example.COM");  // as written; callers compare case-insensitively
  CHECK_FALSE(p.has_source_route);
  CHECK(p.address() == "User.Name+tag@Example.COM");

  CHECK(ok("a@b").address() == "a@b");
  CHECK(ok("x@mail-1.example_host.org").domain == "mail-1.example_host.org");
  CHECK(ok("x@example.com.").domain == "example.com.");
  CHECK(ok("!#$&'*+-/=?^_`{|}~@example.com").local == "!#$&'*+-/=?^_`{|}~");
  // Dot placement is left to the backend; such addresses exist in the wild.
  CHECK(ok("a..b@example.com").local == "a..b");
  CHECK(ok("a.@example.com").local == "a.");
  // SMTPUTF8
  CHECK(ok("j\xC3\xB8rn@\xC3\xA6\xC3\xB8.example").domain == "\xC3\xA6\xC3\xB8.example");
}

TEST_CASE("parse_mail_path: null path", "[mail_address]") {
  auto p = ok("");
  CHECK(p.null);
  CHECK(p.local.empty());
  CHECK(p.domain.empty());
  CHECK(p.address() == "");
}

TEST_CASE("parse_mail_path: postmaster without a domain", "[mail_address]") {
  auto p = ok("postmaster");
  CHECK_FALSE(p.null);
  CHECK(p.local == "postmaster");
  CHECK(p.domain.empty());
  CHECK(p.address() == "postmaster");
  CHECK(ok("PostMaster").local == "PostMaster");
  CHECK(error_of("root") == "address has no domain");
  CHECK(error_of("postmaster2") == "address has no domain");
  CHECK(error_of("@a:postmaster") == "address has no domain");
}

TEST_CASE("parse_mail_path: source routes are judged by the final mailbox", "[mail_address]") {
  auto p = ok("@relay.example,@hop2.example:user@dest.example");
  CHECK(p.has_source_route);
  CHECK(p.local == "user");
  CHECK(p.domain == "dest.example");
  CHECK(p.address() == "user@dest.example");

  p = ok("@a.example:\"x y\"@[192.0.2.1]");
  CHECK(p.has_source_route);
  CHECK(p.local == "x y");
  CHECK(p.domain == "[192.0.2.1]");

  for (const char* bad : {"@a.example", "@a.example:", "@:user@d", "@a,b:user@d", "@a,:user@d",
                          "@a,,@b:user@d", "@a..b:user@d", "@a b:user@d", "@a:@b:user@d"}) {
    INFO(bad);
    CHECK_FALSE(parse_mail_path(bad));
  }
}

TEST_CASE("parse_mail_path: quoted local parts are stored unquoted", "[mail_address]") {
  auto p = ok("\"john smith\"@example.com");
  CHECK(p.local == "john smith");
  CHECK(p.domain == "example.com");
  CHECK(p.address() == "\"john smith\"@example.com");

  // Quoting that changes nothing normalizes away.
  p = ok("\"john\"@example.com");
  CHECK(p.local == "john");
  CHECK(p.address() == "john@example.com");

  p = ok("\"a\\\"b\\\\c\"@example.com");  // "a\"b\\c"
  CHECK(p.local == "a\"b\\c");
  CHECK(p.address() == "\"a\\\"b\\\\c\"@example.com");

  // The percent hack and bang paths survive parsing, quoted or not; the engine rejects them.
  CHECK(ok("user%other.example@example.com").local == "user%other.example");
  CHECK(ok("host!user@example.com").local == "host!user");
  CHECK(ok("\"user%other\"@example.com").local == "user%other");
  // A quoted '@' stays in the local part; the domain is still the one after the quotes.
  p = ok("\"user@evil.example\"@example.com");
  CHECK(p.local == "user@evil.example");
  CHECK(p.domain == "example.com");

  CHECK(error_of("\"unterminated@example.com") == "unterminated quoted local part");
  CHECK(error_of("\"a\"b@example.com") == "invalid character after quoted local part");
  CHECK(error_of("\"a\"") == "address has no domain");
  CHECK(error_of("\"\"@example.com") == "empty local part");
  CHECK(error_of("\"a\\") == "unterminated quoted local part");
}

TEST_CASE("parse_mail_path: domain literals", "[mail_address]") {
  CHECK(ok("user@[192.0.2.1]").domain == "[192.0.2.1]");
  CHECK(ok("user@[IPv6:2001:db8::1]").domain == "[IPv6:2001:db8::1]");
  for (const char* bad : {"user@[]", "user@[192.0.2.1", "user@[1.2.3.4]x", "user@[a[b]",
                          "user@[a b]", "user@192.0.2.1]"}) {
    INFO(bad);
    CHECK_FALSE(parse_mail_path(bad));
  }
}

TEST_CASE("parse_mail_path: rejects malformed paths", "[mail_address]") {
  CHECK(error_of("@example.com") == "malformed source route");
  CHECK(error_of("@") == "malformed source route");
  CHECK(error_of("user@") == "empty domain");
  CHECK(error_of("user name@example.com") == "space outside quotes");
  CHECK(error_of(" user@example.com") == "space outside quotes");
  CHECK(error_of("user@example .com") == "space outside quotes");
  CHECK(error_of("user@example.com ") == "space outside quotes");
  CHECK(error_of("user@evil.example@example.com") == "invalid character in domain");
  CHECK(error_of("a@b@c") == "invalid character in domain");
  CHECK(error_of("user@exa..mple.com") == "empty label in domain");
  CHECK(error_of("user@.example.com") == "empty label in domain");
  CHECK(error_of("user@.") == "empty label in domain");
  CHECK(error_of("user@example.com..") == "empty label in domain");
  CHECK(error_of("us(er@example.com") == "invalid character in local part");
  CHECK(error_of("us<er@example.com") == "invalid character in local part");
  CHECK(error_of("us\\er@example.com") == "invalid character in local part");
  CHECK(error_of("user@exam,ple.com") == "invalid character in domain");
  CHECK(error_of("user@<example.com>") == "invalid character in domain");
  CHECK(error_of("<user@example.com>") == "invalid character in local part");
}

TEST_CASE("parse_mail_path: control characters anywhere", "[mail_address]") {
  using namespace std::string_view_literals;
  for (std::string_view bad :
       {"us\rer@example.com"sv, "user@example.com\r\nRCPT TO:<x@y>"sv, "\"a\tb\"@example.com"sv,
        "user@exa\0mple.com"sv, "user\x7f@example.com"sv, "\x01"sv}) {
    auto p = parse_mail_path(bad);
    CHECK_FALSE(p);
    CHECK(p.error() == "control character in address");
  }
}

TEST_CASE("parse_mail_path: length limit", "[mail_address]") {
  // 254 octets inside the brackets is the most a 256-octet path can hold.
  std::string local(64, 'a');
  std::string domain = std::string(185, 'b') + ".com";
  std::string max = local + "@" + domain;
  REQUIRE(max.size() == 254);
  CHECK(parse_mail_path(max));
  CHECK(error_of(max + "m") == "path longer than 256 octets");
  CHECK(error_of(std::string(100000, 'x')) == "path longer than 256 octets");
  // Long local parts are not rejected on their own (VERP and SRS addresses exceed 64).
  CHECK(ok(std::string(100, 'v') + "@example.com").local.size() == 100);
}

TEST_CASE("parse_mail_path: errors do not echo the input", "[mail_address]") {
  auto p = parse_mail_path("secret-token\x1b[31m@example.com");
  REQUIRE_FALSE(p);
  CHECK(p.error().find("secret") == std::string::npos);
  CHECK(p.error().find('\x1b') == std::string::npos);
}
