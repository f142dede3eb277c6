// Which backend replies may answer which command: the check that keeps a broken or hostile
// backend from making the gateway say 250 for something the backend did not accept.
#pragma once

#include <cstdint>
#include <string_view>

namespace smtpgate::smtp {

// A command the gateway sends the backend on a client's behalf, whose reply it waits for.
enum class BackendCommand : uint8_t { Mail, Rcpt, Data, DataEnd, Rset, Auth };

std::string_view to_string(BackendCommand c);  // "MAIL", "RCPT", "DATA", "end of data", ...

// True when `code` may answer `cmd` (as Postfix's before-queue proxy checks, smtpd_proxy.c):
// * MAIL, RCPT, end of data: 2xx, or an error (4xx/5xx);
// * DATA: 354, or an error — a 2xx would mean the backend took a message it has not seen;
// * AUTH (final reply): 235, or an error; its 334 challenges belong to the exchange itself;
// * RSET: 2xx only (after an error the backend's transaction state is unknown).
// Anything else is a protocol error: the session answers 451 4.3.0 and drops the backend.
bool reply_fits(BackendCommand cmd, int code);

}  // namespace smtpgate::smtp
