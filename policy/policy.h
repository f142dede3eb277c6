// The parsed, validated policy: an immutable snapshot shared by sessions (shared_ptr<const>).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/address_set.h"
#include "policy/domain_set.h"
#include "policy/duration.h"

namespace smtpgate {

enum class Mode : uint8_t { Enforce, DryRun };
enum class ListenerClass : uint8_t { Mx, Submission, Auto };
std::string_view to_string(ListenerClass c);  // "mx", "submission", "auto"
enum class TlsMode : uint8_t { None, StartTls, Implicit };
std::string_view to_string(TlsMode m);  // "none", "starttls", "implicit"

struct Listener {
  std::string name;
  std::string host;  // as written, without brackets: "0.0.0.0", "::", "127.0.0.1"
  uint16_t port = 0;
  ListenerClass cls = ListenerClass::Mx;
  TlsMode tls = TlsMode::None;  // resolved: StartTls when a tls section exists and unset
  // Connections start with a PROXY v1/v2 header from an address in trusted_proxies (SPEC §8):
  // the address it carries is the client.
  bool proxy_protocol = false;
};

struct AccessPolicy {
  Access default_access = Access::Allow;
  AddressSet entries;  // allow and deny entries; origin = index into Policy::list_names
};

struct MxPolicy {
  std::optional<Mode> mode;  // overrides the global mode for mx.* rules
  AccessPolicy access;       // default allow
  enum class AuthAction : uint8_t { Refuse, Ban } auth = AuthAction::Refuse;
  bool reject_local_sender = false;
  uint32_t max_recipients = 100;
};

enum class AuthMatch : uint8_t { Address, Domain, None };

struct SubmissionLimits {
  uint32_t messages_per_hour = 0;    // 0 = off
  uint32_t recipients_per_hour = 0;  // 0 = off
  uint32_t max_recipients = 0;       // 0 = off
};

// submission.breaker (SPEC §9): thresholds over the last hour of one login; crossing one
// suspends the login until an admin releases it. A threshold left out is not checked.
struct BreakerPolicy {
  std::optional<uint32_t> max_ips_per_hour;             // distinct client addresses
  std::optional<uint32_t> max_rcpt_domains_per_hour;    // distinct recipient domains
  std::optional<uint32_t> max_rejected_rcpts_per_hour;  // recipients the backend refused
};

struct SubmissionPolicy {
  std::optional<Mode> mode;
  AccessPolicy access;  // default deny
  bool require_tls = true;
  AuthMatch auth_match = AuthMatch::Address;
  // lower-cased login -> lower-cased entries: full addresses or "@domain"
  std::map<std::string, std::vector<std::string>> senders;
  SubmissionLimits limits;
  std::optional<BreakerPolicy> breaker;  // off unless set (SPEC §9)
};

// brute_force.per_login (SPEC §9): failures of one login from every address.
struct PerLoginPolicy {
  uint32_t max_failures = 10;
  Seconds window{3600};
  Seconds lock{3600};
  Seconds known_good{30 * 86400};
};

struct BruteForcePolicy {
  std::optional<Mode> mode;
  uint32_t max_failures = 5;
  Seconds window{600};
  Seconds ban{3600};
  double ban_multiplier = 4;
  Seconds max_ban{30 * 86400};
  AddressSet never_ban;
  std::string state_file;  // empty: bans in memory only
  // A connection refused by mx.access or submission.access counts as a failure too, so a
  // bot hammering a port it may not use is banned like a password guesser.
  bool count_access_refusals = false;
  // A wrong password retried from one address for one login counts once per window.
  bool distinct_passwords = true;
  // Bans and failure counts of an IPv6 client cover this prefix (a host owns a /64).
  uint8_t ipv6_prefix = 64;
  std::optional<PerLoginPolicy> per_login;  // off unless set
};

struct ConnectionLimits {
  uint32_t max_total = 10000;
  uint32_t max_per_ip = 50;
  std::optional<Rate> rate_per_ip;
};

struct Timeouts {
  Seconds command{300};
  Seconds data{600};
  Seconds backend_connect{10};
  Seconds backend_reply{300};
  // The reply to the final dot: RFC 5321 §4.5.3.2.6 gives a server 10 minutes (content
  // scanning); a shorter wait would make the client send a stored message again.
  Seconds backend_data_done{600};
  Seconds drain{30};
};

enum class BareNewline : uint8_t { Reject, Normalize };

struct MessagePolicy {
  uint64_t max_bytes = 52428800;
  BareNewline bare_newline = BareNewline::Reject;
  bool received_header = true;
  // The Received: header names the login ("authenticated as ..."): off by default, like
  // Postfix's smtpd_sasl_authenticated_header; ESMTPA still says that the client logged in.
  bool received_auth = false;
};

struct TlsSettings {
  bool configured = false;  // a "tls" section with cert and key exists
  std::string cert;
  std::string key;
  std::string min_version = "TLSv1.2";  // "TLSv1.2" | "TLSv1.3"
  std::string ciphers;                  // OpenSSL cipher list for TLS <= 1.2; empty = default
};

enum class BackendTls : uint8_t { None, StartTls, Implicit };
enum class ClientIpMode : uint8_t { None, Xclient, ProxyV1, ProxyV2 };

struct BackendSettings {
  std::string host;  // IP literal (IPv4 or IPv6, no brackets)
  uint16_t port = 0;
  BackendTls tls = BackendTls::None;
  ClientIpMode client_ip = ClientIpMode::None;
  std::string ca;           // PEM bundle; empty = system CAs
  bool verify = true;       // verify the backend certificate when tls != none
  std::string server_name;  // SNI / name to verify; empty = no name check beyond the chain
};

enum class LogFormat : uint8_t { Json, Text };

struct LogSettings {
  LogFormat format = LogFormat::Json;
  std::string path = "-";  // "-" = standard error
};

struct AdminSettings {
  std::string host;  // empty = admin endpoint off
  uint16_t port = 0;
  bool allow_remote = false;  // a non-loopback listen address is an error unless set
};

// State shared between gateway instances through Redis (SPEC §8).
struct SharedSettings {
  std::string redis;      // as written: "IP:port", "[IPv6]:port" or "unix:/path"
  std::string host;       // IP literal, no brackets; empty for a unix socket
  uint16_t port = 0;      // TCP port; 0 for a unix socket
  std::string unix_path;  // the socket path after "unix:"; empty for TCP
  // Its first line is the AUTH password: the password itself is never in the policy (which
  // is shown by `explain` and kept in version control). Empty = no AUTH.
  std::string password_file;
  std::string prefix = "smtpgate:";  // every key and channel name starts with it
  std::string instance;  // this instance in events and logs; empty = the host name at run time
};

struct Policy {
  int version = 1;
  std::string hostname;
  Mode mode = Mode::Enforce;
  // Event loops (threads) serving sessions (SPEC §8); 0 = "auto": one per CPU.
  uint32_t workers = 0;
  DomainSet local_domains;
  std::vector<std::string> list_names;  // origin tags of AddressSet entries: "" = inline
  std::vector<Listener> listeners;
  TlsSettings tls;
  MxPolicy mx;
  SubmissionPolicy submission;
  BruteForcePolicy brute_force;
  ConnectionLimits connections;
  Timeouts timeouts;
  MessagePolicy message;
  BackendSettings backend;
  AddressSet trusted_proxies;
  LogSettings log;
  AdminSettings admin;
  std::optional<SharedSettings> shared;  // absent: no state shared between instances
  std::string source_path;               // the file it was loaded from

  const Listener* find_listener(std::string_view name) const;
  Mode mx_mode() const { return mx.mode.value_or(mode); }
  Mode submission_mode() const { return submission.mode.value_or(mode); }
  Mode brute_force_mode() const { return brute_force.mode.value_or(mode); }
};

using PolicySnapshot = std::shared_ptr<const Policy>;

}  // namespace smtpgate
