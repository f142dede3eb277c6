#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "fuzz/backend_reply_property.h"
#include "proxy/smtp/reply_check.h"
#include "proxy/smtp/reply_parser.h"

using smtpgate::fuzz::check_backend_reply;
using smtpgate::fuzz::check_backend_reply_bytes;
using smtpgate::fuzz::Conversation;
using smtpgate::fuzz::run_conversation;
using smtpgate::fuzz::ScriptStep;
using smtpgate::smtp::BackendCommand;
using smtpgate::smtp::kMaxReplyBytes;
using smtpgate::smtp::reply_fits;
using smtpgate::smtp::ReplyParser;

namespace {

// Codes around every boundary reply_fits draws, and ones no parser lets through.
constexpr int kCodes[] = {-1,  0,   100, 199, 200, 211, 220, 221, 235, 250, 251, 252,
                          299, 300, 334, 354, 399, 400, 421, 450, 451, 452, 499, 500,
                          501, 530, 535, 550, 554, 599, 600, 650, 999, 2500};

constexpr BackendCommand kAll[] = {BackendCommand::Mail, BackendCommand::Rcpt,
                                   BackendCommand::Data, BackendCommand::DataEnd,
                                   BackendCommand::Rset, BackendCommand::Auth};

// Every code of kCodes that fits `cmd` must be in `fitting`, and no other.
void check_fits(BackendCommand cmd, std::vector<int> fitting) {
  for (int code : kCodes) {
    const bool expected = std::find(fitting.begin(), fitting.end(), code) != fitting.end();
    INFO(to_string(cmd) << " answered " << code);
    CHECK(reply_fits(cmd, code) == expected);
  }
}

const std::vector<int> k2xx = {200, 211, 220, 221, 235, 250, 251, 252, 299};
const std::vector<int> kErrors = {400, 421, 450, 451, 452, 499, 500, 501, 530, 535, 550, 554, 599};

std::vector<int> operator+(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

ScriptStep step(BackendCommand c, bool barrier = false, bool later = false) {
  return {c, barrier, later};
}

std::string trace(const Conversation& c, std::string_view stream,
                  const std::vector<size_t>& cuts = {}) {
  std::string why;
  const auto t = run_conversation(c, stream, cuts, why);
  std::string out;
  for (const auto& s : t) out += (out.empty() ? "" : " ") + s;
  return why.empty() ? out : out + " !" + why;
}

// Cuts after each of the given prefixes (a read per part).
std::vector<size_t> reads(const std::vector<std::string_view>& parts) {
  std::vector<size_t> cuts;
  size_t at = 0;
  for (size_t i = 0; i + 1 < parts.size(); ++i) cuts.push_back(at += parts[i].size());
  return cuts;
}

std::string joined(const std::vector<std::string_view>& parts) {
  std::string s;
  for (auto p : parts) s += p;
  return s;
}

std::string show(std::string_view s) {
  std::string out;
  for (char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (u >= 0x20 && u < 0x7f && ch != '\\') {
      out += ch;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

}  // namespace

TEST_CASE("reply_fits: MAIL, RCPT and end of data take 2xx or an error", "[reply_check]") {
  for (BackendCommand c : {BackendCommand::Mail, BackendCommand::Rcpt, BackendCommand::DataEnd})
    check_fits(c, k2xx + kErrors);
  // Not a 354 (a DATA answer), not a 334 (AUTH's), nothing outside 2xx..5xx.
  CHECK_FALSE(reply_fits(BackendCommand::DataEnd, 354));
  CHECK_FALSE(reply_fits(BackendCommand::Mail, 334));
}

TEST_CASE("reply_fits: DATA takes 354 or an error, never a 2xx", "[reply_check]") {
  check_fits(BackendCommand::Data, std::vector<int>{354} + kErrors);
  // A 250 would say a message was taken that the backend has not seen.
  CHECK_FALSE(reply_fits(BackendCommand::Data, 250));
}

TEST_CASE("reply_fits: AUTH's final reply is 235 or an error", "[reply_check]") {
  // 334 challenges are the exchange's own, handled before reply_fits.
  check_fits(BackendCommand::Auth, std::vector<int>{235} + kErrors);
  CHECK_FALSE(reply_fits(BackendCommand::Auth, 250));
  CHECK_FALSE(reply_fits(BackendCommand::Auth, 334));
}

TEST_CASE("reply_fits: RSET takes 2xx only", "[reply_check]") {
  check_fits(BackendCommand::Rset, k2xx);
}

TEST_CASE("reply_fits: 1xx, 3xx other than 354 and 6xx fit nothing", "[reply_check]") {
  for (BackendCommand c : kAll) {
    for (int code : {100, 199, 300, 334, 399, 600, 650, 999, 0, -1}) {
      if (c == BackendCommand::Data && code == 354) continue;
      INFO(to_string(c) << " answered " << code);
      CHECK_FALSE(reply_fits(c, code));
    }
  }
}

TEST_CASE("reply_check: command names for logs", "[reply_check]") {
  CHECK(to_string(BackendCommand::Mail) == "MAIL");
  CHECK(to_string(BackendCommand::Rcpt) == "RCPT");
  CHECK(to_string(BackendCommand::Data) == "DATA");
  CHECK(to_string(BackendCommand::DataEnd) == "end of data");
  CHECK(to_string(BackendCommand::Rset) == "RSET");
  CHECK(to_string(BackendCommand::Auth) == "AUTH");
}

// ---------------------------------------------------------------- the model of the turns

TEST_CASE("reply turns: a pipelined transaction, one read per burst", "[reply_check][turns]") {
  Conversation c;
  c.script = {step(BackendCommand::Mail), step(BackendCommand::Rcpt), step(BackendCommand::Rcpt),
              step(BackendCommand::Data)};
  const std::vector<std::string_view> parts = {"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n",
                                               "250 queued\r\n"};
  CHECK(trace(c, joined(parts), reads(parts)) == "A1 A2 A3 A4 A5 END");
  // The final dot's reply in the read that held the 354: sent before the dot was.
  CHECK(trace(c, joined(parts)) == "A1 A2 A3 A4 OUT");
  // DATA refused: no dot, so nothing more is owed.
  CHECK(trace(c, "250 ok\r\n250 ok\r\n250 ok\r\n554 no\r\n250 extra\r\n") == "A1 A2 A3 A4 OUT");
}

TEST_CASE("reply turns: never more replies than commands written", "[reply_check][turns]") {
  Conversation c;
  c.script = {step(BackendCommand::Mail)};
  CHECK(trace(c, "250 ok\r\n250 ok\r\n", reads({"250 ok\r\n", "250 ok\r\n"})) == "A1 OUT");
  // A barrier: the RCPT goes out only after MAIL's reply, so it cannot share its read.
  c.script = {step(BackendCommand::Mail), step(BackendCommand::Rcpt, true)};
  CHECK(trace(c, "250 ok\r\n250 ok\r\n") == "A1 OUT");
  CHECK(trace(c, "250 ok\r\n250 ok\r\n", reads({"250 ok\r\n", "250 ok\r\n"})) == "A1 A2 END");
}

TEST_CASE("reply turns: a reply that does not fit fails the conversation", "[reply_check][turns]") {
  Conversation c;
  c.script = {step(BackendCommand::Mail), step(BackendCommand::Data)};
  CHECK(trace(c, "250 ok\r\n250 taken?\r\n") == "A1 UNFIT");
  c.script = {step(BackendCommand::Rset)};
  CHECK(trace(c, "550 no\r\n") == "UNFIT");
  c.script = {step(BackendCommand::Mail)};
  CHECK(trace(c, "354 go\r\n") == "UNFIT");
}

TEST_CASE("reply turns: AUTH challenges, one per read", "[reply_check][turns]") {
  Conversation c;
  c.script = {step(BackendCommand::Auth), step(BackendCommand::Mail)};
  const std::vector<std::string_view> parts = {"334 VXNlcm5hbWU6\r\n", "334 UGFzc3dvcmQ6\r\n",
                                               "235 ok\r\n", "250 ok\r\n"};
  CHECK(trace(c, joined(parts), reads(parts)) == "C C A1 A2 END");
  // The next challenge in the read of the previous one: before the answer was written.
  CHECK(trace(c, joined(parts)) == "C OUT");
  // A 334 fits no other command.
  c.script = {step(BackendCommand::Mail)};
  CHECK(trace(c, "334 what\r\n") == "UNFIT");
}

TEST_CASE("reply turns: the handshake owes one reply per read", "[reply_check][turns]") {
  Conversation c;
  c.handshake_steps = 2;
  c.script = {step(BackendCommand::Mail)};  // given early: held until the handshake is done
  const std::vector<std::string_view> parts = {"220 hi\r\n", "250-x\r\n250 PIPELINING\r\n",
                                               "250 ok\r\n"};
  CHECK(trace(c, joined(parts), reads(parts)) == "H H A1 END");
  CHECK(trace(c, joined(parts)) == "H OUT");
  CHECK(trace(c, "554 go away\r\n") == "HSFAIL");
}

TEST_CASE("reply turns: without PIPELINING one command at a time, in order",
          "[reply_check][turns]") {
  Conversation c;
  c.pipelining = false;
  c.script = {step(BackendCommand::Mail), step(BackendCommand::Rcpt),
              step(BackendCommand::Rcpt, false, true)};
  const std::vector<std::string_view> parts = {"250 ok\r\n", "250 ok\r\n", "250 ok\r\n"};
  CHECK(trace(c, joined(parts), reads(parts)) == "A1 A2 A3 END");
  CHECK(trace(c, joined(parts)) == "A1 OUT");
  // The earlier BackendClient::send wrote a command given while none was owed at once, ahead
  // of the held ones: here RCPT 3, given from the handler of MAIL's reply, overtakes RCPT 2.
  c.send_overtakes_held = true;
  CHECK(trace(c, joined(parts), reads(parts)) == "A1 !commands written out of the session's order");
}

TEST_CASE("reply turns: cut differently, runs agree until one refuses out of turn",
          "[reply_check][turns]") {
  using smtpgate::fuzz::same_until_out_of_turn;
  CHECK(same_until_out_of_turn({"A1", "A2", "END"}, {"A1", "OUT"}));
  CHECK(same_until_out_of_turn({"A1", "OUT"}, {"A1", "A2", "UNFIT"}));
  CHECK_FALSE(same_until_out_of_turn({"A1", "UNFIT"}, {"A1", "A2", "END"}));
  CHECK_FALSE(same_until_out_of_turn({"A1", "END"}, {"A1", "A2", "END"}));
}

// ---------------------------------------------------------------- the parser at its limit

TEST_CASE("reply parser: a reply of exactly kMaxReplyBytes ending in LF is accepted",
          "[reply_check][reply_parser]") {
  const std::string reply = "250 " + std::string(kMaxReplyBytes - 6, 'x') + "\n";
  ReplyParser p;
  REQUIRE(p.feed(reply).status == ReplyParser::Status::Reply);
  CHECK(p.reply().raw.size() == kMaxReplyBytes);
  ReplyParser q;
  CHECK(q.feed(reply.substr(0, reply.size() - 1) + "x\n").status == ReplyParser::Status::Error);
}

// The CR before a line's LF is part of the CRLF stored, not counted twice.
TEST_CASE("reply parser: a reply of exactly kMaxReplyBytes ending in CRLF is accepted",
          "[reply_check][reply_parser]") {
  const std::string reply = "250 " + std::string(kMaxReplyBytes - 6, 'x') + "\r\n";
  ReplyParser p;
  REQUIRE(p.feed(reply).status == ReplyParser::Status::Reply);
  CHECK(p.reply().raw.size() == kMaxReplyBytes);
  // Split between CR and LF too.
  ReplyParser q;
  CHECK(q.feed(reply.substr(0, reply.size() - 1)).status == ReplyParser::Status::NeedMore);
  REQUIRE(q.feed("\n").status == ReplyParser::Status::Reply);
  CHECK(q.reply().raw.size() == kMaxReplyBytes);
  ReplyParser r;
  CHECK(r.feed("250 x" + reply.substr(4)).status == ReplyParser::Status::Error);
}

// ---------------------------------------------------------------- the fuzz property

namespace {

// What an honest backend says to the script (a choice of answers for each command).
std::string honest_replies(const Conversation& c, std::mt19937& rng) {
  std::string s;
  for (unsigned i = 0; i < c.handshake_steps; ++i)
    s += i == 0 ? "220 backend ESMTP\r\n" : "250-backend\r\n250 PIPELINING\r\n";
  for (const ScriptStep& st : c.script) {
    switch (st.cmd) {
      case BackendCommand::Mail:
      case BackendCommand::Rcpt:
        s += rng() % 5 != 0 ? "250 2.1.0 ok\r\n" : "550-5.1.1 no\r\n550 5.1.1 such user\r\n";
        break;
      case BackendCommand::Rset:
        s += "250 2.0.0 reset\r\n";
        break;
      case BackendCommand::Data:
        s += rng() % 4 != 0 ? "354 go ahead\r\n250 2.0.0 queued\r\n" : "554 5.5.1 no\r\n";
        break;
      case BackendCommand::Auth:
        s += "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n";
        s += rng() % 3 != 0 ? "235 2.7.0 ok\r\n" : "535 5.7.8 no\r\n";
        break;
      case BackendCommand::DataEnd:
        break;
    }
  }
  return s;
}

}  // namespace

TEST_CASE("backend replies: fuzz property on seeded random conversations",
          "[reply_check][property]") {
  // Pieces of replies and the bytes that trip parsers.
  static const char* const kPieces[] = {"250 ok\r\n",
                                        "354 go\r\n",
                                        "334 VXNlcm5hbWU6\r\n",
                                        "235 ok\r\n",
                                        "550 5.1.1 no\r\n",
                                        "421 bye\r\n",
                                        "250-",
                                        "250 ",
                                        "354 ",
                                        "550-",
                                        "220 ",
                                        "199 ",
                                        "600 ",
                                        "25",
                                        "0",
                                        " ",
                                        "-",
                                        "text",
                                        "\r\n",
                                        "\n",
                                        "\r",
                                        "" /* a NUL */,
                                        "\x1b[31m",
                                        "\x7f",
                                        "\xc3\xa9",
                                        "\t"};
  static const BackendCommand kCommands[] = {BackendCommand::Mail, BackendCommand::Rcpt,
                                             BackendCommand::Data, BackendCommand::Rset,
                                             BackendCommand::Auth};
  std::mt19937 rng(20250301);
  for (int n = 0; n < 4000; ++n) {
    Conversation c;
    c.handshake_steps = rng() % 4 == 0 ? 1 + rng() % 2 : 0;
    c.pipelining = rng() % 4 != 0;
    c.dot_later = rng() % 2 == 0;
    const size_t steps = rng() % 10;
    for (size_t i = 0; i < steps; ++i) {
      c.script.push_back({kCommands[rng() % std::size(kCommands)], rng() % 4 == 0, rng() % 4 == 0});
    }
    // Mostly what an honest backend says, with a few pieces put in or bytes changed; now and
    // then pieces glued at random.
    std::string stream;
    if (n % 4 != 0) {
      stream = honest_replies(c, rng);
      for (unsigned m = rng() % 3; m > 0 && !stream.empty(); --m) {
        const size_t at = rng() % stream.size();
        switch (rng() % 3) {
          case 0: {
            const char* p = kPieces[rng() % std::size(kPieces)];
            stream.insert(at, *p == '\0' ? std::string(1, '\0') : std::string(p));
            break;
          }
          case 1:
            stream[at] = "2345\r\n -x"[rng() % 10];
            break;
          default:
            stream.erase(at, 1 + rng() % 8);
            break;
        }
      }
    } else {
      for (size_t i = rng() % 24; i > 0; --i) {
        const char* p = kPieces[rng() % std::size(kPieces)];
        if (*p == '\0') {
          stream.push_back('\0');
        } else {
          stream += p;
        }
      }
    }
    const std::string why = check_backend_reply(c, stream, static_cast<uint32_t>(rng()));
    if (!why.empty()) FAIL_CHECK(why << " on: " << show(stream));
  }
}

TEST_CASE("backend replies: fuzz property at the size and line limits", "[reply_check][property]") {
  // The decoder's limit prefixes with every delta, ended by lines of a few lengths.
  for (uint8_t kind : {1, 2}) {
    for (int delta = 0; delta < 16; ++delta) {
      for (const char* end : {"250 0123456789\r\n", "250 0123456789\n", "250 \r\n250 ok\r\n",
                              "250-abc\r\n250 d\r\n", "251 x\r\n", "250 012345"}) {
        std::string in = {static_cast<char>(4 | (kind << 4)), 9, static_cast<char>(0x20 | delta), 0,
                          1};
        in += end;
        const std::string why =
            check_backend_reply_bytes(reinterpret_cast<const uint8_t*>(in.data()), in.size());
        if (!why.empty())
          FAIL_CHECK(why << " kind " << static_cast<int>(kind) << " delta " << delta - 8 << " end "
                         << show(end));
      }
    }
  }
}

TEST_CASE("backend replies: the fuzz target's seeds hold the property", "[reply_check][property]") {
  const std::filesystem::path dir =
      std::filesystem::path(SMTPGATE_SOURCE_DIR) / "tests/fuzz/seeds/fuzz_backend_reply";
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ifstream f(e.path(), std::ios::binary);
    const std::string in((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    INFO(e.path().filename().string());
    CHECK(check_backend_reply_bytes(reinterpret_cast<const uint8_t*>(in.data()), in.size()) == "");
    ++seen;
  }
  CHECK(seen > 0);
}
