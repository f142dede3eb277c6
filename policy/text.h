// Small text helpers shared by the policy parsers' error messages.
#pragma once

#include <string>
#include <string_view>

namespace smtpgate {

// `text` in double quotes, for error messages. Built by appending: GCC 12 at -O3 warns
// falsely (-Wrestrict) on "literal" + std::string.
inline std::string quoted(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  out.append(text);
  out += '"';
  return out;
}

}  // namespace smtpgate
