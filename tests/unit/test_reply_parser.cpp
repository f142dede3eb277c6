#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "proxy/smtp/reply_parser.h"

using smtpgate::smtp::BackendReply;
using smtpgate::smtp::EhloCapabilities;
using smtpgate::smtp::first_line;
using smtpgate::smtp::kMaxReplyBytes;
using smtpgate::smtp::kMaxReplyLines;
using smtpgate::smtp::parse_ehlo_capabilities;
using smtpgate::smtp::ReplyParser;

namespace {

struct Got {
  int code = 0;
  std::string raw;
  std::vector<std::string> lines;
  bool operator==(const Got&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Got& g) {
  os << g.code << " [" << g.raw << "]";
  return os;
}

struct Outcome {
  std::vector<Got> replies;
  bool error = false;
  bool operator==(const Outcome&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  for (const auto& g : o.replies) os << g << "\n";
  return os << (o.error ? "ERROR" : "");
}

Outcome run(ReplyParser& p, const std::vector<std::string_view>& chunks) {
  Outcome o;
  for (std::string_view in : chunks) {
    while (!in.empty()) {
      const auto r = p.feed(in);
      REQUIRE(r.consumed <= in.size());
      in.remove_prefix(r.consumed);
      if (r.status == ReplyParser::Status::Error) {
        o.error = true;
        CHECK_FALSE(p.error().empty());
        return o;
      }
      if (r.status == ReplyParser::Status::NeedMore) {
        REQUIRE(in.empty());
        break;
      }
      const BackendReply& rep = p.reply();
      Got g{rep.code, std::string(rep.raw), {}};
      for (auto l : rep.lines) g.lines.emplace_back(l);
      o.replies.push_back(std::move(g));
    }
  }
  return o;
}

void check_all_splits(std::string_view input, const Outcome& expected) {
  {
    ReplyParser p;
    INFO("whole");
    CHECK(run(p, {input}) == expected);
  }
  {
    ReplyParser p;
    std::vector<std::string_view> bytes;
    for (size_t i = 0; i < input.size(); ++i) bytes.push_back(input.substr(i, 1));
    INFO("byte at a time");
    CHECK(run(p, bytes) == expected);
  }
  for (size_t cut = 0; cut <= input.size(); ++cut) {
    ReplyParser p;
    INFO("split at " << cut);
    CHECK(run(p, {input.substr(0, cut), input.substr(cut)}) == expected);
  }
}

const char* const kEhlo =
    "250-backend.example Hello\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 52428800\r\n"
    "250-STARTTLS\r\n"
    "250-AUTH PLAIN LOGIN CRAM-MD5\r\n"
    "250-AUTH=PLAIN LOGIN\r\n"
    "250-XCLIENT NAME ADDR PROTO HELO LOGIN\r\n"
    "250-ENHANCEDSTATUSCODES\r\n"
    "250-8BITMIME\r\n"
    "250-DSN\r\n"
    "250-SMTPUTF8\r\n"
    "250 CHUNKING\r\n";

}  // namespace

TEST_CASE("reply parser: single-line replies, pipelined", "[reply_parser]") {
  check_all_splits(
      "220 backend ESMTP\r\n250 2.1.0 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
      {{{220, "220 backend ESMTP\r\n", {"backend ESMTP"}},
        {250, "250 2.1.0 Ok\r\n", {"2.1.0 Ok"}},
        {354, "354 End data with <CR><LF>.<CR><LF>\r\n", {"End data with <CR><LF>.<CR><LF>"}}},
       false});
}

TEST_CASE("reply parser: multi-line reply kept intact", "[reply_parser]") {
  Got g{250, kEhlo, {}};
  for (const char* l :
       {"backend.example Hello", "PIPELINING", "SIZE 52428800", "STARTTLS",
        "AUTH PLAIN LOGIN CRAM-MD5", "AUTH=PLAIN LOGIN", "XCLIENT NAME ADDR PROTO HELO LOGIN",
        "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"}) {
    g.lines.emplace_back(l);
  }
  check_all_splits(std::string(kEhlo) + "221 2.0.0 Bye\r\n",
                   {{g, {221, "221 2.0.0 Bye\r\n", {"2.0.0 Bye"}}}, false});
}

TEST_CASE("reply parser: empty text and bare LF", "[reply_parser]") {
  check_all_splits("250 \r\n", {{{250, "250 \r\n", {""}}}, false});
  // A bare LF from the backend is relayed as CRLF.
  check_all_splits("250-a\n250 b\n550 c\r\n",
                   {{{250, "250-a\r\n250 b\r\n", {"a", "b"}}, {550, "550 c\r\n", {"c"}}}, false});
  // A CR inside a line does not end it (only the one before LF does); as text it is not
  // printable, so it reaches nobody as a CR.
  check_all_splits("250 a\rb\r\n", {{{250, "250 a?b\r\n", {"a?b"}}}, false});
}

TEST_CASE("reply parser: text is printable ASCII only", "[reply_parser]") {
  // ESC, NUL, DEL, TAB, 8-bit and a bare CR from a hostile backend become '?', in every line.
  const std::string in("550-5.1.1 bad \x1b[31mred\x00 text\rX\r\n550 5.1.1 \x7f\t\xc3\xa9.ok\r\n",
                       51);
  check_all_splits(in, {{{550,
                          "550-5.1.1 bad ?[31mred? text?X\r\n550 5.1.1 ????.ok\r\n",
                          {"5.1.1 bad ?[31mred? text?X", "5.1.1 ????.ok"}}},
                        false});
}

TEST_CASE("reply parser: malformed lines are errors", "[reply_parser]") {
  for (const char* bad : {"250\r\n", "25 ok\r\n", "250x\r\n", "abc ok\r\n", "650 ok\r\n",
                          "150 ok\r\n", "2a0 ok\r\n", "\r\n", "\n", " 250 ok\r\n"}) {
    INFO(bad);
    check_all_splits(bad, {{}, true});
  }
  // The reply before the bad one is still delivered.
  check_all_splits("250 ok\r\nnonsense\r\n", {{{250, "250 ok\r\n", {"ok"}}}, true});
}

TEST_CASE("reply parser: the code may not change within a reply", "[reply_parser]") {
  check_all_splits("250-a\r\n251 b\r\n", {{}, true});
  check_all_splits("250-a\r\n250-b\r\n550 c\r\n", {{}, true});
}

TEST_CASE("reply parser: an error is sticky", "[reply_parser]") {
  ReplyParser p;
  CHECK(p.feed("xyz\r\n").status == ReplyParser::Status::Error);
  const auto r = p.feed("250 ok\r\n");
  CHECK(r.status == ReplyParser::Status::Error);
  CHECK(r.consumed == 0);
  p.reset();
  CHECK(p.feed("250 ok\r\n").status == ReplyParser::Status::Reply);
}

TEST_CASE("reply parser: size and line limits", "[reply_parser]") {
  std::string many;
  for (size_t i = 0; i + 1 < kMaxReplyLines; ++i) many += "250-x\r\n";
  {
    ReplyParser p;
    const auto o = run(p, {many + "250 last\r\n"});
    REQUIRE(o.replies.size() == 1);
    CHECK(o.replies[0].lines.size() == kMaxReplyLines);
  }
  {
    ReplyParser p;
    CHECK(run(p, {many + "250-x\r\n250 last\r\n"}).error);
  }
  {
    // One endless line: refused before its LF arrives, with the buffer bounded.
    ReplyParser p;
    const std::string chunk(4096, 'a');
    CHECK(p.feed("250 ").status == ReplyParser::Status::NeedMore);
    bool failed = false;
    for (size_t sent = 0; sent <= kMaxReplyBytes && !failed; sent += chunk.size()) {
      failed = p.feed(chunk).status == ReplyParser::Status::Error;
    }
    CHECK(failed);
  }
  {
    const std::string line = "250-" + std::string(996, 'b') + "\r\n";  // 1002 bytes
    std::string big;
    while (big.size() + line.size() <= kMaxReplyBytes - 8) big += line;
    ReplyParser p;
    CHECK(run(p, {big + "250 ok\r\n"}).replies.size() == 1);
    ReplyParser q;
    CHECK(run(q, {big + line + "250 ok\r\n"}).error);
  }
}

TEST_CASE("reply parser: partial() tells whether a reply was cut off", "[reply_parser]") {
  ReplyParser p;
  CHECK_FALSE(p.partial());
  CHECK(p.feed("250-a\r\n25").status == ReplyParser::Status::NeedMore);
  CHECK(p.partial());
  CHECK(p.feed("0 b\r\n").status == ReplyParser::Status::Reply);
  CHECK_FALSE(p.partial());
  CHECK(p.reply().raw == "250-a\r\n250 b\r\n");
}

TEST_CASE("reply parser: reply helpers", "[reply_parser]") {
  ReplyParser p;
  (void)p.feed("354 go\r\n");
  CHECK(p.reply().positive());
  (void)p.feed("451 4.3.0 later\r\n");
  CHECK(p.reply().transient());
  (void)p.feed("535 5.7.8 no\r\n");
  CHECK(p.reply().permanent());
}

TEST_CASE("reply parser: EHLO capabilities", "[reply_parser]") {
  ReplyParser p;
  REQUIRE(p.feed(kEhlo).status == ReplyParser::Status::Reply);
  const EhloCapabilities c = parse_ehlo_capabilities(p.reply());
  CHECK(c.pipelining);
  CHECK(c.size);
  CHECK(c.size_limit == 52428800);
  CHECK(c.starttls);
  CHECK(c.auth);
  CHECK(c.auth_plain);
  CHECK(c.auth_login);
  CHECK(c.xclient);
  CHECK(c.xclient_has(EhloCapabilities::kName));
  CHECK(c.xclient_has(EhloCapabilities::kAddr));
  CHECK(c.xclient_has(EhloCapabilities::kProto));
  CHECK(c.xclient_has(EhloCapabilities::kHelo));
  CHECK(c.xclient_has(EhloCapabilities::kLogin));
  CHECK_FALSE(c.xclient_has(EhloCapabilities::kPort));
  CHECK_FALSE(c.xclient_has(EhloCapabilities::kDestAddr));
  CHECK(c.enhanced_status_codes);
  CHECK(c.eight_bit_mime);
  CHECK(c.smtputf8);
  CHECK(c.chunking);
}

TEST_CASE("reply parser: sparse and odd EHLO replies", "[reply_parser]") {
  ReplyParser p;
  REQUIRE(p.feed("250-host\r\n250-size\r\n250-auth=login\r\n250 xclient  addr\r\n").status ==
          ReplyParser::Status::Reply);
  EhloCapabilities c = parse_ehlo_capabilities(p.reply());
  CHECK(c.size);
  CHECK(c.size_limit == 0);
  CHECK(c.auth);
  CHECK(c.auth_login);
  CHECK_FALSE(c.auth_plain);
  CHECK(c.xclient_has(EhloCapabilities::kAddr));
  CHECK_FALSE(c.starttls);
  CHECK_FALSE(c.pipelining);

  // The greeting line is not a keyword, and a one-line reply has none.
  REQUIRE(p.feed("250 STARTTLS\r\n").status == ReplyParser::Status::Reply);
  CHECK_FALSE(parse_ehlo_capabilities(p.reply()).starttls);

  REQUIRE(p.feed("250-host\r\n250 SIZE 99999999999999999999999\r\n").status ==
          ReplyParser::Status::Reply);
  c = parse_ehlo_capabilities(p.reply());
  CHECK(c.size);
  CHECK(c.size_limit == 0);

  REQUIRE(p.feed("502-host\r\n502 STARTTLS\r\n").status == ReplyParser::Status::Reply);
  CHECK_FALSE(parse_ehlo_capabilities(p.reply()).starttls);
}

TEST_CASE("first_line: a reply's first line without its CRLF", "[reply_parser]") {
  CHECK(first_line("250-mx.example\r\n250 PIPELINING\r\n") == "250-mx.example");
  CHECK(first_line("554 5.7.1 no\r\n") == "554 5.7.1 no");
  CHECK(first_line("no terminator") == "no terminator");
  CHECK(first_line("") == "");
}
