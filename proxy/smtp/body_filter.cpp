#include "proxy/smtp/body_filter.h"

#include <algorithm>
#include <bit>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace smtpgate::smtp {
namespace {

// Offset of the first CR or LF in p[0, n), or n. Body lines are long and plentiful, so this
// scans 16 bytes at a time with SSE2 (part of every x86-64), elsewhere a word at a time
// (the classic "has zero byte" test), instead of byte by byte.
size_t find_newline(const char* p, size_t n) {
  size_t i = 0;
#if defined(__SSE2__)
  const __m128i cr16 = _mm_set1_epi8('\r');
  const __m128i lf16 = _mm_set1_epi8('\n');
  for (; i + 16 <= n; i += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    const int m = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr16), _mm_cmpeq_epi8(v, lf16)));
    if (m != 0) return i + static_cast<size_t>(std::countr_zero(static_cast<unsigned>(m)));
  }
#endif
  if constexpr (std::endian::native == std::endian::little) {
    constexpr uint64_t kOnes = 0x0101010101010101ULL;
    constexpr uint64_t kHigh = 0x8080808080808080ULL;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      const uint64_t cr = w ^ (kOnes * '\r');
      const uint64_t lf = w ^ (kOnes * '\n');
      // Exact for the lowest flagged byte, which is all that is used.
      const uint64_t m = ((cr - kOnes) & ~cr & kHigh) | ((lf - kOnes) & ~lf & kHigh);
      if (m != 0) return i + static_cast<size_t>(std::countr_zero(m)) / 8;
    }
  }
  for (; i < n; ++i) {
    if (p[i] == '\r' || p[i] == '\n') return i;
  }
  return n;
}

}  // namespace

uint64_t BodyFilter::body_bytes() const {
  return consumed_;
}

void BodyFilter::take(std::string& out, std::string_view bytes) {
  // Emit exactly up to the limit, so `out` does not depend on how input was chunked.
  const uint64_t room = consumed_ < max_bytes_ ? max_bytes_ - consumed_ : 0;
  if (!oversize_)
    out.append(bytes.substr(0, static_cast<size_t>(std::min<uint64_t>(room, bytes.size()))));
  count(bytes.size());
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
        // Copy whole runs of clean lines at once: a CRLF whose next line does not start
        // with "." needs no decision, so the run goes on past it.
        const size_t run = i;
        for (;;) {
          const size_t j = i + find_newline(in.data() + i, n - i);
          // Near the size limit the byte-exact path below decides (it must not depend on
          // how the input was chunked).
          if (j + 2 < n && in[j] == '\r' && in[j + 1] == '\n' && in[j + 2] != '.' &&
              consumed_ + (j + 2 - run) <= max_bytes_) {
            i = j + 2;
            continue;
          }
          i = j;
          break;
        }
        if (i > run) take(out, in.substr(run, i - run));
        if (i >= n) break;
        if (in[i] == '\r') {
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
