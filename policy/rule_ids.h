// The stable rule ids (SPEC §3) that name every decision in logs, metrics and `explain`.
// Written once here, so that no id is typed twice and no comparison can drift.
#pragma once

#include <string_view>

namespace smtpgate::rules {

inline constexpr std::string_view kDefault = "default";  // a stage that passes with no rule
inline constexpr std::string_view kBan = "ban";
inline constexpr std::string_view kBruteForce = "brute_force";
// The allow at the ban threshold for an address in never_ban: logged, so a guesser that the
// list protects (an office NAT, a misconfigured client) is seen.
inline constexpr std::string_view kBruteForceNeverBan = "brute_force.never_ban";
// AUTH as a login locked by brute_force.per_login, from an address it has not succeeded from.
inline constexpr std::string_view kBruteForceLogin = "brute_force.login";
inline constexpr std::string_view kMxAccess = "mx.access";
inline constexpr std::string_view kMxAuth = "mx.auth";
inline constexpr std::string_view kMxRelay = "mx.relay";
inline constexpr std::string_view kMxLocalSender = "mx.local_sender";
inline constexpr std::string_view kSubmissionAccess = "submission.access";
inline constexpr std::string_view kSubmissionRequireTls = "submission.require_tls";
inline constexpr std::string_view kSubmissionAuthRequired = "submission.auth_required";
// A login suspended by the breaker (a hijacked account): SPEC §9.
inline constexpr std::string_view kSubmissionBreaker = "submission.breaker";
inline constexpr std::string_view kSubmissionAuthMatch = "submission.auth_match";
inline constexpr std::string_view kLimitsRecipients = "limits.recipients";
inline constexpr std::string_view kLimitsRate = "limits.rate";  // a login's sending rate
inline constexpr std::string_view kLimitsConnections = "limits.connections";
inline constexpr std::string_view kLimitsConnectionRate = "limits.connection_rate";
inline constexpr std::string_view kMessageSize = "message.size";
inline constexpr std::string_view kMessageBareNewline = "message.bare_newline";
inline constexpr std::string_view kBackend = "backend";
// Protocol violations the session refuses (SPEC §3 "Hostile and broken peers").
inline constexpr std::string_view kProtocolSync = "protocol.sync";
inline constexpr std::string_view kProtocolJunk = "protocol.junk";
inline constexpr std::string_view kProtocolHttp = "protocol.http";
inline constexpr std::string_view kProtocolBdat = "protocol.bdat";

}  // namespace smtpgate::rules
