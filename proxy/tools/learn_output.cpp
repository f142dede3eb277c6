// learn's three outputs: the fragment as a JSON value, as commented text to paste, and
// everything for machines.
#include "proxy/tools/learn.h"

namespace smtpgate {
namespace {

using ojson = nlohmann::ordered_json;

std::string quote(std::string_view s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string plural(uint64_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

std::string_view auth_match_name(AuthMatch m) {
  return m == AuthMatch::Address ? "address" : m == AuthMatch::Domain ? "domain" : "none";
}

// One member or element of a commented JSON block: comment lines before it, its value (may
// span lines; none for a comment alone) and a comment after it.
struct Item {
  std::vector<std::string> before;
  std::string value;
  std::string note;
};

// `open`, the items (a comma after each value that another value follows, notes aligned),
// `close`; items indented by indent + 2.
std::string block(std::string_view open, const std::vector<Item>& items, std::string_view close,
                  size_t indent) {
  const std::string pad(indent + 2, ' ');
  size_t last_value = items.size();
  for (size_t i = 0; i < items.size(); ++i)
    if (!items[i].value.empty()) last_value = i;
  size_t width = 0;  // of the longest one-line value with its comma
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].value.empty() && items[i].value.find('\n') == std::string::npos)
      width = std::max(width, items[i].value.size() + (i < last_value ? 1 : 0));
  }
  std::string out(open);
  out += '\n';
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    for (const auto& c : it.before) out += pad + "// " + c + "\n";
    if (it.value.empty()) continue;
    std::string line = it.value + (i < last_value ? "," : "");
    if (!it.note.empty()) {
      const size_t last_line = line.size() - (line.rfind('\n') + 1);
      if (last_line < width) line.append(width - last_line, ' ');
      line += "  // " + it.note;
    }
    out += pad + line + "\n";
  }
  out += std::string(indent, ' ') + std::string(close);
  return out;
}

std::string sender_note(const ProposedEntry& p) {
  std::string n;
  if (p.entry.starts_with('@') || p.addresses > 1)
    n = plural(p.addresses, "address", "addresses") + ", ";
  n += plural(p.transactions, "transaction", "transactions");
  if (p.in_policy) n += "; in the policy now";
  return n;
}

std::string client_note(const LearnedClient& c) {
  std::string n = plural(c.transactions, "transaction", "transactions");
  if (c.allowed_now) {
    n += "; submission.access allows it now";
    if (!c.allowed_by.empty()) n += " (@" + c.allowed_by + ")";
  } else {
    n += "; submission.access denies it now";
  }
  return n;
}

uint64_t as_itself(const LearnedLogin& l) {
  uint64_t n = 0;
  for (const auto& s : l.senders)
    if (s.by_auth_match) n += s.transactions;
  return n;
}

}  // namespace

ojson learn_fragment(const LearnReport& r) {
  ojson senders = ojson::object(), lists = ojson::object(), allow = ojson::array();
  for (const auto& l : r.logins) {
    if (!l.proposed.empty()) {
      ojson entries = ojson::array();
      for (const auto& p : l.proposed) entries.push_back(p.entry);
      senders[l.login] = std::move(entries);
    }
    if (l.clients.empty()) continue;
    ojson ips = ojson::array();
    for (const auto& c : l.clients) ips.push_back(c.cidr.to_string());
    lists[l.list] = std::move(ips);
    allow.push_back("@" + l.list);
  }
  ojson frag;
  frag["submission"]["senders"] = std::move(senders);
  frag["submission"]["access"]["allow"] = std::move(allow);
  frag["lists"] = std::move(lists);
  return frag;
}

std::string learn_text(const LearnReport& r) {
  std::string out = "// smtpgate learn: " + plural(r.transactions, "transaction", "transactions") +
                    " in " + plural(r.counts.files, "file", "files") + "; " +
                    std::to_string(r.transactions - r.without_login - r.logins_omitted) + " by " +
                    plural(r.logins.size(), "login", "logins") + " after AUTH, " +
                    std::to_string(r.without_login) + " without.\n";
  const std::string skipped = skipped_summary(r.counts);
  if (!skipped.empty()) out += "// Skipped: " + skipped + ".\n";
  for (const auto& w : r.warnings) out += "// Warning: " + w + "\n";
  if (r.logins_omitted)
    out += "// Not counted: " + plural(r.logins_omitted, "transaction", "transactions") +
           " of logins over the limit of logins.\n";
  if (r.logins.empty()) {
    out += "// No login sent mail after AUTH: nothing to propose.\n{}\n";
    return out;
  }
  out +=
      "// Add the \"senders\" entries and the lists to the policy, and name the lists in\n"
      "// \"submission.access.allow\". Senders the login owns by auth_match \"" +
      std::string(auth_match_name(r.auth_match)) + "\" need no entry.\n";

  std::vector<Item> sender_items, allow_items, list_items;
  for (const auto& l : r.logins) {
    const uint64_t self = as_itself(l);
    std::string head = l.login + ": " + plural(l.transactions, "transaction", "transactions");
    if (self) head += ", " + std::to_string(self) + " as a sender auth_match allows";
    if (l.senders_omitted)
      head += "; " + plural(l.senders_omitted, "transaction", "transactions") +
              " from senders over the limit not counted";
    Item s;
    s.before.push_back(head);
    if (!l.unused.empty()) {
      std::string unused;
      for (const auto& u : l.unused) unused += (unused.empty() ? "" : ", ") + quote(u);
      s.before.push_back("in the policy, not used in these logs: " + unused);
    }
    if (!l.proposed.empty()) {
      std::vector<Item> entries;
      for (const auto& p : l.proposed) entries.push_back({{}, quote(p.entry), sender_note(p)});
      s.value = block(quote(l.login) + ": [", entries, "]", 6);
    } else {
      s.before.back() += "; no entry needed";
    }
    sender_items.push_back(std::move(s));

    if (l.clients.empty()) continue;
    allow_items.push_back({{}, quote("@" + l.list), l.login});
    std::vector<Item> ips;
    for (const auto& c : l.clients) ips.push_back({{}, quote(c.cidr.to_string()), client_note(c)});
    if (l.clients_omitted)
      ips.push_back({{plural(l.clients_omitted, "transaction", "transactions") +
                      " from addresses over the limit not counted"},
                     {},
                     {}});
    list_items.push_back(
        {{l.login + " logged in from " + plural(l.clients.size(), "address", "addresses")},
         block(quote(l.list) + ": [", ips, "]", 4),
         {}});
  }
  std::vector<Item> access = {{{}, block("\"allow\": [", allow_items, "]", 6), {}}};
  std::vector<Item> submission = {{{}, block("\"senders\": {", sender_items, "}", 4), {}},
                                  {{}, block("\"access\": {", access, "}", 4), {}}};
  std::vector<Item> top = {{{}, block("\"submission\": {", submission, "}", 2), {}},
                           {{}, block("\"lists\": {", list_items, "}", 2), {}}};
  out += block("{", top, "}", 0) + "\n";
  return out;
}

std::string learn_json(const LearnReport& r) {
  ojson doc;
  doc["counts"] = counts_json(r.counts);
  doc["counts"]["transactions"] = r.transactions;
  doc["counts"]["without_login"] = r.without_login;
  doc["counts"]["logins_omitted"] = r.logins_omitted;
  doc["warnings"] = r.warnings;
  doc["logins"] = ojson::array();
  for (const auto& l : r.logins) {
    ojson login = {{"login", l.login}, {"transactions", l.transactions}, {"list", l.list}};
    ojson senders = ojson::array();
    for (const auto& s : l.senders) {
      senders.push_back({{"address", s.address},
                         {"transactions", s.transactions},
                         {"auth_match", s.by_auth_match},
                         {"entry", s.by_auth_match ? ojson(nullptr) : ojson(s.entry)}});
    }
    login["senders"] = std::move(senders);
    login["senders_omitted"] = l.senders_omitted;
    ojson proposed = ojson::array();
    for (const auto& p : l.proposed) {
      proposed.push_back({{"entry", p.entry},
                          {"in_policy", p.in_policy},
                          {"addresses", p.addresses},
                          {"transactions", p.transactions}});
    }
    login["proposed"] = std::move(proposed);
    login["unused"] = l.unused;
    ojson clients = ojson::array();
    for (const auto& c : l.clients) {
      clients.push_back(
          {{"address", c.cidr.address.to_string()},
           {"cidr", c.cidr.to_string()},
           {"transactions", c.transactions},
           {"allowed_now", c.allowed_now},
           {"allowed_by", c.allowed_by.empty() ? ojson(nullptr) : ojson(c.allowed_by)}});
    }
    login["clients"] = std::move(clients);
    login["clients_omitted"] = l.clients_omitted;
    doc["logins"].push_back(std::move(login));
  }
  doc["fragment"] = learn_fragment(r);
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace smtpgate
