#include "proxy/smtp/body_filter.h"

#include <algorithm>

namespace smtpgate::smtp {

uint64_t BodyFilter::body_bytes() const {
  return consumed_;
}

void BodyFilter::count(uint64_t n) {
  consumed_ += n;
  if (consumed_ > max_bytes_) oversize_ = true;
}

bool BodyFilter::bare_newline(std::string& out, std::string_view line_rest) {
  if (mode_ == BareNewline::Reject) {
    state_ = State::Failed;
    return false;
  }
  emit(out, line_rest);
  emit(out, "\r\n");
  state_ = State::LineStart;
  clean_start_ = false;
  return true;
}

BodyFilter::Result BodyFilter::feed(std::string_view in, std::string& out) {
  if (state_ == State::Ended) return {Status::End, 0};
  if (state_ == State::Failed) return {Status::BareNewline, 0};

  const size_t n = in.size();
  size_t i = 0;
  while (i < n) {
    const char c = in[i];
    switch (state_) {
      case State::LineStart:
        if (c == '.') {
          state_ = State::Dot;
          ++i;
        } else {
          state_ = State::Mid;  // Mid reads this byte; a line start only matters for "."
        }
        break;

      case State::Mid: {
        size_t j = i;
        while (j < n && in[j] != '\r' && in[j] != '\n') ++j;
        if (j > i) {
          // Emit exactly up to the limit, so `out` does not depend on how input was chunked.
          const uint64_t room = consumed_ < max_bytes_ ? max_bytes_ - consumed_ : 0;
          if (!oversize_)
            out.append(in.substr(i, static_cast<size_t>(std::min<uint64_t>(room, j - i))));
          count(j - i);
          i = j;
        } else if (c == '\r') {
          state_ = State::Cr;
          ++i;
        } else {  // a bare LF
          ++i;
          count(1);
          if (!bare_newline(out, {})) return {Status::BareNewline, i};
        }
        break;
      }

      case State::Cr:
        if (c == '\n') {
          ++i;
          count(2);
          emit(out, "\r\n");
          state_ = State::LineStart;
          clean_start_ = true;
        } else {  // a bare CR; `c` is read again at the start of the next line
          count(1);
          if (!bare_newline(out, {})) return {Status::BareNewline, i};
        }
        break;

      case State::Dot:
        if (c == '\r') {
          state_ = State::DotCr;
          ++i;
        } else if (c == '\n') {
          // "." ended by a bare LF is not end of data: stuff it so the backend agrees.
          ++i;
          count(2);
          if (!bare_newline(out, "..")) return {Status::BareNewline, i};
        } else {
          // A line starting with "." (a client's stuffed ".." included): forward as is.
          count(1);
          emit(out, ".");
          state_ = State::Mid;
        }
        break;

      case State::DotCr:
        if (c == '\n') {
          ++i;
          if (clean_start_) {
            state_ = State::Ended;
            return {Status::End, i};
          }
          // ".\r\n" after a bare LF/CR: not end of data here, so it must not be at the backend.
          count(3);
          emit(out, "..\r\n");
          state_ = State::LineStart;
          clean_start_ = true;
        } else {  // "." ended by a bare CR; `c` starts the next line
          count(2);
          if (!bare_newline(out, "..")) return {Status::BareNewline, i};
        }
        break;

      case State::Ended:
        return {Status::End, i};  // unreachable: End returns as soon as it is reached
      case State::Failed:
        return {Status::BareNewline, i};
    }
  }
  return {Status::NeedMore, n};
}

}  // namespace smtpgate::smtp
