// The one table of SMTP replies the gateway sends on its own (SPEC §3); code and tests use it.
#pragma once

#include <string>
#include <string_view>

#include "policy/decision.h"

namespace smtpgate::replies {

Reply access_denied(std::string_view hostname);  // 554 5.7.1 <hostname> access denied, close
Reply too_many_connections();                    // 421 4.7.0 ..., close
Reply must_starttls();                           // 530 5.7.0 Must issue a STARTTLS command first
Reply auth_invalid();                            // 535 5.7.8 Authentication credentials invalid
Reply auth_not_available();                      // 502 5.5.1 AUTH not available
Reply auth_required();                           // 530 5.7.0 Authentication required
Reply sender_not_owned(std::string_view login);  // 553 5.7.1 ... not owned by user <login>
Reply local_sender_needs_auth();   // 553 5.7.1 ... authentication required for local domains
Reply relay_denied();              // 554 5.7.1 Relay access denied
Reply rate_limited();              // 450 4.7.1 rate limit exceeded, try later
Reply connection_rate();           // 421 4.7.0 too many connections, try later, close
Reply too_many_recipients();       // 452 4.5.3 Too many recipients
Reply backend_unavailable();       // 421 4.4.1 backend unavailable, try later
Reply auth_backend_unavailable();  // 454 4.7.0 Temporary authentication failure
Reply message_too_big();           // 552 5.3.4 Message size exceeds fixed limit
Reply line_too_long();             // 500 5.5.2 Line too long
Reply bare_lf();                   // 521 5.5.2 bare <LF> received, close
Reply idle_timeout(std::string_view hostname);  // 421 4.4.2 <hostname> timeout, close
// Hostile and broken peers (SPEC §3).
Reply sync_error();              // 554 5.5.0 Error: SMTP protocol synchronization, close
Reply too_many_junk();           // 421 4.7.0 Error: too many junk commands, close
Reply bdat_refused();            // 502 5.5.1 Error: command not implemented, close
Reply smtputf8_required();       // 553 5.6.7 Must declare SMTPUTF8 to send unicode address
Reply backend_protocol_error();  // 451 4.3.0 Error: backend protocol error

}  // namespace smtpgate::replies
