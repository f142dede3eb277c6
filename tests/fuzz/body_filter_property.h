// The property the body filter must keep for any input, shared by the libFuzzer target and
// the seeded replay in the unit tests (so CI checks it without clang).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/cuts.h"

#include "proxy/smtp/body_filter.h"

namespace smtpgate::fuzz {

struct BodyRun {
  smtp::BodyFilter::Status status = smtp::BodyFilter::Status::NeedMore;
  std::string out;
  size_t consumed = 0;
  uint64_t body_bytes = 0;
  bool oversize = false;

  bool operator==(const BodyRun&) const = default;
};

// Feeds `input` cut at `cuts` (ascending offsets), stopping at End or BareNewline.
inline BodyRun run_body_filter(BareNewline mode, uint64_t max_bytes, std::string_view input,
                               const std::vector<size_t>& cuts) {
  smtp::BodyFilter f(mode, max_bytes);
  BodyRun r;
  size_t from = 0;
  for (size_t k = 0; k <= cuts.size(); ++k) {
    const size_t to = k < cuts.size() ? cuts[k] : input.size();
    const auto res = f.feed(input.substr(from, to - from), r.out);
    r.consumed += res.consumed;
    r.status = res.status;
    if (res.status != smtp::BodyFilter::Status::NeedMore) break;
    from = to;
  }
  r.body_bytes = f.body_bytes();
  r.oversize = f.oversize();
  return r;
}

// The message boundary a plain CRLF.CRLF scanner finds (start of data = start of a line):
// the body's length, or npos.
inline size_t reference_boundary(std::string_view input) {
  const std::string s = "\r\n" + std::string(input);
  return s.find("\r\n.\r\n");
}

// A canonical reading of a body (up to the boundary): lines end at CRLF, bare LF or bare CR;
// each becomes CRLF, and a "." line, which cannot be the end here, is stuffed.
inline std::string reference_normalize(std::string_view body) {
  std::string out, line;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < body.size() && body[i + 1] == '\n') ++i;
      out += line == "." ? ".." : line;
      out += "\r\n";
      line.clear();
    } else {
      line += c;
    }
  }
  return out + line;
}

inline bool is_canonical_crlf(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n')) return false;
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return false;
  }
  return true;
}

// A bare LF, or a CR followed by something other than LF (a CR at the very end is undecided).
inline bool has_bare_newline(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return true;
    if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] != '\n') return true;
  }
  return false;
}

// Returns "" when every rule holds, else the first one broken.
inline std::string check_body_filter(BareNewline mode, uint64_t max_bytes, std::string_view input,
                                     uint32_t seed) {
  using Status = smtp::BodyFilter::Status;
  const BodyRun whole = run_body_filter(mode, max_bytes, input, {});

  if (!(run_body_filter(mode, max_bytes, input, every_byte(input.size())) == whole))
    return "byte-at-a-time differs";
  const std::vector<size_t> cuts = random_cuts(input.size(), seed, 7);
  if (!(run_body_filter(mode, max_bytes, input, cuts) == whole)) return "chunked differs";

  if (whole.consumed > input.size()) return "consumed too much";
  if (whole.status == Status::NeedMore && whole.consumed != input.size()) {
    return "NeedMore left input";
  }
  if (!is_canonical_crlf(whole.out)) return "output not canonical CRLF";
  if (("\r\n" + whole.out).find("\r\n.\r\n") != std::string::npos) {
    return "output holds an end of data";
  }
  if (whole.oversize != (whole.body_bytes > max_bytes)) return "oversize flag wrong";

  const size_t ref = reference_boundary(input);
  const std::string_view scanned = ref == std::string::npos ? input : input.substr(0, ref);
  if (mode == BareNewline::Reject && has_bare_newline(scanned)) {
    return whole.status == Status::BareNewline ? "" : "bare newline not rejected";
  }
  if (whole.status == Status::BareNewline) return "BareNewline without one";
  if (ref == std::string::npos) {
    return whole.status == Status::NeedMore ? "" : "End where a plain scanner finds none";
  }
  if (whole.status != Status::End) return "missed the end of data";
  if (whole.consumed != ref + 3) return "end of data at the wrong place";
  if (whole.body_bytes != ref) return "body_bytes wrong";

  const std::string expected = reference_normalize(input.substr(0, ref));
  if (!whole.oversize) {
    if (whole.out != expected) return "output differs from the canonical reading";
    // The backend, reading out + ".\r\n", must stop exactly where the gateway did.
    const std::string wire = "\r\n" + whole.out + ".\r\n";
    if (wire.find("\r\n.\r\n") != whole.out.size()) return "backend sees another boundary";
  } else if (expected.compare(0, whole.out.size(), whole.out) != 0) {
    return "oversize output is not a prefix";
  }
  return {};
}

// Decodes a fuzzer's bytes: mode, size limit and chunking from the first two, body after.
inline std::string check_body_filter_bytes(const uint8_t* data, size_t size) {
  if (size < 2) return {};
  static constexpr uint64_t kLimits[] = {0, 1, 2, 3, 5, 8, 16, UINT64_MAX};
  const BareNewline mode = (data[0] & 1) != 0 ? BareNewline::Normalize : BareNewline::Reject;
  const uint64_t max = kLimits[(data[0] >> 1) & 7];
  const std::string_view body(reinterpret_cast<const char*>(data + 2), size - 2);
  return check_body_filter(mode, max, body, data[1]);
}

}  // namespace smtpgate::fuzz
