// Mail domains: exact names and "*.example.com" (subdomains at any depth, not the apex).
#pragma once

#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace smtpgate {

// ASCII case-insensitive; internationalized domains are compared as given (no IDNA).
class DomainSet {
 public:
  void add(std::string_view pattern);  // "example.com" or "*.example.com"
  bool contains(std::string_view domain) const;
  bool empty() const { return exact_.empty() && suffixes_.empty(); }

 private:
  std::unordered_set<std::string> exact_;  // lower-case
  std::vector<std::string> suffixes_;      // lower-case, with the leading dot: ".example.com"
};

std::string ascii_lower(std::string_view s);
bool iequals(std::string_view a, std::string_view b);

}  // namespace smtpgate
