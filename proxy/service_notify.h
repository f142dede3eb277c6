// The service manager's readiness protocol (sd_notify(3)) spoken directly: one datagram per
// state change to the socket named by $NOTIFY_SOCKET (systemd's Type=notify). Nothing happens
// without that variable. The send never blocks (a datagram, MSG_DONTWAIT).
#pragma once

#include <string_view>

namespace smtpgate {

// "READY=1" once the listeners accept; "RELOADING=1" then "READY=1" around a reload;
// "STOPPING=1" when draining. Returns false when a manager is named but the send failed.
bool notify_service_manager(std::string_view state);

}  // namespace smtpgate
