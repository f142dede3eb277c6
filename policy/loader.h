// JSON (with comments) -> Policy, validating everything and reporting every error.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/policy.h"

namespace smtpgate {

struct LoadError {
  std::string file;     // the path as given
  int line = 0;         // 1-based; 0 when unknown
  int column = 0;       // 1-based, points at the offending value; 0 when unknown
  std::string pointer;  // JSON pointer, e.g. "/submission/access/allow/2"
  std::string message;
  // "policy.json:14:9: /submission/access/allow/2: "203.0.113.300" is not an IP address or CIDR"
  std::string to_string() const;
};

struct LoadOptions {
  bool check_files = true;  // certificate/key/list files exist and are readable, key matches cert
  // Read list files even when check_files is off (explain needs their entries, not the
  // certificates of the production machine).
  bool read_list_files = false;
  bool cli_dry_run = false;  // --dry-run forces the global mode to dry-run
  // Verifies certificate and key (parse, key matches cert); returns an error message or "".
  // Supplied by the proxy (OpenSSL lives there); unset = files only checked for readability.
  std::function<std::string(const TlsSettings&)> tls_checker;
};

struct LoadResult {
  std::shared_ptr<Policy> policy;  // set only when errors is empty
  std::vector<LoadError> errors;
  bool ok() const { return errors.empty() && policy != nullptr; }
};

LoadResult load_policy_file(const std::string& path, const LoadOptions& options = {});
LoadResult load_policy_text(std::string_view text, const std::string& display_name,
                            const LoadOptions& options = {});

}  // namespace smtpgate
