// The loader's address lists: local_domains, named lists (inline or from a file), the
// access sections that use them, and entries ("@list" names, addresses, CIDRs).
#include <climits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "policy/loader_detail.h"

namespace smtpgate::loader_detail {

namespace {

// A bad list file gets this many line errors, then one summary: a wrong file given as a
// list (a log, a binary) must not bury the other errors under a million lines.
constexpr int kMaxListFileErrors = 50;

}  // namespace

void Loader::parse_local_domains(const json& v, const std::string& p) {
  if (!v.is_array()) {
    type_error(v, p, "an array of domains");
    return;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string q = child(p, i);
    auto s = as_string(v[i], q);
    if (!s) continue;
    std::string_view name = *s;
    bool wildcard = name.starts_with("*.");
    if (!is_domain(wildcard ? name.substr(2) : name)) {
      error(q, quote(*s) + " is not a domain (use \"example.com\" or \"*.example.com\")");
      continue;
    }
    policy_->local_domains.add(ascii_lower(*s));
  }
}

void Loader::parse_lists(const json& v, const std::string& p) {
  // Origin tags follow the order of Policy::list_names; 0 is reserved for inline entries.
  for (const auto& [name, value] : v.items()) {
    const std::string q = child(p, name);
    if (!is_simple_name(name)) {
      key_error(
          q, quote(name) + " is not a valid list name (letters, digits, \".\", \"_\" and \"-\")");
      continue;
    }
    NamedList list;
    list.origin = static_cast<uint32_t>(policy_->list_names.size());
    if (value.is_array()) {
      for (size_t i = 0; i < value.size(); ++i) {
        const std::string e = child(q, i);
        auto s = as_string(value[i], e);
        if (!s) continue;
        if (s->starts_with('@')) {
          error(e, quote(*s) + ": a list cannot refer to another list");
          continue;
        }
        auto cidr = Cidr::parse(*s);
        if (!cidr) {
          error(e, cidr.error());
          continue;
        }
        list.entries.push_back(*cidr);
      }
    } else if (value.is_object()) {
      check_keys(value, q, "lists.<name>");
      if (require(value, q, "file")) {
        const std::string fp = child(q, "file");
        if (auto path = as_string(value["file"], fp);
            path && (options_.check_files || options_.read_list_files)) {
          parse_list_file(*path, fp, list);
        }
      }
    } else {
      type_error(value, q, "an array of addresses or {\"file\": \"/path\"}");
      continue;
    }
    policy_->list_names.push_back(name);
    lists_.emplace(name, std::move(list));
  }
}

void Loader::parse_list_file(const std::string& path, const std::string& p, NamedList& out) {
  auto data = read_whole_file(path);
  if (!data) {
    error(p, "cannot read " + quote(path) + ": " + data.error());
    return;
  }
  TextPosition order_at = locator_.value(p).value_or(TextPosition{});
  int bad = 0;
  int line_no = 0;
  std::string_view rest = *data;
  while (!rest.empty()) {
    ++line_no;
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) {
      line.remove_suffix(1);
    }
    if (line.empty()) continue;
    auto cidr = Cidr::parse(line);
    if (cidr) {
      out.entries.push_back(*cidr);
      continue;
    }
    if (++bad <= kMaxListFileErrors) {
      add_error(path, {line_no, 0}, line_no, p, cidr.error(), order_at);
    }
  }
  if (bad > kMaxListFileErrors) {
    add_error(path, {}, INT_MAX, p,
              std::to_string(bad - kMaxListFileErrors) + " more bad lines not shown (" +
                  std::to_string(bad) + " in all)",
              order_at);
  }
}

void Loader::parse_access(const json& v, const std::string& p, std::string_view section_name,
                          AccessPolicy& out) {
  check_keys(v, p, section_name);
  read(v, p, "default", out.default_access, [&](auto& x, auto& q) {
    return as_enum<Access>(x, q, {{"allow", Access::Allow}, {"deny", Access::Deny}});
  });
  if (auto it = v.find("allow"); it != v.end()) {
    add_entries(*it, child(p, "allow"), out.entries, Access::Allow);
  }
  if (auto it = v.find("deny"); it != v.end()) {
    add_entries(*it, child(p, "deny"), out.entries, Access::Deny);
  }
}

void Loader::add_entries(const json& v, const std::string& p, AddressSet& set, Access access) {
  if (!v.is_array()) {
    type_error(v, p, "an array of addresses, CIDRs or \"@list\" names");
    return;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string q = child(p, i);
    auto s = as_string(v[i], q);
    if (!s) continue;
    if (s->starts_with('@')) {
      std::string name = s->substr(1);
      auto it = lists_.find(name);
      if (it == lists_.end()) {
        std::string msg = "undefined list " + quote(*s);
        std::vector<std::string_view> names(policy_->list_names.begin() + 1,
                                            policy_->list_names.end());
        if (auto near = closest(name, names)) {
          msg += " (did you mean " + quote("@" + std::string(*near)) + "?)";
        } else {
          msg += " (define it under \"lists\")";
        }
        error(q, msg);
        continue;
      }
      for (const Cidr& c : it->second.entries) set.add(c, access, it->second.origin);
      continue;
    }
    auto cidr = Cidr::parse(*s);
    if (!cidr) {
      error(q, cidr.error());
      continue;
    }
    set.add(*cidr, access, 0);
  }
}

}  // namespace smtpgate::loader_detail
