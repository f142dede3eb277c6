// Parsing one SMTP command line (without its CRLF) into a verb and its arguments.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "policy/domain_set.h"

namespace smtpgate::smtp {

enum class Verb : uint8_t {
  Helo,
  Ehlo,
  Mail,
  Rcpt,
  Data,
  Rset,
  Noop,
  Quit,
  Help,
  Vrfy,
  Expn,
  Auth,
  StartTls,
  Bdat,
  Unknown,  // includes the empty line; `Command::verb_text` holds what was sent
};

// "HELO", "EHLO", ...; "UNKNOWN" for Verb::Unknown.
std::string_view to_string(Verb v);

// One ESMTP parameter of MAIL/RCPT: "SIZE=123" -> {"SIZE", "123", true}; "SMTPUTF8" ->
// {"SMTPUTF8", "", false}. Views into the command line.
struct Param {
  std::string_view key;
  std::string_view value;
  bool has_value = false;
};

// More parameters than this on one MAIL/RCPT is a syntax error (real clients send <= 5).
inline constexpr size_t kMaxParams = 10;

// A parsed command: a value of views into the line it was parsed from, so it is valid only
// as long as that line (LineReader::Result::line) is.
struct Command {
  enum class Status : uint8_t {
    Ok,
    SyntaxError,  // the session answers "501 5.5.4 Syntax error: <error>" (SPEC §3)
  };

  Status status = Status::Ok;
  std::string_view error;  // short reason when SyntaxError; static storage
  Verb verb = Verb::Unknown;
  std::string_view verb_text;  // the verb as sent (any case)
  std::string_view argument;   // everything after the verb and its spaces, trailing spaces cut

  // HELO/EHLO: the first word of the argument (a domain or an address literal as sent;
  // Postfix-style leniency: further words are ignored).
  std::string_view domain;

  // MAIL/RCPT: the text between '<' and '>' (brackets excluded; "" for "<>"), for
  // parse_mail_path(). Source routes and quoted local parts are passed through.
  std::string_view path;
  std::array<Param, kMaxParams> param_storage{};
  size_t param_count = 0;
  std::optional<uint64_t> size;  // MAIL SIZE=, checked for digits and overflow

  // AUTH: the mechanism as sent (compare with iequals()) and the optional
  // initial response, raw ("=" means an empty one, RFC 4954 §4).
  std::string_view auth_mechanism;
  std::optional<std::string_view> auth_initial_response;

  // BDAT: chunk size and LAST.
  uint64_t bdat_size = 0;
  bool bdat_last = false;

  bool ok() const { return status == Status::Ok; }
  std::span<const Param> params() const { return {param_storage.data(), param_count}; }
  // The parameter with this key (ASCII case-insensitive), or nullptr.
  const Param* find_param(std::string_view key) const;
};

// Parses one command line. Never fails hard: bad input is a Command with status SyntaxError
// and a reason. Rules:
// * verbs are case-insensitive; an unknown verb is Verb::Unknown with status Ok (the session
//   answers 500 5.5.1), as is an empty line;
// * a control character (C0 or DEL, NUL included) anywhere is a syntax error; bytes >= 0x80
//   are allowed (SMTPUTF8 addresses);
// * trailing spaces are ignored, and one or more spaces may separate words;
// * DATA, RSET, QUIT and STARTTLS take no argument; HELO/EHLO need a domain, VRFY/EXPN an
//   argument; NOOP and HELP take anything;
// * MAIL needs "FROM:" and RCPT "TO:" (case-insensitive), then at most one space, then a
//   path in angle brackets; RCPT TO:<> is an error; then space-separated ESMTP parameters
//   (keyword [= value], RFC 5321 §4.1.2), no duplicates, at most kMaxParams;
// * AUTH needs a mechanism and takes at most one initial response.
Command parse_command(std::string_view line);

// An unsigned decimal as SMTP writes sizes (SIZE=, BDAT, the EHLO SIZE keyword): digits
// only, no sign, no overflow.
std::optional<uint64_t> parse_u64(std::string_view s);

// `line` without the AUTH= parameter of its MAIL command (RFC 4954 §5): the backend learns the
// submitter from the session's own AUTH, and a value the gateway did not verify must not reach
// it. `cmd` must have been parsed from `line`. Returns false, leaving `out` alone, when there is
// no AUTH parameter (the usual case: no copy is made).
bool remove_auth_param(const Command& cmd, std::string_view line, std::string& out);

// True when `s` has a byte >= 0x80 (an address that needs SMTPUTF8, RFC 6531).
bool has_non_ascii(std::string_view s);

// True when a session's first line is an HTTP request ("GET / HTTP/1.1", "CONNECT host:25 ..."):
// a web client or an open-proxy scanner, answered by closing the connection.
bool looks_like_http(std::string_view line);

// ASCII case-insensitive comparison, for verbs, keywords and mechanism names.
using smtpgate::iequals;

}  // namespace smtpgate::smtp
