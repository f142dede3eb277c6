#include "policy/domain_set.h"

#include <algorithm>

namespace smtpgate {

namespace {

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// "example.com." names the same domain as "example.com" (the root label made explicit).
std::string_view strip_root_dot(std::string_view s) {
  if (!s.empty() && s.back() == '.') s.remove_suffix(1);
  return s;
}

}  // namespace

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

void DomainSet::add(std::string_view pattern) {
  pattern = strip_root_dot(pattern);
  if (pattern.size() > 2 && pattern.substr(0, 2) == "*.") {
    // Kept sorted so contains() can binary-search each of the domain's suffixes.
    std::string suffix = ascii_lower(pattern.substr(1));
    auto it = std::lower_bound(suffixes_.begin(), suffixes_.end(), suffix);
    if (it == suffixes_.end() || *it != suffix) suffixes_.insert(it, std::move(suffix));
    return;
  }
  if (pattern.empty()) return;
  exact_.insert(ascii_lower(pattern));
}

bool DomainSet::contains(std::string_view domain) const {
  domain = strip_root_dot(domain);
  if (domain.empty()) return false;
  std::string d = ascii_lower(domain);
  if (exact_.count(d)) return true;
  if (suffixes_.empty()) return false;
  // Each ".label..." tail that leaves at least one character in front is a candidate;
  // starting at 1 keeps "*.example.com" from matching the apex ".example.com" itself.
  std::string_view view(d);
  for (size_t dot = view.find('.', 1); dot != std::string_view::npos;
       dot = view.find('.', dot + 1)) {
    if (std::binary_search(suffixes_.begin(), suffixes_.end(), view.substr(dot), std::less<>())) {
      return true;
    }
  }
  return false;
}

}  // namespace smtpgate
