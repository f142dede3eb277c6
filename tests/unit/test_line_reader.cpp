#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "proxy/smtp/line_reader.h"

using smtpgate::smtp::kMaxCommandLine;
using smtpgate::smtp::kMaxSaslLine;
using smtpgate::smtp::LineReader;

namespace {

struct Event {
  LineReader::Status status;
  std::string line;
  bool bare_lf;
  bool operator==(const Event&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Event& e) {
  return os << "{" << static_cast<int>(e.status) << ", \"" << e.line << "\", " << e.bare_lf << "}";
}

// Feeds `chunks` in order, one line per call as the session does.
std::vector<Event> run(LineReader& r, const std::vector<std::string_view>& chunks, size_t limit) {
  std::vector<Event> out;
  for (std::string_view in : chunks) {
    while (!in.empty()) {
      const auto res = r.feed(in, limit);
      REQUIRE(res.consumed <= in.size());
      in.remove_prefix(res.consumed);
      if (res.status == LineReader::Status::NeedMore) {
        REQUIRE(in.empty());
        break;
      }
      REQUIRE(res.consumed > 0);
      out.push_back({res.status, std::string(res.line), res.bare_lf});
      REQUIRE(r.buffered() < limit);
    }
  }
  return out;
}

// Every way the STYLE asks for: whole, byte at a time, and split at every point.
void check_all_splits(std::string_view input, const std::vector<Event>& expected,
                      size_t limit = kMaxCommandLine) {
  {
    LineReader r;
    INFO("whole");
    CHECK(run(r, {input}, limit) == expected);
  }
  {
    LineReader r;
    std::vector<std::string_view> bytes;
    for (size_t i = 0; i < input.size(); ++i) bytes.push_back(input.substr(i, 1));
    INFO("byte at a time");
    CHECK(run(r, bytes, limit) == expected);
  }
  for (size_t cut = 0; cut <= input.size(); ++cut) {
    LineReader r;
    INFO("split at " << cut);
    CHECK(run(r, {input.substr(0, cut), input.substr(cut)}, limit) == expected);
  }
}

constexpr auto kLine = LineReader::Status::Line;
constexpr auto kTooLong = LineReader::Status::TooLong;

}  // namespace

TEST_CASE("line reader: pipelined CRLF lines", "[line_reader]") {
  check_all_splits("EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
                   {{kLine, "EHLO a", false},
                    {kLine, "MAIL FROM:<a@b>", false},
                    {kLine, "RCPT TO:<c@d>", false},
                    {kLine, "DATA", false}});
}

TEST_CASE("line reader: bare LF ends a line and is reported", "[line_reader]") {
  check_all_splits(
      "NOOP\nQUIT\r\n\n\r\n",
      {{kLine, "NOOP", true}, {kLine, "QUIT", false}, {kLine, "", true}, {kLine, "", false}});
}

TEST_CASE("line reader: only the CR right before LF is stripped", "[line_reader]") {
  check_all_splits("A\rB\r\r\nC\r", {{kLine, "A\rB\r", false}});
  LineReader r;
  CHECK(run(r, {"A\rB\r\r\nC\r"}, kMaxCommandLine).size() == 1);
  CHECK(r.buffered() == 2);  // "C\r" waits for its LF
}

TEST_CASE("line reader: a partial line waits", "[line_reader]") {
  LineReader r;
  auto res = r.feed("HELO exa", kMaxCommandLine);
  CHECK(res.status == LineReader::Status::NeedMore);
  CHECK(res.consumed == 8);
  CHECK(r.buffered() == 8);
  res = r.feed("mple\r\nQUIT\r\n", kMaxCommandLine);
  CHECK(res.status == kLine);
  CHECK(res.line == "HELO example");
  CHECK(res.consumed == 6);
  res = r.feed("QUIT\r\n", kMaxCommandLine);
  CHECK(res.line == "QUIT");
  CHECK(r.buffered() == 0);
}

TEST_CASE("line reader: a line complete in one chunk is not copied", "[line_reader]") {
  LineReader r;
  const std::string_view in = "NOOP\r\nQUIT\r\n";
  auto res = r.feed(in, kMaxCommandLine);
  CHECK(res.line.data() == in.data());
  res = r.feed(in.substr(res.consumed), kMaxCommandLine);
  CHECK(res.line.data() == in.data() + 6);
}

TEST_CASE("line reader: the limit counts CRLF, for CRLF and bare LF alike", "[line_reader]") {
  const std::string ok(kMaxCommandLine - 2, 'a');
  const std::string over(kMaxCommandLine - 1, 'a');
  check_all_splits(ok + "\r\n", {{kLine, ok, false}});
  check_all_splits(ok + "\n", {{kLine, ok, true}});
  check_all_splits(over + "\r\n", {{kTooLong, "", false}});
  check_all_splits(over + "\n", {{kTooLong, "", false}});
}

TEST_CASE("line reader: an over-long line is skipped and reported once, in order",
          "[line_reader]") {
  const std::string big(5000, 'x');
  check_all_splits("NOOP\r\n" + big + "\r\nRSET\r\n" + big + "\nQUIT\r\n",
                   {{kLine, "NOOP", false},
                    {kTooLong, "", false},
                    {kLine, "RSET", false},
                    {kTooLong, "", false},
                    {kLine, "QUIT", false}});
}

TEST_CASE("line reader: the buffer stays within the limit while discarding", "[line_reader]") {
  LineReader r;
  for (int i = 0; i < 100; ++i) {
    CHECK(r.feed(std::string(300, 'y'), kMaxCommandLine).status == LineReader::Status::NeedMore);
    CHECK(r.buffered() < kMaxCommandLine);
  }
  CHECK(r.discarding());
  CHECK(r.feed("\r\n", kMaxCommandLine).status == kTooLong);
  CHECK_FALSE(r.discarding());
  CHECK(r.feed("QUIT\r\n", kMaxCommandLine).line == "QUIT");
}

TEST_CASE("line reader: SASL lines get the larger limit", "[line_reader]") {
  const std::string b64(kMaxSaslLine - 2, 'Q');
  check_all_splits(b64 + "\r\n", {{kLine, b64, false}}, kMaxSaslLine);
  check_all_splits(b64 + "QQ\r\n*\r\n", {{kTooLong, "", false}, {kLine, "*", false}}, kMaxSaslLine);
}

TEST_CASE("line reader: a smaller limit applies to a line already buffered", "[line_reader]") {
  LineReader r;
  CHECK(r.feed(std::string(2000, 'z'), kMaxSaslLine).status == LineReader::Status::NeedMore);
  CHECK(r.feed("\r\n", kMaxCommandLine).status == kTooLong);
}

TEST_CASE("line reader: reset drops a partial line and a discard", "[line_reader]") {
  LineReader r;
  (void)r.feed("MAIL FROM:<evil@x>", kMaxCommandLine);
  r.reset();
  CHECK(r.buffered() == 0);
  CHECK(r.feed("EHLO a\r\n", kMaxCommandLine).line == "EHLO a");
  (void)r.feed(std::string(3000, 'a'), kMaxCommandLine);
  CHECK(r.discarding());
  r.reset();
  CHECK(r.feed("EHLO b\r\n", kMaxCommandLine).line == "EHLO b");
}

TEST_CASE("line reader: empty input needs more", "[line_reader]") {
  LineReader r;
  const auto res = r.feed({}, kMaxCommandLine);
  CHECK(res.status == LineReader::Status::NeedMore);
  CHECK(res.consumed == 0);
}
