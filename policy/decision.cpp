#include "policy/decision.h"

namespace smtpgate {

std::string_view to_string(Stage s) {
  switch (s) {
    case Stage::Connect:
      return "connect";
    case Stage::Helo:
      return "helo";
    case Stage::StartTls:
      return "starttls";
    case Stage::Auth:
      return "auth";
    case Stage::Mail:
      return "mail";
    case Stage::Rcpt:
      return "rcpt";
    case Stage::Data:
      return "data";
    case Stage::Rset:
      return "rset";
    case Stage::Quit:
      return "quit";
  }
  return "unknown";
}

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::Allow:
      return "allow";
    case Verdict::Reject:
      return "reject";
    case Verdict::Tempfail:
      return "tempfail";
    case Verdict::Ban:
      return "ban";
  }
  return "unknown";
}

std::string Reply::line() const {
  if (code == 0) return {};
  return std::to_string(code) + " " + text;
}

}  // namespace smtpgate
