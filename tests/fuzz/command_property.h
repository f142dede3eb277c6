// The property the line reader and command parser must keep for any client stream, shared
// by the libFuzzer target and the seeded replay in the unit tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/cuts.h"

#include "proxy/smtp/command.h"
#include "proxy/smtp/line_reader.h"

namespace smtpgate::fuzz {

inline bool within(std::string_view inner, std::string_view outer) {
  return inner.empty() || (inner.data() >= outer.data() &&
                           inner.data() + inner.size() <= outer.data() + outer.size());
}

// Checks one parsed line; "" when fine.
inline std::string check_command(std::string_view line) {
  const smtp::Command c = smtp::parse_command(line);
  for (std::string_view v : {c.verb_text, c.argument, c.domain, c.path, c.auth_mechanism}) {
    if (!within(v, line)) return "view outside the line";
  }
  if (c.auth_initial_response && !within(*c.auth_initial_response, line)) {
    return "view outside the line";
  }
  if (c.param_count > smtp::kMaxParams) return "too many parameters kept";
  for (const auto& p : c.params()) {
    if (!within(p.key, line) || !within(p.value, line)) return "view outside the line";
  }
  for (char ch : line) {
    const auto u = static_cast<unsigned char>(ch);
    if ((u < 0x20 || u == 0x7f) && c.ok()) return "control character accepted";
  }
  if (!c.ok() && c.error.empty()) return "syntax error without a reason";
  if (c.ok() && c.verb == smtp::Verb::Rcpt && c.path.empty()) return "empty RCPT path accepted";
  if (c.ok() && (c.verb == smtp::Verb::Helo || c.verb == smtp::Verb::Ehlo) && c.domain.empty()) {
    return "HELO without a domain accepted";
  }
  return {};
}

// Splits `input` into lines (cut at `cuts`), parses each, and describes the result.
inline std::vector<std::string> read_commands(std::string_view input,
                                              const std::vector<size_t>& cuts, size_t limit,
                                              std::string& why) {
  smtp::LineReader reader;
  std::vector<std::string> seen;
  size_t from = 0;
  for (size_t k = 0; k <= cuts.size(); ++k) {
    const size_t to = k < cuts.size() ? cuts[k] : input.size();
    std::string_view in = input.substr(from, to - from);
    from = to;
    while (!in.empty()) {
      const auto r = reader.feed(in, limit);
      if (r.consumed > in.size()) {
        why = "consumed too much";
        return seen;
      }
      in.remove_prefix(r.consumed);
      if (r.status == smtp::LineReader::Status::NeedMore) {
        if (!in.empty()) why = "NeedMore left input";
        break;
      }
      if (r.consumed == 0) {
        why = "no progress";
        return seen;
      }
      if (r.status == smtp::LineReader::Status::TooLong) {
        seen.emplace_back("TOOLONG");
        continue;
      }
      if (r.line.size() > limit - 2) why = "line over the limit";
      if (r.line.find('\n') != std::string_view::npos) why = "LF inside a line";
      const std::string w = check_command(r.line);
      if (!w.empty() && why.empty()) why = w;
      const smtp::Command c = smtp::parse_command(r.line);
      seen.push_back(std::string(r.line) + "|" + std::string(smtp::to_string(c.verb)) +
                     (c.ok() ? "" : "|" + std::string(c.error)) + (r.bare_lf ? "|LF" : ""));
    }
  }
  return seen;
}

inline std::string check_command_stream(std::string_view input, size_t limit, uint32_t seed) {
  std::string why;
  const auto whole = read_commands(input, {}, limit, why);
  if (!why.empty()) return why;
  if (read_commands(input, every_byte(input.size()), limit, why) != whole)
    return "byte-at-a-time differs";
  if (!why.empty()) return why;
  const std::vector<size_t> cuts = random_cuts(input.size(), seed, 11);
  if (read_commands(input, cuts, limit, why) != whole) return "chunked differs";
  return why;
}

// Decodes a fuzzer's bytes: line limit and chunking from the first two, the stream after.
inline std::string check_command_bytes(const uint8_t* data, size_t size) {
  if (size < 2) return {};
  static constexpr size_t kLimits[] = {
      3, 4, 8, 32, 64, 200, smtp::kMaxCommandLine, smtp::kMaxSaslLine};
  const size_t limit = kLimits[data[0] & 7];
  const std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);
  return check_command_stream(stream, limit, data[1]);
}

}  // namespace smtpgate::fuzz
