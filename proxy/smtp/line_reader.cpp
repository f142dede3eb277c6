#include "proxy/smtp/line_reader.h"

#include <cassert>
#include <cstring>

namespace smtpgate::smtp {

LineReader::Result LineReader::feed(std::string_view input, size_t limit) {
  assert(limit >= 3 && limit <= kMaxLineLimit);
  if (release_) {
    len_ = 0;
    buf_.clear();
    // Idle sessions must stay small: give back a buffer that a long line made big.
    if (buf_.capacity() > kKeepCapacity) std::string().swap(buf_);
    release_ = false;
  }
  Result r;
  if (input.empty()) return r;

  const auto* lf = static_cast<const char*>(std::memchr(input.data(), '\n', input.size()));
  if (lf == nullptr) {
    r.consumed = input.size();
    if (discarding_) return r;
    // Even if the last byte is the CR of a CRLF, more than limit-1 bytes means the text is
    // already longer than limit-2: stop buffering now rather than at the LF.
    if (len_ + input.size() > limit - 1) {
      discarding_ = true;
      len_ = 0;
      buf_.clear();
      return r;
    }
    buf_.append(input);
    len_ += input.size();
    return r;
  }

  const size_t pos = static_cast<size_t>(lf - input.data());
  r.consumed = pos + 1;
  if (discarding_) {
    discarding_ = false;
    r.status = Status::TooLong;
    return r;
  }

  const bool cr = pos > 0 ? input[pos - 1] == '\r' : (len_ > 0 && buf_[len_ - 1] == '\r');
  const size_t text = len_ + pos - (cr ? 1 : 0);
  if (text > limit - 2) {
    len_ = 0;
    buf_.clear();
    r.status = Status::TooLong;
    return r;
  }
  if (len_ == 0) {
    r.line = input.substr(0, text);  // the common case: no copy
  } else {
    // len_ + pos <= text + 1 <= limit - 1: bounded by the limit.
    buf_.append(input.data(), pos);
    r.line = std::string_view(buf_.data(), text);
    release_ = true;
  }
  r.status = Status::Line;
  r.bare_lf = !cr;
  return r;
}

void LineReader::reset() {
  len_ = 0;
  buf_.clear();
  discarding_ = false;
  release_ = false;
}

}  // namespace smtpgate::smtp
