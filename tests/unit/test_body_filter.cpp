#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

#include "fuzz/body_filter_property.h"
#include "proxy/smtp/body_filter.h"

using smtpgate::BareNewline;
using smtpgate::fuzz::BodyRun;
using smtpgate::fuzz::check_body_filter;
using smtpgate::fuzz::reference_boundary;
using smtpgate::fuzz::run_body_filter;
using smtpgate::smtp::BodyFilter;

namespace {

using Status = BodyFilter::Status;
constexpr uint64_t kNoLimit = UINT64_MAX;

std::string show(std::string_view s) {
  std::string o;
  for (char c : s) {
    if (c == '\r') {
      o += "\\r";
    } else if (c == '\n') {
      o += "\\n";
    } else {
      o += c;
    }
  }
  return o;
}

// Runs `input` whole, byte at a time, split at every point and at every pair of points, and
// checks that each gives `status`, exactly `out`, and `consumed`; then checks the shared
// property (canonical output, same boundary as a plain CRLF.CRLF scanner).
void expect(BareNewline mode, std::string_view input, Status status, std::string_view out,
            size_t consumed, uint64_t max_bytes = kNoLimit) {
  INFO("input: " << show(input) << (mode == BareNewline::Reject ? " (reject)" : " (normalize)"));
  std::vector<std::vector<size_t>> splits{{}};
  std::vector<size_t> bytes;
  for (size_t i = 1; i < input.size(); ++i) bytes.push_back(i);
  splits.push_back(bytes);
  for (size_t a = 1; a < input.size(); ++a) {
    splits.push_back({a});
    for (size_t b = a + 1; b < input.size(); ++b) splits.push_back({a, b});
  }
  for (const auto& cuts : splits) {
    const BodyRun r = run_body_filter(mode, max_bytes, input, cuts);
    INFO("cuts: " << cuts.size() << (cuts.empty() ? 0 : cuts.front()));
    CHECK(r.status == status);
    CHECK(show(r.out) == show(out));
    CHECK(r.consumed == consumed);
  }
  CHECK(check_body_filter(mode, max_bytes, input, 7).empty());
}

void expect_both(std::string_view input, Status status, std::string_view out, size_t consumed) {
  expect(BareNewline::Reject, input, status, out, consumed);
  expect(BareNewline::Normalize, input, status, out, consumed);
}

}  // namespace

TEST_CASE("body filter: a plain message", "[body_filter]") {
  const std::string_view msg = "Subject: hi\r\n\r\nbody line\r\n.\r\n";
  expect_both(msg, Status::End, "Subject: hi\r\n\r\nbody line\r\n", msg.size());
  BodyFilter f(BareNewline::Reject, kNoLimit);
  std::string out;
  (void)f.feed(msg, out);
  CHECK(f.ended());
  CHECK(f.body_bytes() == msg.size() - 3);
  CHECK_FALSE(f.oversize());
}

TEST_CASE("body filter: end of data at the very start is an empty message", "[body_filter]") {
  expect_both(".\r\n", Status::End, "", 3);
  expect_both(".\r\nQUIT\r\n", Status::End, "", 3);
  expect_both("\r\n.\r\n", Status::End, "\r\n", 5);
}

TEST_CASE("body filter: bytes after the end are left for the command reader", "[body_filter]") {
  expect_both("a\r\n.\r\nMAIL FROM:<x@y>\r\n", Status::End, "a\r\n", 6);
  BodyFilter f(BareNewline::Reject, kNoLimit);
  std::string out;
  CHECK(f.feed("a\r\n.\r\nQUIT\r\n", out).consumed == 6);
  const auto again = f.feed("QUIT\r\n", out);
  CHECK(again.status == Status::End);
  CHECK(again.consumed == 0);
  CHECK(out == "a\r\n");
}

TEST_CASE("body filter: dot-stuffing is forwarded byte for byte", "[body_filter]") {
  expect_both("..x\r\n..\r\n...\r\n.x\r\n.\r\n", Status::End, "..x\r\n..\r\n...\r\n.x\r\n", 21);
  expect_both("..\r\n.\r\n", Status::End, "..\r\n", 7);
  expect_both("a.\r\n.b\r\n.\r\n", Status::End, "a.\r\n.b\r\n", 11);
}

TEST_CASE("body filter: nothing is emitted early", "[body_filter]") {
  BodyFilter f(BareNewline::Normalize, kNoLimit);
  std::string out;
  CHECK(f.feed("abc\r", out).status == Status::NeedMore);
  CHECK(out == "abc");  // the CR waits for its LF
  CHECK(f.feed("\n.", out).status == Status::NeedMore);
  CHECK(out == "abc\r\n");  // the "." waits: it may be the end
  CHECK(f.feed("\r", out).status == Status::NeedMore);
  CHECK(out == "abc\r\n");
  CHECK(f.feed("\n", out).status == Status::End);
  CHECK(out == "abc\r\n");
  CHECK(f.body_bytes() == 5);
}

TEST_CASE("body filter: long lines are streamed", "[body_filter]") {
  BodyFilter f(BareNewline::Reject, kNoLimit);
  std::string out;
  const std::string chunk(1 << 16, 'x');
  for (int i = 0; i < 64; ++i) CHECK(f.feed(chunk, out).status == Status::NeedMore);
  CHECK(out.size() == chunk.size() * 64);
  CHECK(f.feed("\r\n.\r\n", out).status == Status::End);
  CHECK(f.body_bytes() == chunk.size() * 64 + 2);
}

TEST_CASE("body filter: smuggling variants in reject mode", "[body_filter][smuggling]") {
  const auto R = BareNewline::Reject;
  // Each hides a "." line behind a bare LF or CR: all stop the session.
  expect(R, "a\n.\r\nMAIL FROM:<evil>\r\n", Status::BareNewline, "a", 2);
  expect(R, "a\r\n.\nMAIL FROM:<evil>\r\n", Status::BareNewline, "a\r\n", 5);
  expect(R, "a\r.\rMAIL FROM:<evil>\r\n", Status::BareNewline, "a", 2);
  expect(R, "a\n.\nMAIL FROM:<evil>\r\n", Status::BareNewline, "a", 2);
  expect(R, "a\r\n.\r\r\nMAIL FROM:<evil>\r\n", Status::BareNewline, "a\r\n", 5);
  expect(R, "a\r\n.\rx", Status::BareNewline, "a\r\n", 5);
  expect(R, "\n.\r\n", Status::BareNewline, "", 1);
  expect(R, ".\n", Status::BareNewline, "", 2);
  expect(R, "\r.\r\n", Status::BareNewline, "", 1);
  expect(R, "a\rb\r\n.\r\n", Status::BareNewline, "a", 2);
  expect(R, "a\r\r\n.\r\n", Status::BareNewline, "a", 2);
  // A bare newline after the end belongs to the next command, not the body.
  expect(R, "a\r\n.\r\n\n", Status::End, "a\r\n", 6);
}

TEST_CASE("body filter: smuggling variants in normalize mode", "[body_filter][smuggling]") {
  const auto N = BareNewline::Normalize;
  // The "." lines are not end of data here; forwarded stuffed, they cannot be one there.
  expect(N, "a\n.\r\nb\r\n.\r\n", Status::End, "a\r\n..\r\nb\r\n", 11);
  expect(N, "a\r\n.\nb\r\n.\r\n", Status::End, "a\r\n..\r\nb\r\n", 11);
  expect(N, "a\r.\rb\r\n.\r\n", Status::End, "a\r\n..\r\nb\r\n", 10);
  expect(N, "a\n.\nb\r\n.\r\n", Status::End, "a\r\n..\r\nb\r\n", 10);
  expect(N, "a\r\n.\r\r\nb\r\n.\r\n", Status::End, "a\r\n..\r\n\r\nb\r\n", 13);
  expect(N, "\n.\r\n.\r\n", Status::End, "\r\n..\r\n", 7);
  expect(N, ".\n.\r\n.\r\n", Status::End, "..\r\n..\r\n", 8);
  expect(N, ".\r.\r\n.\r\n", Status::End, "..\r\n..\r\n", 8);
  expect(N, "\r.\r\n.\r\n", Status::End, "\r\n..\r\n", 7);
  expect(N, "a\n.\n.\r\n.\r\n", Status::End, "a\r\n..\r\n..\r\n", 10);
  // Stuffed lines after bare newlines stay as sent.
  expect(N, "a\n..\n..x\r\n.\r\n", Status::End, "a\r\n..\r\n..x\r\n", 13);
  // Other bare newlines become CRLF.
  expect(N, "a\rb\nc\r\r\n\n\r\n.\r\n", Status::End, "a\r\nb\r\nc\r\n\r\n\r\n\r\n", 14);
  // A "." line that merely follows a bare newline is stuffed even when it ends in CRLF.
  expect(N, "a\n.\r\n", Status::NeedMore, "a\r\n..\r\n", 5);
  // A message that never sends a true CRLF.CRLF never ends.
  expect(N, "a\n.\n", Status::NeedMore, "a\r\n..\r\n", 4);
  expect(N, "a\r\n.\r", Status::NeedMore, "a\r\n", 5);
}

TEST_CASE("body filter: the terminator split across chunks", "[body_filter]") {
  const std::string_view msg = "line one\r\nline two\r\n.\r\n";
  for (size_t a = 0; a <= msg.size(); ++a) {
    for (auto mode : {BareNewline::Reject, BareNewline::Normalize}) {
      BodyFilter f(mode, kNoLimit);
      std::string out;
      const auto r1 = f.feed(msg.substr(0, a), out);
      if (a < msg.size()) {
        CHECK(r1.status == Status::NeedMore);
        const auto r2 = f.feed(msg.substr(a), out);
        CHECK(r2.status == Status::End);
        CHECK(r2.consumed == msg.size() - a);
      } else {
        CHECK(r1.status == Status::End);
      }
      CHECK(out == "line one\r\nline two\r\n");
      CHECK(f.body_bytes() == msg.size() - 3);
    }
  }
}

TEST_CASE("body filter: oversize bodies are scanned to the end, not forwarded", "[body_filter]") {
  for (auto mode : {BareNewline::Reject, BareNewline::Normalize}) {
    // 12 body bytes: at the limit passes, one under fails.
    expect(mode, "0123456789\r\n.\r\n", Status::End, "0123456789\r\n", 15, 12);
    expect(mode, "0123456789\r\n.\r\n", Status::End, "0123456789", 15, 11);
    expect(mode, "0123456789\r\n.\r\n", Status::End, "01234", 15, 5);
    expect(mode, "0123456789\r\n.\r\nQUIT\r\n", Status::End, "", 15, 0);
    expect(mode, ".\r\n", Status::End, "", 3, 0);

    BodyFilter f(mode, 100);
    std::string out;
    const std::string chunk(64, 'x');
    for (int i = 0; i < 10; ++i) CHECK(f.feed(chunk, out).status == Status::NeedMore);
    CHECK(f.oversize());
    CHECK(out.size() == 100);
    CHECK(f.feed("\r\n.\r\n", out).status == Status::End);
    CHECK(f.body_bytes() == 642);
    CHECK(out.size() == 100);
  }
  // Normalized newlines count as the client's bytes, not as what is forwarded.
  expect(BareNewline::Normalize, "a\nb\n\r\n.\r\n", Status::End, "a\r\nb\r\n\r\n", 9, 6);
  // Reject mode still reports a bare newline after the limit.
  expect(BareNewline::Reject, "0123456789\n.\r\n", Status::BareNewline, "01", 11, 2);
}

TEST_CASE("body filter: canonical input gives the same result in both modes", "[body_filter]") {
  const std::string_view msg = "From: a\r\n\r\n..dot\r\n\r\n.\r\n";
  const BodyRun r = run_body_filter(BareNewline::Reject, kNoLimit, msg, {});
  const BodyRun n = run_body_filter(BareNewline::Normalize, kNoLimit, msg, {});
  CHECK(r == n);
  CHECK(r.out == msg.substr(0, msg.size() - 3));
  CHECK(reference_boundary(msg) == msg.size() - 3);
}

TEST_CASE("body filter: fuzz property on seeded random inputs", "[body_filter][property]") {
  // Bytes that matter to the filter come often, so short inputs cover the state machine.
  static constexpr char kAlphabet[] = {'\r', '\n', '.', '\r', '\n', '.', 'a', '\x80', '\0'};
  std::mt19937 rng(20240611);
  const uint64_t limits[] = {0, 1, 4, 9, 33, kNoLimit};
  int checked = 0;
  for (int n = 0; n < 6000; ++n) {
    std::string input;
    const size_t len = rng() % 48;
    for (size_t i = 0; i < len; ++i) input += kAlphabet[rng() % sizeof(kAlphabet)];
    // Half the cases start with a clean message so End is reached often.
    if (n % 2 == 0) input += "\r\n.\r\n";
    const auto mode = n % 3 == 0 ? BareNewline::Reject : BareNewline::Normalize;
    const uint64_t max = limits[rng() % std::size(limits)];
    const std::string why = check_body_filter(mode, max, input, static_cast<uint32_t>(rng()));
    if (!why.empty()) {
      FAIL_CHECK(why << " on " << show(input) << " max=" << max
                     << (mode == BareNewline::Reject ? " reject" : " normalize"));
    }
    ++checked;
  }
  CHECK(checked == 6000);
}

TEST_CASE("body filter: a newline is found at every offset of a long run", "[body_filter]") {
  for (size_t at = 0; at < 40; ++at) {
    for (const char* nl : {"\r\n", "\n", "\r"}) {
      std::string body(at, 'x');
      body += nl;
      body += std::string(45 - at, 'y');
      const std::string input = body + "\r\n.\r\n";
      for (auto mode : {BareNewline::Reject, BareNewline::Normalize}) {
        INFO("at " << at << " nl " << show(nl));
        CHECK(check_body_filter(mode, kNoLimit, input, static_cast<uint32_t>(at)).empty());
        const BodyRun r = run_body_filter(mode, kNoLimit, input, {});
        if (std::string_view(nl) == "\r\n" || mode == BareNewline::Normalize) {
          CHECK(r.status == Status::End);
          CHECK(r.out == std::string(at, 'x') + "\r\n" + std::string(45 - at, 'y') + "\r\n");
        } else {
          CHECK(r.status == Status::BareNewline);
          CHECK(r.out == std::string(at, 'x'));
        }
      }
    }
  }
}
