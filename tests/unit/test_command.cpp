#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "fuzz/command_property.h"
#include "proxy/smtp/command.h"
#include "proxy/smtp/line_reader.h"

using smtpgate::smtp::Command;
using smtpgate::smtp::kMaxCommandLine;
using smtpgate::smtp::kMaxParams;
using smtpgate::smtp::LineReader;
using smtpgate::smtp::parse_command;
using smtpgate::smtp::Verb;

namespace {

using namespace std::string_literals;

Command ok(std::string_view line) {
  Command c = parse_command(line);
  INFO(line << " -> " << c.error);
  CHECK(c.ok());
  return c;
}

std::string_view syntax_error(std::string_view line) {
  const Command c = parse_command(line);
  INFO(line);
  CHECK(c.status == Command::Status::SyntaxError);
  CHECK_FALSE(c.error.empty());
  return c.error;
}

// What the session would act on, as a comparable string.
std::string summary(const Command& c) {
  std::string s(smtpgate::smtp::to_string(c.verb));
  s += c.ok() ? " ok" : " err(" + std::string(c.error) + ")";
  s += " path=" + std::string(c.path) + " domain=" + std::string(c.domain);
  for (const auto& p : c.params()) s += " " + std::string(p.key) + "=" + std::string(p.value);
  return s;
}

std::vector<std::string> parse_stream(const std::vector<std::string_view>& chunks) {
  LineReader r;
  std::vector<std::string> out;
  for (std::string_view in : chunks) {
    while (!in.empty()) {
      const auto res = r.feed(in, kMaxCommandLine);
      in.remove_prefix(res.consumed);
      if (res.status == LineReader::Status::NeedMore) break;
      out.push_back(res.status == LineReader::Status::TooLong ? "TOOLONG"
                                                              : summary(parse_command(res.line)));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("command: verbs are case-insensitive", "[command]") {
  CHECK(ok("EHLO mail.example.org").verb == Verb::Ehlo);
  CHECK(ok("ehlo mail.example.org").verb == Verb::Ehlo);
  CHECK(ok("HeLo x").verb == Verb::Helo);
  CHECK(ok("mail FROM:<a@b>").verb == Verb::Mail);
  CHECK(ok("Rcpt to:<a@b>").verb == Verb::Rcpt);
  CHECK(ok("data").verb == Verb::Data);
  CHECK(ok("rset").verb == Verb::Rset);
  CHECK(ok("noop").verb == Verb::Noop);
  CHECK(ok("quit").verb == Verb::Quit);
  CHECK(ok("help").verb == Verb::Help);
  CHECK(ok("vrfy postmaster").verb == Verb::Vrfy);
  CHECK(ok("expn list").verb == Verb::Expn);
  CHECK(ok("auth plain").verb == Verb::Auth);
  CHECK(ok("StartTLS").verb == Verb::StartTls);
  CHECK(ok("bdat 10").verb == Verb::Bdat);
  CHECK(smtpgate::smtp::to_string(Verb::StartTls) == "STARTTLS");
  CHECK(smtpgate::smtp::to_string(Verb::Unknown) == "UNKNOWN");
}

TEST_CASE("command: unknown verbs and the empty line are Unknown, not syntax errors", "[command]") {
  Command c = ok("XYZZY plugh");
  CHECK(c.verb == Verb::Unknown);
  CHECK(c.verb_text == "XYZZY");
  CHECK(c.argument == "plugh");
  CHECK(ok("").verb == Verb::Unknown);
  CHECK(ok("MAILFROM:<a@b>").verb == Verb::Unknown);
  CHECK(ok("EHLOx").verb == Verb::Unknown);
}

TEST_CASE("command: HELO/EHLO need a domain", "[command]") {
  CHECK(ok("EHLO mail.example.org").domain == "mail.example.org");
  CHECK(ok("EHLO [192.0.2.1]").domain == "[192.0.2.1]");
  CHECK(ok("EHLO [IPv6:2001:db8::1]").domain == "[IPv6:2001:db8::1]");
  CHECK(ok("HELO   host   extra words  ").domain == "host");
  syntax_error("EHLO");
  syntax_error("EHLO   ");
  syntax_error("HELO");
}

TEST_CASE("command: MAIL FROM path", "[command]") {
  CHECK(ok("MAIL FROM:<user@example.org>").path == "user@example.org");
  CHECK(ok("mail from:<user@example.org>").path == "user@example.org");
  CHECK(ok("MAIL FROM: <user@example.org>").path == "user@example.org");  // Postfix leniency
  CHECK(ok("MAIL FROM:<>").path.empty());
  CHECK(ok("MAIL FROM:<>   ").path.empty());
  CHECK(ok("MAIL  FROM:<a@b>").path == "a@b");
  CHECK(ok(R"(MAIL FROM:<"odd>local"@example.org>)").path == R"("odd>local"@example.org)");
  CHECK(ok(R"(MAIL FROM:<"a\"> b"@x>)").path == R"("a\"> b"@x)");
  CHECK(ok("MAIL FROM:<@relay.example:user@example.org>").path ==
        "@relay.example:user@example.org");
  CHECK(ok("MAIL FROM:<pelé@exämple.org> SMTPUTF8").path == "pelé@exämple.org");

  syntax_error("MAIL");
  syntax_error("MAIL FROM:");
  syntax_error("MAIL FROM:user@example.org");
  syntax_error("MAIL FROM:  <user@example.org>");
  syntax_error("MAIL FROM:<user@example.org");
  syntax_error("MAIL FROM:<user@example.org>x");
  syntax_error("MAIL FROM <user@example.org>");
  syntax_error("MAIL TO:<user@example.org>");
  syntax_error(R"(MAIL FROM:<"unterminated@x>)");
}

TEST_CASE("command: RCPT TO path", "[command]") {
  CHECK(ok("RCPT TO:<user@example.org>").path == "user@example.org");
  CHECK(ok("rcpt to: <Postmaster>").path == "Postmaster");
  Command c = ok("RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b");
  CHECK(c.param_count == 2);
  CHECK(c.find_param("orcpt")->value == "rfc822;a@b");
  CHECK_FALSE(c.size.has_value());
  syntax_error("RCPT TO:<>");
  syntax_error("RCPT FROM:<a@b>");
  syntax_error("RCPT TO:a@b");
}

TEST_CASE("command: ESMTP parameters", "[command]") {
  Command c = ok("MAIL FROM:<a@b> SIZE=12345 BODY=8BITMIME SMTPUTF8 AUTH=<>");
  REQUIRE(c.param_count == 4);
  CHECK(c.params()[0].key == "SIZE");
  CHECK(c.params()[0].value == "12345");
  CHECK(c.params()[2].key == "SMTPUTF8");
  CHECK_FALSE(c.params()[2].has_value);
  CHECK(c.find_param("auth")->value == "<>");
  CHECK(c.find_param("body")->value == "8BITMIME");
  CHECK(c.find_param("ret") == nullptr);
  REQUIRE(c.size.has_value());
  CHECK(*c.size == 12345);

  CHECK(ok("MAIL FROM:<a@b>   size=1    body=7BIT  ").param_count == 2);
  CHECK(*ok("MAIL FROM:<a@b> SIZE=0").size == 0);
  CHECK(*ok("MAIL FROM:<a@b> SIZE=18446744073709551615").size == 18446744073709551615ULL);

  CHECK(syntax_error("MAIL FROM:<a@b> SIZE=18446744073709551616") == "bad SIZE value");
  CHECK(syntax_error("MAIL FROM:<a@b> SIZE=99999999999999999999999") == "bad SIZE value");
  CHECK(syntax_error("MAIL FROM:<a@b> SIZE=12k") == "bad SIZE value");
  CHECK(syntax_error("MAIL FROM:<a@b> SIZE=-1") == "bad SIZE value");
  CHECK(syntax_error("MAIL FROM:<a@b> SIZE") == "bad SIZE value");
  syntax_error("MAIL FROM:<a@b> SIZE=");
  syntax_error("MAIL FROM:<a@b> SIZE=1 size=2");
  syntax_error("MAIL FROM:<a@b> -X=1");
  syntax_error("MAIL FROM:<a@b> X_Y=1");
  syntax_error("MAIL FROM:<a@b> =1");
  syntax_error("MAIL FROM:<a@b> X=1=2");

  std::string ten = "MAIL FROM:<a@b>";
  for (size_t i = 0; i < kMaxParams; ++i) ten += " X" + std::to_string(i) + "=1";
  CHECK(ok(ten).param_count == kMaxParams);
  CHECK(syntax_error(ten + " Y=1") == "too many parameters");
}

TEST_CASE("command: verbs without arguments", "[command]") {
  for (const char* v : {"DATA", "RSET", "QUIT", "STARTTLS"}) {
    ok(v);
    ok(std::string(v) + "  ");
    syntax_error(std::string(v) + " x");
  }
  CHECK(ok("NOOP anything at all").argument == "anything at all");
  CHECK(ok("HELP mail").argument == "mail");
  syntax_error("VRFY");
  syntax_error("EXPN");
}

TEST_CASE("command: control characters are syntax errors", "[command]") {
  CHECK(syntax_error("MAIL FROM:<a\0@b>"s) == "control character in command");
  syntax_error("EHLO a\0"s);
  syntax_error("\0"s);
  syntax_error("MAIL FROM:<a@b>\tSIZE=1");
  syntax_error("RCPT TO:<a@b\r>");
  syntax_error("NOOP \x7f");
  syntax_error("XYZZY \x01");
  // The verb is still recognised, for logging.
  CHECK(parse_command("QUIT \x1b").verb == Verb::Quit);
}

TEST_CASE("command: AUTH", "[command]") {
  Command c = ok("AUTH PLAIN");
  CHECK(c.auth_mechanism == "PLAIN");
  CHECK_FALSE(c.auth_initial_response.has_value());
  c = ok("auth plain AGFsaWNlAHNlY3JldA==");
  CHECK(c.auth_mechanism == "plain");
  CHECK(c.auth_initial_response == "AGFsaWNlAHNlY3JldA==");
  CHECK(ok("AUTH LOGIN =").auth_initial_response == "=");
  CHECK(ok("AUTH CRAM-MD5").auth_mechanism == "CRAM-MD5");
  CHECK(ok("AUTH SCRAM-SHA-256").auth_mechanism == "SCRAM-SHA-256");
  syntax_error("AUTH");
  syntax_error("AUTH PLAIN a b");
  syntax_error("AUTH PL@IN");
  syntax_error("AUTH ABCDEFGHIJKLMNOPQRSTU");
}

TEST_CASE("command: BDAT", "[command]") {
  Command c = ok("BDAT 1000 LAST");
  CHECK(c.bdat_size == 1000);
  CHECK(c.bdat_last);
  CHECK_FALSE(ok("BDAT 0").bdat_last);
  syntax_error("BDAT");
  syntax_error("BDAT x");
  syntax_error("BDAT 10 FIRST");
  syntax_error("BDAT 10 LAST x");
}

TEST_CASE("command: pipelined commands parse the same at every split point", "[command]") {
  const std::string_view stream =
      "EHLO client.example\r\n"
      "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME\r\n"
      "RCPT TO:<b@example.net>\n"
      "RCPT TO:<>\r\n"
      "NOOP\r\n"
      "RCPT TO:<c@example.net> NOTIFY=NEVER\r\n"
      "DATA\r\n";
  const std::vector<std::string> expected = {
      "EHLO ok path= domain=client.example",
      "MAIL ok path=a@example.org domain= SIZE=100 BODY=8BITMIME",
      "RCPT ok path=b@example.net domain=",
      "RCPT err(empty recipient address) path= domain=",
      "NOOP ok path= domain=",
      "RCPT ok path=c@example.net domain= NOTIFY=NEVER",
      "DATA ok path= domain=",
  };
  CHECK(parse_stream({stream}) == expected);
  std::vector<std::string_view> bytes;
  for (size_t i = 0; i < stream.size(); ++i) bytes.push_back(stream.substr(i, 1));
  CHECK(parse_stream(bytes) == expected);
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    INFO("split at " << cut);
    CHECK(parse_stream({stream.substr(0, cut), stream.substr(cut)}) == expected);
  }
}

TEST_CASE("command: fuzz property on seeded random streams", "[command][property]") {
  // Pieces of real commands and the bytes that trip parsers, glued at random.
  static const char* const kPieces[] = {"MAIL",
                                        "RCPT",
                                        "EHLO",
                                        "AUTH",
                                        "BDAT",
                                        "DATA",
                                        "mail",
                                        " ",
                                        " ",
                                        "FROM:",
                                        "TO:",
                                        "<",
                                        ">",
                                        "\"",
                                        "\\",
                                        "a@b",
                                        "SIZE=",
                                        "1",
                                        "99999999999999999999",
                                        "=",
                                        "BODY=8BITMIME",
                                        "PLAIN",
                                        "=",
                                        "\r",
                                        "\n",
                                        "\r\n",
                                        "\r\n",
                                        "\t",
                                        "\x7f",
                                        "\xc3\xa9",
                                        "x"};
  std::mt19937 rng(1234567);
  const size_t limits[] = {3, 8, 40, kMaxCommandLine};
  for (int n = 0; n < 4000; ++n) {
    std::string stream;
    const size_t pieces = rng() % 30;
    for (size_t i = 0; i < pieces; ++i) stream += kPieces[rng() % std::size(kPieces)];
    if (rng() % 4 == 0) stream.push_back('\0');
    const size_t limit = limits[rng() % std::size(limits)];
    const std::string why =
        smtpgate::fuzz::check_command_stream(stream, limit, static_cast<uint32_t>(rng()));
    if (!why.empty()) FAIL_CHECK(why << " limit=" << limit << " on: " << stream);
  }
}

TEST_CASE("command: AUTH= is removed from MAIL, the rest kept as sent", "[command]") {
  struct Case {
    std::string line, expected;
  };
  const std::vector<Case> cases{
      {"MAIL FROM:<bounce@ext.example> AUTH=<ceo@example.com>", "MAIL FROM:<bounce@ext.example>"},
      {"MAIL FROM:<a@b> BODY=8BITMIME AUTH=<> SIZE=100", "MAIL FROM:<a@b> BODY=8BITMIME SIZE=100"},
      {"MAIL FROM:<a@b>  auth=x+40y   SIZE=1", "MAIL FROM:<a@b>   SIZE=1"},
      {"mail from:<a@b> Auth", "mail from:<a@b>"},
      {"MAIL FROM:<> AUTH=<> ", "MAIL FROM:<> "},
  };
  for (const auto& c : cases) {
    INFO(c.line);
    const Command cmd = ok(c.line);
    std::string out = "untouched";
    REQUIRE(smtpgate::smtp::remove_auth_param(cmd, c.line, out));
    CHECK(out == c.expected);
    // What is left parses to the same command without AUTH.
    const Command again = ok(out);
    CHECK(again.find_param("AUTH") == nullptr);
    CHECK(again.param_count + 1 == cmd.param_count);
  }
  const std::string plain = "MAIL FROM:<a@b> SIZE=10 AUTHX=1";
  std::string out = "untouched";
  CHECK_FALSE(smtpgate::smtp::remove_auth_param(ok(plain), plain, out));
  CHECK(out == "untouched");
}

TEST_CASE("command: non-ASCII and HTTP detection", "[command]") {
  using smtpgate::smtp::has_non_ascii;
  using smtpgate::smtp::looks_like_http;
  CHECK_FALSE(has_non_ascii("user@example.com"));
  CHECK(has_non_ascii("j\xc3\xb6rg@example.com"));
  CHECK(has_non_ascii("\x80"));
  for (const char* http : {"GET / HTTP/1.1", "POST /x HTTP/1.0", "HEAD / HTTP/1.1",
                           "PUT /a HTTP/1.1", "CONNECT mx.example:25 HTTP/1.1", "OPTIONS * HTTP/1.1"})
    CHECK(looks_like_http(http));
  for (const char* smtp : {"EHLO get.example", "get / HTTP/1.1", "GET", "HELO GET ", "POSTMASTER",
                           "MAIL FROM:<GET @x>", ""})
    CHECK_FALSE(looks_like_http(smtp));
}
