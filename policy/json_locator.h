// Maps JSON pointers of a policy text to the line and column where each value (and each
// object member's key) starts, so that validation errors can point into the file.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace smtpgate {

struct TextPosition {
  int line = 0;    // 1-based; 0 = unknown
  int column = 0;  // 1-based, in characters (UTF-8 code points); 0 = unknown
};

// Line and column of a byte offset (0-based) in text. A leading UTF-8 byte order mark takes
// no column; an offset past the end gives the position just after the last character.
TextPosition position_at(std::string_view text, size_t offset);

// Where to show a syntax error that the parser reports at byte offset (the last byte it
// read): the start of the token it was reading, or the end of a truncated document.
TextPosition syntax_error_position(std::string_view text, size_t offset);

// RFC 6901 escaping of one reference token: "~" -> "~0", "/" -> "~1".
std::string json_pointer_escape(std::string_view token);

// A scanner over JSON text with // and /* */ comments. It does not validate: it is run
// beside nlohmann::json::parse (which reports syntax errors) and stops quietly at the first
// token it does not expect. It walks iteratively, so deep nesting cannot exhaust the stack.
class JsonLocator {
 public:
  struct DuplicateKey {
    std::string pointer;    // of the repeated member, e.g. "/mx/access/default"
    TextPosition position;  // of the repeated key
    TextPosition first;     // of the first occurrence
  };

  explicit JsonLocator(std::string_view text);

  // Where the value at pointer starts ("" = the whole document); nullopt if unknown.
  std::optional<TextPosition> value(const std::string& pointer) const;
  // Where the key of the object member at pointer starts; nullopt for array elements.
  std::optional<TextPosition> key(const std::string& pointer) const;
  // Keys that occur twice in one object: nlohmann keeps only the last, silently.
  const std::vector<DuplicateKey>& duplicate_keys() const { return duplicates_; }

 private:
  struct Entry {
    TextPosition value;
    std::optional<TextPosition> key;
  };
  std::unordered_map<std::string, Entry> entries_;
  std::vector<DuplicateKey> duplicates_;
};

}  // namespace smtpgate
