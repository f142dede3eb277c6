#include "policy/duration.h"

#include <iterator>
#include <string>

#include "policy/text.h"

namespace smtpgate {

namespace {

// A century: far beyond any sensible ban or timeout, and small enough that adding it to a
// steady_clock time point in nanoseconds cannot overflow.
constexpr int64_t kMaxDurationSeconds = 100LL * 365 * 86400;

struct Unit {
  char letter;
  int64_t seconds;
};
// Descending: a compound duration must name its units in this order, each at most once.
constexpr Unit kUnits[] = {{'w', 7 * 86400}, {'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

}  // namespace

Result<Seconds> parse_duration(std::string_view text, bool allow_zero) {
  auto bad = [&] {
    return Result<Seconds>::fail(quoted(text) +
                                 " is not a duration (use e.g. \"90s\", \"10m\", \"1h\", \"30d\")");
  };
  auto too_long = [&] {
    return Result<Seconds>::fail(quoted(text) + " is too long (at most " +
                                 format_duration(Seconds(kMaxDurationSeconds)) + ")");
  };
  if (text.empty()) return bad();

  int64_t total = 0;
  size_t next_unit = 0;  // index into kUnits of the largest unit still allowed
  size_t i = 0;
  while (i < text.size()) {
    if (!is_digit(text[i])) return bad();
    int64_t n = 0;
    for (; i < text.size() && is_digit(text[i]); ++i) {
      n = n * 10 + (text[i] - '0');
      if (n > kMaxDurationSeconds) return too_long();
    }
    if (i == text.size()) return bad();  // a number without a unit
    char letter = text[i++];
    size_t u = next_unit;
    while (u < std::size(kUnits) && kUnits[u].letter != letter) ++u;
    if (u == std::size(kUnits)) return bad();  // unknown, repeated or out of order
    if (n > (kMaxDurationSeconds - total) / kUnits[u].seconds) return too_long();
    total += n * kUnits[u].seconds;
    next_unit = u + 1;
  }
  if (total == 0 && !allow_zero) {
    return Result<Seconds>::fail(quoted(text) + " must be longer than zero");
  }
  return Result<Seconds>::ok(Seconds(total));
}

std::string format_duration(Seconds d) {
  int64_t s = d.count();
  if (s == 0) return "0s";
  std::string out;
  uint64_t left;
  if (s < 0) {
    out += '-';
    left = 0 - static_cast<uint64_t>(s);  // well-defined even for the most negative value
  } else {
    left = static_cast<uint64_t>(s);
  }
  // Weeks are accepted on input but days read better ("30d", not "4w2d").
  for (const Unit& u : kUnits) {
    if (u.letter == 'w') continue;
    uint64_t unit = static_cast<uint64_t>(u.seconds);
    if (left >= unit) {
      out += std::to_string(left / unit);
      out += u.letter;
      left %= unit;
    }
  }
  return out;
}

Result<Rate> parse_rate(std::string_view text) {
  auto bad = [&] {
    return Result<Rate>::fail(quoted(text) +
                              " is not a rate (use e.g. \"60/m\", \"10/s\", \"1000/h\")");
  };
  auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 2 != text.size()) return bad();
  uint64_t n = 0;
  for (size_t i = 0; i < slash; ++i) {
    if (!is_digit(text[i])) return bad();
    n = n * 10 + static_cast<uint64_t>(text[i] - '0');
    if (n > UINT32_MAX) return Result<Rate>::fail(quoted(text) + ": count is too large");
  }
  if (n == 0) return Result<Rate>::fail(quoted(text) + ": count must be greater than zero");
  Rate r;
  r.count = static_cast<uint32_t>(n);
  switch (text[slash + 1]) {
    case 's':
      r.per = Seconds(1);
      break;
    case 'm':
      r.per = Seconds(60);
      break;
    case 'h':
      r.per = Seconds(3600);
      break;
    default:
      return bad();
  }
  return Result<Rate>::ok(r);
}

}  // namespace smtpgate
