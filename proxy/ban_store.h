// The ban list's state file: loaded at start, rewritten atomically on every change.
#pragma once

#include <string>

#include "policy/ban_list.h"

namespace smtpgate {

// A missing file is an empty state. A corrupt one is moved aside (path.corrupt-TIMESTAMP)
// and reported; it is never fatal. Returns "" or a message for the log.
std::string read_ban_state(const std::string& path, BanList* bans);
// temp file in the same directory, fsync, rename, fsync of the directory.
std::string write_ban_state(const std::string& path, const BanList& bans);

}  // namespace smtpgate
