// The DATA-phase stream filter: finds end of data and makes the forwarded body canonical.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "policy/policy.h"

namespace smtpgate::smtp {

// Streams a message body from the client to the backend so that the backend can never see a
// message boundary the gateway did not see (SMTP smuggling).
//
// * End of data is exactly CRLF "." CRLF; the start of DATA counts as the start of a line,
//   so ".\r\n" first is an empty message. The terminator is never written to `out`: the
//   session sends ".\r\n" itself when it decides to commit.
// * Dot-stuffing is kept byte for byte ("..x" is forwarded as "..x").
// * BareNewline::Reject: a bare LF or a bare CR anywhere stops the filter with BareNewline
//   (the session answers 521 and closes). Forwarded bytes are then exactly the client's.
// * BareNewline::Normalize: each bare LF and each bare CR becomes CRLF in `out`. A line
//   that is just "." but is not end of data (because it began or ended with a bare LF/CR)
//   is forwarded as ".." CRLF, so `out` is canonical CRLF and never holds CRLF "." CRLF.
// * Bytes whose meaning depends on what follows (a CR; a "." at the start of a line; ".\r")
//   are held as state, not emitted, until the next byte arrives.
// * Size: body_bytes() counts the client's bytes before the terminator (CRLF before "."
//   included). Once it passes max_bytes, nothing more is appended to `out` (which then
//   holds a cut-off body that must never be committed), but the stream is still scanned
//   to its end so the session can answer 552 at the right place.
// * `out` depends only on the bytes, never on how they were split into chunks.
// Lines of any length are streamed; the filter holds no line buffer and allocates nothing
// itself (only `out`, the caller's buffer, grows).
class BodyFilter {
 public:
  enum class Status : uint8_t {
    NeedMore,     // all input consumed, end of data not seen yet
    End,          // end of data: `consumed` stops right after the terminator's LF
    BareNewline,  // Reject mode only: the stream holds a bare LF or CR; stop reading
  };

  struct Result {
    Status status = Status::NeedMore;
    size_t consumed = 0;  // input bytes taken; after End the rest belongs to the next command
  };

  BodyFilter(BareNewline mode, uint64_t max_bytes) : mode_(mode), max_bytes_(max_bytes) {}

  // Appends to `out` the bytes to forward for this part of the input. After End or
  // BareNewline, further calls consume nothing and repeat that status.
  Result feed(std::string_view in, std::string& out);

  uint64_t body_bytes() const;
  bool oversize() const { return oversize_; }
  bool ended() const { return state_ == State::Ended; }

 private:
  enum class State : uint8_t {
    LineStart,  // at the start of a line
    Dot,        // at the start of a line, a "." held
    DotCr,      // ".\r" at the start of a line held
    Mid,        // inside a line
    Cr,         // a CR held (its LF decides whether it ends the line cleanly)
    Ended,
    Failed,
  };

  // Appends unless the body is already over the limit.
  void emit(std::string& out, std::string_view bytes) const {
    if (!oversize_) out.append(bytes);
  }
  // A bare LF/CR just ended a line: Normalize writes CRLF, Reject stops.
  bool bare_newline(std::string& out, std::string_view line_rest);
  void count(uint64_t n);
  void take(std::string& out, std::string_view bytes);  // emit (up to the limit) and count

  BareNewline mode_;
  uint64_t max_bytes_;
  State state_ = State::LineStart;
  // False when the current line began after a bare LF/CR (Normalize only): a "." line there
  // is not end of data, even if it ends in CRLF.
  bool clean_start_ = true;
  bool oversize_ = false;
  uint64_t consumed_ = 0;  // body bytes resolved so far (held bytes excluded)
};

}  // namespace smtpgate::smtp
