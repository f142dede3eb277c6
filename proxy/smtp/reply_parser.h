// Incremental parser of the backend's SMTP replies, and reading EHLO capabilities from them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace smtpgate::smtp {

// A reply longer than this (all lines, terminators included) is a protocol error: a
// backend that sends more is broken or hostile, and the gateway will not buffer it.
inline constexpr size_t kMaxReplyBytes = 64 * 1024;
inline constexpr size_t kMaxReplyLines = 200;

// One complete reply. Views into the parser; valid until the next feed() or reset().
struct BackendReply {
  int code = 0;  // 200..599
  // Every line as received, each ending in CRLF (a backend's bare LF is rewritten as CRLF,
  // so relaying `raw` to the client always sends canonical lines). Text is printable ASCII:
  // any other byte (control characters, a bare CR, NUL, DEL, 8-bit) is replaced by '?'.
  std::string_view raw;
  // Each line's text after "250-"/"250 ", without terminator: EHLO keywords live here.
  std::span<const std::string_view> lines;

  bool positive() const { return code >= 200 && code < 400; }  // 2xx, or 3xx intermediate
  bool transient() const { return code >= 400 && code < 500; }
  bool permanent() const { return code >= 500; }
};

// The first line of a reply (or of any CRLF-ended text) without its terminator: for logs.
inline std::string_view first_line(std::string_view raw) {
  return raw.substr(0, raw.find('\r'));
}

// Turns the backend's byte stream into complete replies, "250-" continuation lines included,
// one reply per feed() so pipelined replies keep their order. After an error it stays failed
// (the session drops the backend connection).
class ReplyParser {
 public:
  enum class Status : uint8_t {
    NeedMore,  // all input consumed, no complete reply yet
    Reply,     // reply() holds a complete reply
    Error,     // malformed or oversized; error() says why
  };

  struct Result {
    Status status = Status::NeedMore;
    size_t consumed = 0;  // bytes of the input taken by this call
  };

  ReplyParser() = default;
  ReplyParser(const ReplyParser&) = delete;
  ReplyParser& operator=(const ReplyParser&) = delete;

  // Consumes input up to the end of the first complete reply (or all of it).
  // A line is "DDD-text" or "DDD text" ("DDD " with empty text is fine) with the first digit
  // 2..5 and the same code on every line of a reply; a bare "DDD" is malformed.
  Result feed(std::string_view input);

  const BackendReply& reply() const { return reply_; }
  std::string_view error() const { return error_; }
  // True while part of a reply has been received: a backend that closes now cut it off.
  bool partial() const { return !release_ && !raw_.empty(); }
  void reset();

 private:
  Result fail(size_t consumed, std::string_view why);
  // Checks the line just completed at raw_[line_start_, end); false = malformed.
  bool finish_line(bool& last);

  std::string raw_;  // the reply being assembled; capacity reused between replies
  std::vector<std::string_view> lines_;
  size_t line_start_ = 0;  // offset in raw_ of the line being read
  size_t lines_count_ = 0;
  int code_ = 0;
  bool release_ = false;  // the previous result was a Reply: start afresh
  BackendReply reply_;
  std::string_view error_;
};

// What a backend offers in its EHLO reply: an owned value, read once per backend connection.
struct EhloCapabilities {
  bool starttls = false;
  bool pipelining = false;
  bool eight_bit_mime = false;
  bool smtputf8 = false;
  bool chunking = false;
  bool enhanced_status_codes = false;
  bool size = false;
  uint64_t size_limit = 0;  // SIZE's argument; 0 when absent or "no fixed limit"

  // AUTH mechanisms the gateway can use (others are ignored).
  bool auth = false;  // an AUTH line was present
  bool auth_plain = false;
  bool auth_login = false;

  bool xclient = false;
  // XCLIENT attributes, Postfix names (XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR ...).
  enum XclientAttr : uint16_t {
    kName = 1 << 0,
    kAddr = 1 << 1,
    kPort = 1 << 2,
    kProto = 1 << 3,
    kHelo = 1 << 4,
    kLogin = 1 << 5,
    kDestAddr = 1 << 6,
    kDestPort = 1 << 7,
  };
  uint16_t xclient_attrs = 0;
  bool xclient_has(XclientAttr a) const { return (xclient_attrs & a) != 0; }
};

// Reads the capabilities from a 250 EHLO reply (the first line, the greeting, is skipped).
// Keywords are case-insensitive; "AUTH=PLAIN LOGIN" (the pre-RFC form) counts as AUTH.
// A reply that is not a 250 yields no capabilities.
EhloCapabilities parse_ehlo_capabilities(const BackendReply& reply);

}  // namespace smtpgate::smtp
