#include "proxy/smtp/reply_check.h"

namespace smtpgate::smtp {

std::string_view to_string(BackendCommand c) {
  switch (c) {
    case BackendCommand::Mail:
      return "MAIL";
    case BackendCommand::Rcpt:
      return "RCPT";
    case BackendCommand::Data:
      return "DATA";
    case BackendCommand::DataEnd:
      return "end of data";
    case BackendCommand::Rset:
      return "RSET";
    case BackendCommand::Auth:
      return "AUTH";
  }
  return "?";
}

bool reply_fits(BackendCommand cmd, int code) {
  const bool error = code >= 400 && code < 600;
  switch (cmd) {
    case BackendCommand::Mail:
    case BackendCommand::Rcpt:
    case BackendCommand::DataEnd:
      return error || (code >= 200 && code < 300);
    case BackendCommand::Data:
      return error || code == 354;
    case BackendCommand::Auth:
      return error || code == 235;
    case BackendCommand::Rset:
      return code >= 200 && code < 300;
  }
  return false;
}

}  // namespace smtpgate::smtp
