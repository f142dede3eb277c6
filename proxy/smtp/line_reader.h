// Incremental splitter of the client's command stream into lines, with a hard length limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace smtpgate::smtp {

// Longest command line, in octets including CRLF (SPEC §3, RFC 5321 §4.5.3.1.4 allows 512;
// the gateway is more lenient).
inline constexpr size_t kMaxCommandLine = 1000;
// Longest SASL response line (an AUTH continuation), in octets including CRLF.
inline constexpr size_t kMaxSaslLine = 12288;
// The largest limit a LineReader accepts; its buffer never grows past this.
inline constexpr size_t kMaxLineLimit = kMaxSaslLine;

// Splits bytes into lines ending at LF (a preceding CR is stripped, a bare LF accepted),
// delivering complete lines without copying and buffering only a partial line.
//
// Drive it one line at a time, so the session can switch to DATA or SASL mode exactly
// after the line that asked for it:
//
//   while (!in.empty()) {
//     auto r = reader.feed(in, kMaxCommandLine);
//     in.remove_prefix(r.consumed);
//     if (r.status == LineReader::Status::NeedMore) break;  // all of `in` was taken
//     ...handle r (Line or TooLong)...
//   }
//
// Length rule: a line is too long when its text (without the terminator) is longer than
// `limit - 2`, i.e. when it would exceed `limit` octets with CRLF; a bare LF counts as CRLF,
// so "line too long" does not depend on how the client ends its lines. A too-long line is
// discarded up to its LF and reported once, as TooLong, at the position of that LF, so the
// 500 reply keeps its place among pipelined commands.
class LineReader {
 public:
  enum class Status : uint8_t {
    NeedMore,  // all input consumed; no complete line yet
    Line,      // `line` holds one line
    TooLong,   // one over-long line was discarded, up to and including its LF
  };

  struct Result {
    Status status = Status::NeedMore;
    size_t consumed = 0;    // bytes of the input taken by this call
    std::string_view line;  // without CR/LF; valid until the next feed() or reset()
    bool bare_lf = false;   // the line ended in LF without CR
  };

  LineReader() = default;
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Consumes input up to and including the first LF (or all of it) and reports at most one
  // line. `limit` must be in [3, kMaxLineLimit]; it may change between calls (command vs.
  // SASL mode) and applies to the line being read when the call is made.
  Result feed(std::string_view input, size_t limit);

  // Drops a partial line and any discard in progress (STARTTLS discards plaintext).
  void reset();

  // Bytes of a partial line held, or true while an over-long line is being skipped: lets the
  // session tell whether anything followed a command (e.g. pipelining after STARTTLS).
  size_t buffered() const { return len_; }
  bool discarding() const { return discarding_; }

 private:
  static constexpr size_t kKeepCapacity = 512;
  std::string buf_;          // a partial line; never longer than the limit, shrunk when idle
  size_t len_ = 0;           // bytes of the partial line in buf_ (a trailing CR included)
  bool discarding_ = false;  // skipping the rest of an over-long line
  bool release_ = false;     // the last result pointed into buf_: empty it on the next call
};

}  // namespace smtpgate::smtp
