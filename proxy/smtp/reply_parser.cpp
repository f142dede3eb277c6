#include "proxy/smtp/reply_parser.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <utility>

#include "proxy/smtp/command.h"

namespace smtpgate::smtp {
namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// The text of each line of a complete reply: raw holds "DDDxtext\r\n" lines only.
template <class F>
void for_each_line(std::string_view raw, F&& f) {
  while (!raw.empty()) {
    const size_t lf = raw.find('\n');
    f(raw.substr(0, lf - 1));  // without "\r\n"
    raw.remove_prefix(lf + 1);
  }
}

}  // namespace

ReplyParser::Result ReplyParser::fail(size_t consumed, std::string_view why) {
  error_ = why;
  return {Status::Error, consumed};
}

bool ReplyParser::finish_line(bool& last) {
  const std::string_view line(raw_.data() + line_start_, raw_.size() - line_start_ - 2);
  if (line.size() < 4 || line[0] < '2' || line[0] > '5' || !is_digit(line[1]) ||
      !is_digit(line[2]) || (line[3] != ' ' && line[3] != '-')) {
    error_ = "malformed reply line";
    return false;
  }
  const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
  if (code_ != 0 && code != code_) {
    error_ = "reply code changes between lines";
    return false;
  }
  code_ = code;
  last = line[3] == ' ';
  // Only printable ASCII goes on to the client and the log: no escape sequences, NULs or
  // bare CRs from a hostile backend.
  for (size_t i = line_start_ + 4; i < raw_.size() - 2; ++i) {
    const auto c = static_cast<unsigned char>(raw_[i]);
    if (c < 0x20 || c > 0x7e) raw_[i] = '?';
  }
  return true;
}

ReplyParser::Result ReplyParser::feed(std::string_view input) {
  if (!error_.empty()) return {Status::Error, 0};
  if (release_) {
    raw_.clear();
    lines_.clear();
    lines_count_ = 0;
    line_start_ = 0;
    code_ = 0;
    release_ = false;
  }
  size_t i = 0;
  while (i < input.size()) {
    const auto* lf =
        static_cast<const char*>(std::memchr(input.data() + i, '\n', input.size() - i));
    const size_t take =
        lf != nullptr ? static_cast<size_t>(lf - input.data()) - i : input.size() - i;
    // Every stored line ends in CRLF (a CR already there is kept, a bare LF gets one);
    // refusing early keeps the buffer bounded.
    const bool ends_in_cr =
        take > 0 ? input[i + take - 1] == '\r' : raw_.size() > line_start_ && raw_.back() == '\r';
    const size_t terminator = lf == nullptr ? 0 : ends_in_cr ? 1 : 2;
    if (raw_.size() + take + terminator > kMaxReplyBytes) {
      return fail(i + take, "reply too long");
    }
    raw_.append(input.data() + i, take);
    i += take;
    if (lf == nullptr) break;
    ++i;  // the LF
    if (raw_.size() == line_start_ || raw_.back() != '\r') raw_.push_back('\r');
    raw_.push_back('\n');

    bool last = false;
    if (!finish_line(last)) return {Status::Error, i};
    if (++lines_count_ > kMaxReplyLines) return fail(i, "reply has too many lines");
    line_start_ = raw_.size();
    if (last) {
      for_each_line(raw_, [this](std::string_view l) { lines_.push_back(l.substr(4)); });
      reply_.code = code_;
      reply_.raw = raw_;
      reply_.lines = lines_;
      release_ = true;
      return {Status::Reply, i};
    }
  }
  return {Status::NeedMore, i};
}

void ReplyParser::reset() {
  raw_.clear();
  lines_.clear();
  lines_count_ = 0;
  line_start_ = 0;
  code_ = 0;
  release_ = false;
  reply_ = {};
  error_ = {};
}

EhloCapabilities parse_ehlo_capabilities(const BackendReply& reply) {
  EhloCapabilities caps;
  if (reply.code != 250) return caps;
  for (size_t n = 1; n < reply.lines.size(); ++n) {
    std::string_view rest = reply.lines[n];
    const size_t sp = rest.find(' ');
    std::string_view keyword = rest.substr(0, sp);
    rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
    auto each_arg = [](std::string_view args, auto&& f) {
      while (!args.empty()) {
        const size_t s = args.find(' ');
        if (s != 0) f(args.substr(0, s));
        if (s == std::string_view::npos) break;
        args.remove_prefix(s + 1);
      }
    };
    auto note_mech = [&caps](std::string_view m) {
      if (iequals(m, "PLAIN")) caps.auth_plain = true;
      if (iequals(m, "LOGIN")) caps.auth_login = true;
    };

    // Keywords that are just present or not.
    static constexpr std::pair<std::string_view, bool EhloCapabilities::*> kFlags[] = {
        {"STARTTLS", &EhloCapabilities::starttls},
        {"PIPELINING", &EhloCapabilities::pipelining},
        {"8BITMIME", &EhloCapabilities::eight_bit_mime},
        {"SMTPUTF8", &EhloCapabilities::smtputf8},
        {"CHUNKING", &EhloCapabilities::chunking},
        {"ENHANCEDSTATUSCODES", &EhloCapabilities::enhanced_status_codes},
    };
    auto flag = std::find_if(std::begin(kFlags), std::end(kFlags),
                             [&](const auto& f) { return iequals(keyword, f.first); });
    if (flag != std::end(kFlags)) {
      caps.*(flag->second) = true;
    } else if (iequals(keyword, "SIZE")) {
      caps.size = true;
      caps.size_limit = parse_u64(rest).value_or(0);
    } else if (iequals(keyword, "AUTH") ||
               (keyword.size() > 5 && iequals(keyword.substr(0, 5), "AUTH="))) {
      caps.auth = true;
      if (keyword.size() > 5) note_mech(keyword.substr(5));
      each_arg(rest, note_mech);
    } else if (iequals(keyword, "XCLIENT")) {
      caps.xclient = true;
      each_arg(rest, [&caps](std::string_view a) {
        using C = EhloCapabilities;
        if (iequals(a, "NAME")) caps.xclient_attrs |= C::kName;
        if (iequals(a, "ADDR")) caps.xclient_attrs |= C::kAddr;
        if (iequals(a, "PORT")) caps.xclient_attrs |= C::kPort;
        if (iequals(a, "PROTO")) caps.xclient_attrs |= C::kProto;
        if (iequals(a, "HELO")) caps.xclient_attrs |= C::kHelo;
        if (iequals(a, "LOGIN")) caps.xclient_attrs |= C::kLogin;
        if (iequals(a, "DESTADDR")) caps.xclient_attrs |= C::kDestAddr;
        if (iequals(a, "DESTPORT")) caps.xclient_attrs |= C::kDestPort;
      });
    }
  }
  return caps;
}

}  // namespace smtpgate::smtp
