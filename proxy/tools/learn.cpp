#include "proxy/tools/learn.h"

#include <set>

#include "policy/domain_set.h"

namespace smtpgate {
namespace {

std::string_view domain_of(std::string_view address) {
  auto at = address.rfind('@');
  return at == std::string_view::npos ? std::string_view{} : address.substr(at + 1);
}

// A submission.senders entry (lower-cased, as the loader keeps them) takes the address; the
// same reading as the policy engine's.
bool entry_matches(std::string_view entry, std::string_view address) {
  const std::string_view domain = domain_of(address);
  if (entry == "*") return true;
  if (entry.starts_with("@*.")) {
    const std::string_view parent = entry.substr(2);  // ".customers.example"
    return domain.size() > parent.size() && domain.ends_with(parent);
  }
  if (entry.starts_with('@')) return entry.substr(1) == domain;
  return entry == address;
}

// A list name the loader accepts (letters, digits, ".", "_", "-"; at most 64).
std::string list_name(std::string_view login) {
  std::string out = "learned-";
  for (char c : login) {
    const bool simple =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    out += simple ? c : '-';
  }
  if (out.size() > 60) out.resize(60);
  return out;
}

}  // namespace

Learner::Learner(const Policy& policy, LearnOptions options) : policy_(policy), options_(options) {}

void Learner::add(const TransactionEvent& t) {
  ++transactions_;
  if (t.auth != "ok" || t.login.empty()) {
    ++without_login_;
    return;
  }
  const std::string login = ascii_lower(t.login);
  auto it = logins_.find(login);
  if (it == logins_.end()) {
    if (logins_.size() >= options_.max_logins) {
      ++logins_omitted_;
      return;
    }
    it = logins_.emplace(login, Stats{}).first;
  }
  Stats& s = it->second;
  ++s.transactions;
  // The null sender needs no entry: an authenticated login may always use it.
  if (!t.from.empty() && t.from != "<>") {
    const std::string from = ascii_lower(t.from);
    auto f = s.senders.find(from);
    if (f != s.senders.end()) {
      ++f->second;
    } else if (s.senders.size() < options_.max_senders_per_login) {
      s.senders.emplace(from, 1);
    } else {
      ++s.senders_omitted;
    }
  }
  if (auto ip = parse_client_address(t.client)) {
    auto c = s.clients.find(*ip);
    if (c != s.clients.end()) {
      ++c->second;
    } else if (s.clients.size() < options_.max_clients_per_login) {
      s.clients.emplace(*ip, 1);
    } else {
      ++s.clients_omitted;
    }
  }
}

LearnedLogin Learner::summarise(const std::string& login, const Stats& s) const {
  LearnedLogin out;
  out.login = login;
  out.transactions = s.transactions;
  out.senders_omitted = s.senders_omitted;
  out.clients_omitted = s.clients_omitted;

  const auto& sub = policy_.submission;
  static const std::vector<std::string> kNone;
  auto listed = sub.senders.find(login);
  const std::vector<std::string>& entries = listed != sub.senders.end() ? listed->second : kNone;
  // New addresses by domain: a domain with collapse_at of them becomes "@domain".
  std::map<std::string, size_t> fresh_per_domain;
  for (const auto& [address, n] : s.senders) {
    LearnedSender ls;
    ls.address = address;
    ls.transactions = n;
    const std::string_view domain = domain_of(address);
    ls.by_auth_match =
        sub.auth_match == AuthMatch::None ||
        (sub.auth_match == AuthMatch::Address && address == login) ||
        (sub.auth_match == AuthMatch::Domain && !domain.empty() && domain == domain_of(login));
    if (!ls.by_auth_match) {
      for (const auto& e : entries) {
        if (entry_matches(e, address)) {
          ls.entry = e;
          break;
        }
      }
      if (ls.entry.empty()) ++fresh_per_domain[std::string(domain)];
    }
    out.senders.push_back(std::move(ls));
  }
  std::map<std::string, ProposedEntry> proposed;
  for (auto& ls : out.senders) {
    if (ls.by_auth_match) continue;
    bool in_policy = !ls.entry.empty();
    if (!in_policy) {
      const std::string domain(domain_of(ls.address));
      const bool collapse = !domain.empty() && fresh_per_domain[domain] >= options_.collapse_at;
      ls.entry = collapse ? "@" + domain : ls.address;
    }
    ProposedEntry& p = proposed[ls.entry];
    p.entry = ls.entry;
    p.in_policy = in_policy;
    ++p.addresses;
    p.transactions += ls.transactions;
  }
  for (auto& [entry, p] : proposed) out.proposed.push_back(std::move(p));
  for (const auto& e : entries)
    if (!proposed.contains(e)) out.unused.push_back(e);

  for (const auto& [ip, n] : s.clients) {
    LearnedClient c;
    c.cidr = Cidr{ip, static_cast<uint8_t>(ip.is_v4() ? 32 : 128)};
    c.transactions = n;
    auto m = sub.access.entries.lookup(ip);
    c.allowed_now = m ? m->access == Access::Allow : sub.access.default_access == Access::Allow;
    if (m && m->access == Access::Allow && m->origin < policy_.list_names.size())
      c.allowed_by = policy_.list_names[m->origin];
    out.clients.push_back(std::move(c));
  }
  return out;
}

LearnReport Learner::report() const {
  LearnReport r;
  r.auth_match = policy_.submission.auth_match;
  r.transactions = transactions_;
  r.without_login = without_login_;
  r.logins_omitted = logins_omitted_;
  std::set<std::string> names;
  for (const auto& [login, stats] : logins_) {
    LearnedLogin l = summarise(login, stats);
    // Two logins may sanitise alike ("a+b@x" and "a-b@x"): the second gets a number.
    std::string name = list_name(login);
    for (int i = 2; names.contains(name); ++i) name = list_name(login) + "-" + std::to_string(i);
    names.insert(name);
    l.list = std::move(name);
    r.logins.push_back(std::move(l));
  }
  return r;
}

Result<LearnReport> learn_files(const Policy& policy, const std::vector<std::string>& paths,
                                const LearnOptions& options) {
  Learner learner(policy, options);
  LogScan scan(paths, {"transaction"});
  auto ok = scan.run([&](std::string_view, const nlohmann::json& doc) {
    if (auto t = parse_transaction(doc)) {
      learner.add(*t);
    } else {
      ++scan.counts.malformed;
    }
  });
  if (!ok) return Result<LearnReport>::fail(ok.error());
  LearnReport r = learner.report();
  r.counts = scan.counts;
  r.warnings = std::move(scan.warnings);
  return Result<LearnReport>::ok(std::move(r));
}

}  // namespace smtpgate
