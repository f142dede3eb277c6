// `smtpgate learn`: which senders each login used and where it logged in from, read from the
// gateway's `transaction` log lines, proposed as a policy fragment (SPEC §11): entries for
// submission.senders and one list of client addresses per login.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "policy/ip_address.h"
#include "policy/policy.h"
#include "policy/result.h"
#include "proxy/tools/log_events.h"

namespace smtpgate {

struct LearnOptions {
  // Distinct new addresses of one domain that become one "@domain" entry.
  size_t collapse_at = 5;
  // Memory bounds (a week of logs of a busy gateway): beyond them, addresses are counted only.
  size_t max_senders_per_login = 1000;
  size_t max_clients_per_login = 1000;
  size_t max_logins = 10000;
};

struct LearnedSender {
  std::string address;  // lower-cased
  uint64_t transactions = 0;
  bool by_auth_match = false;  // the policy's auth_match lets the login use it: no entry needed
  std::string entry;           // else the senders entry proposed for it
};

struct ProposedEntry {
  std::string entry;       // an address or "@domain" (or the policy's own entry that matched)
  bool in_policy = false;  // the policy has this entry for the login now
  uint64_t addresses = 0, transactions = 0;
};

struct LearnedClient {
  Cidr cidr;  // a /32 or /128
  uint64_t transactions = 0;
  bool allowed_now = false;  // submission.access allows it in the policy now
  std::string allowed_by;    // the list that allows it ("" = an inline entry or the default)
};

struct LearnedLogin {
  std::string login;  // lower-cased
  std::string list;   // the name of its list in the fragment: "learned-<login>"
  uint64_t transactions = 0;
  std::vector<LearnedSender> senders;  // by address
  uint64_t senders_omitted = 0;        // transactions from addresses over the cap
  std::vector<ProposedEntry> proposed;
  std::vector<std::string> unused;  // the policy's entries for the login that nothing used
  std::vector<LearnedClient> clients;
  uint64_t clients_omitted = 0;
};

struct LearnReport {
  AuthMatch auth_match = AuthMatch::Address;  // the policy's: which senders need no entry
  LogCounts counts;
  std::vector<std::string> warnings;  // files cut short
  uint64_t transactions = 0;          // transaction events read
  uint64_t without_login = 0;         // of those, not after a successful AUTH
  uint64_t logins_omitted = 0;        // transactions of logins over max_logins
  std::vector<LearnedLogin> logins;   // by login
};

// Aggregates transaction events in bounded memory.
class Learner {
 public:
  explicit Learner(const Policy& policy, LearnOptions options = {});
  void add(const TransactionEvent& t);
  LearnReport report() const;  // counts and warnings are the caller's

 private:
  struct Stats {
    uint64_t transactions = 0;
    std::map<std::string, uint64_t> senders;
    uint64_t senders_omitted = 0;
    std::map<IpAddress, uint64_t> clients;
    uint64_t clients_omitted = 0;
  };
  LearnedLogin summarise(const std::string& login, const Stats& s) const;

  const Policy& policy_;
  LearnOptions options_;
  std::map<std::string, Stats> logins_;
  uint64_t transactions_ = 0, without_login_ = 0, logins_omitted_ = 0;
};

// Reads the files (plain or gzip) and learns from every transaction event in them.
Result<LearnReport> learn_files(const Policy& policy, const std::vector<std::string>& paths,
                                const LearnOptions& options = {});

// The fragment as a JSON value: {"submission": {"senders", "access"}, "lists"}.
nlohmann::ordered_json learn_fragment(const LearnReport& r);
// The fragment as text to paste: JSON with // comments (the policy loader accepts them).
std::string learn_text(const LearnReport& r);
// Everything, for machines: counts, per-login detail and the fragment.
std::string learn_json(const LearnReport& r);

}  // namespace smtpgate
