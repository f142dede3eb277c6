#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <string>

#include "proxy/smtp/sasl.h"

using namespace smtpgate::smtp;
using namespace std::string_literals;

TEST_CASE("sasl: base64 encodes the RFC 4648 vectors", "[sasl]") {
  CHECK(base64_encode("") == "");
  CHECK(base64_encode("f") == "Zg==");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_encode("foo") == "Zm9v");
  CHECK(base64_encode("foob") == "Zm9vYg==");
  CHECK(base64_encode("fooba") == "Zm9vYmE=");
  CHECK(base64_encode("foobar") == "Zm9vYmFy");
  CHECK(base64_encode("\xff\xfe\xfd"s) == "//79");
}

TEST_CASE("sasl: base64 decodes the RFC 4648 vectors", "[sasl]") {
  CHECK(base64_decode("") == "");
  CHECK(base64_decode("Zg==") == "f");
  CHECK(base64_decode("Zm8=") == "fo");
  CHECK(base64_decode("Zm9v") == "foo");
  CHECK(base64_decode("Zm9vYg==") == "foob");
  CHECK(base64_decode("Zm9vYmE=") == "fooba");
  CHECK(base64_decode("Zm9vYmFy") == "foobar");
  CHECK(base64_decode("AGFsaWNlAHNlY3JldA==") == "\0alice\0secret"s);
}

TEST_CASE("sasl: base64 decoding is strict", "[sasl]") {
  for (const char* bad : {"Zg",       "Zg=",      "Zm9",    "Zm9vY", "Zm9v=", " Zm9v", "Zm9v ",
                          "Zm 9v",    "Zm9v\r\n", "Zm\n9v", "Z===",  "====",  "=Zg=",  "Zg=a",
                          "Zg==Zg==", "Zm9=Zm9v", "Zh==",   "Zm9=",  "Zm-v",  "Zm_v"}) {
    INFO(bad);
    CHECK_FALSE(base64_decode(bad).has_value());
  }
  CHECK_FALSE(base64_decode("Zm9v\0AAA"s).has_value());
}

TEST_CASE("sasl: base64 round-trips any bytes", "[sasl]") {
  std::mt19937 rng(42);
  for (int n = 0; n < 2000; ++n) {
    std::string s(rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng() & 0xff);
    const std::string e = base64_encode(s);
    CHECK(e.size() % 4 == 0);
    CHECK(base64_decode(e) == s);
  }
}

TEST_CASE("sasl: SASL responses", "[sasl]") {
  CHECK(decode_sasl_response("=") == "");
  CHECK(decode_sasl_response("Zm9v") == "foo");
  CHECK_FALSE(decode_sasl_response("").has_value());
  CHECK_FALSE(decode_sasl_response("*").has_value());
}

TEST_CASE("sasl: PLAIN messages", "[sasl]") {
  auto c = decode_plain("\0alice\0s3cret pass"s);
  REQUIRE(c);
  CHECK(c->authzid.empty());
  CHECK(c->authcid == "alice");
  CHECK(c->password == "s3cret pass");

  c = decode_plain("alice\0alice\0pw"s);
  REQUIRE(c);
  CHECK(c->authzid == "alice");

  struct Bad {
    std::string in;
    const char* why;
  };
  for (const Bad& b :
       {Bad{"bob\0alice\0pw"s, "authorization identity differs from login"},
        Bad{"alice\0pw"s, "malformed PLAIN message"}, Bad{"alicepw"s, "malformed PLAIN message"},
        Bad{""s, "malformed PLAIN message"},
        Bad{"\0alice\0p\0w"s, "credentials contain CR, LF or NUL"},
        Bad{"\0al\rice\0pw"s, "credentials contain CR, LF or NUL"},
        Bad{"\0alice\0pw\r\nRSET"s, "credentials contain CR, LF or NUL"},
        Bad{"x\nx\0x\nx\0pw"s, "credentials contain CR, LF or NUL"}, Bad{"\0\0pw"s, "empty login"},
        Bad{"\0alice\0"s, "empty password"}}) {
    INFO(b.why);
    const auto r = decode_plain(b.in);
    CHECK_FALSE(r);
    CHECK(r.error() == b.why);
  }
}

TEST_CASE("sasl: PLAIN responses end to end", "[sasl]") {
  auto c = parse_plain_response("AGFsaWNlAHNlY3JldA==");
  REQUIRE(c);
  CHECK(c->authcid == "alice");
  CHECK(c->password == "secret");
  CHECK(parse_plain_response("AGFsaWNlAHNlY3JldA").error() == "invalid base64");
  CHECK(parse_plain_response("=").error() == "malformed PLAIN message");
  CHECK(encode_plain(*c) == "AGFsaWNlAHNlY3JldA==");

  // What the gateway sends the backend decodes to what the client sent.
  auto again = parse_plain_response(encode_plain(*c));
  REQUIRE(again);
  CHECK(again->authcid == "alice");
  CHECK(again->password == "secret");
}

TEST_CASE("sasl: LOGIN credentials get the same checks", "[sasl]") {
  auto c = make_login_credentials("alice@example.org", "pw");
  REQUIRE(c);
  CHECK(c->authcid == "alice@example.org");
  CHECK(c->authzid.empty());
  CHECK_FALSE(make_login_credentials("", "pw"));
  CHECK_FALSE(make_login_credentials("alice", ""));
  CHECK_FALSE(make_login_credentials("alice\r\nMAIL FROM:<x>", "pw"));
  CHECK_FALSE(make_login_credentials("alice", "p\0w"s));
}

TEST_CASE("sasl: secrets are wiped", "[sasl]") {
  // Long enough to live on the heap, so the buffer survives clear() and can be inspected.
  std::string s(64, 'S');
  const char* p = s.data();
  secure_wipe(s);
  CHECK(s.empty());
  CHECK(s.data() == p);
  CHECK(std::all_of(p, p + 64, [](char c) { return c == '\0'; }));

  Credentials a;
  a.authcid = "alice";
  a.password = "short";  // in the small-string buffer: moving it would copy and leave it
  Credentials b(std::move(a));
  CHECK(b.password == "short");
  CHECK(a.password.empty());  // NOLINT(bugprone-use-after-move): checking the wipe
  Credentials c;
  c.password = std::string(40, 'L');
  c = std::move(b);
  CHECK(c.password == "short");
  CHECK(b.password.empty());  // NOLINT(bugprone-use-after-move)
}

TEST_CASE("sasl: xtext for XCLIENT values", "[sasl]") {
  CHECK(xtext_encode("mail.example.org") == "mail.example.org");
  CHECK(xtext_encode("[UNAVAILABLE]") == "[UNAVAILABLE]");
  CHECK(xtext_encode("a b") == "a+20b");
  CHECK(xtext_encode("+=") == "+2B+3D");
  CHECK(xtext_encode("!~") == "!~");
  CHECK(xtext_encode("\x7f\x80\xff") == "+7F+80+FF");
  CHECK(xtext_encode("\0\r\n"s) == "+00+0D+0A");
  CHECK(xtext_encode("") == "");
}
