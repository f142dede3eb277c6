#include "policy/json_locator.h"

#include <cstdint>

namespace smtpgate {
namespace {

constexpr std::string_view kBom = "\xEF\xBB\xBF";
// Nesting deeper than this is no policy anyone writes; stop locating rather than build
// pointer strings that grow with the depth.
constexpr size_t kMaxDepth = 256;

bool is_continuation(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A cursor that keeps line and column as it advances, so positions cost nothing to record.
class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {
    if (text_.starts_with(kBom)) pos_ = kBom.size();
  }

  bool at_end() const { return pos_ >= text_.size(); }
  size_t offset() const { return pos_; }
  char peek(size_t ahead = 0) const {
    return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : '\0';
  }
  TextPosition here() const { return {line_, column_}; }

  void advance() {
    auto c = static_cast<unsigned char>(text_[pos_++]);
    if (c == '\n') {
      ++line_;
      column_ = 1;
    } else if (!is_continuation(c)) {
      ++column_;
    }
  }

  // Whitespace and comments; false on a stray '/' or an unterminated block comment.
  bool skip_blank() {
    while (!at_end()) {
      char c = peek();
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        advance();
      } else if (c == '/' && peek(1) == '/') {
        // Ends at CR as well, as in nlohmann.
        while (!at_end() && peek() != '\n' && peek() != '\r') advance();
      } else if (c == '/' && peek(1) == '*') {
        advance();
        advance();
        while (!at_end() && !(peek() == '*' && peek(1) == '/')) advance();
        if (at_end()) return false;
        advance();
        advance();
      } else if (c == '/') {
        return false;
      } else {
        break;
      }
    }
    return true;
  }

  // A string at the cursor ('"'); decodes escapes into out when given.
  bool string(std::string* out) {
    advance();  // opening quote
    while (!at_end()) {
      char c = peek();
      if (c == '"') {
        advance();
        return true;
      }
      if (c != '\\') {
        if (out) *out += c;
        advance();
        continue;
      }
      advance();
      if (at_end()) return false;
      char e = peek();
      advance();
      switch (e) {
        case '"':
        case '\\':
        case '/':
          if (out) *out += e;
          break;
        case 'b':
          if (out) *out += '\b';
          break;
        case 'f':
          if (out) *out += '\f';
          break;
        case 'n':
          if (out) *out += '\n';
          break;
        case 'r':
          if (out) *out += '\r';
          break;
        case 't':
          if (out) *out += '\t';
          break;
        case 'u': {
          auto cp = hex4();
          if (!cp) return false;
          uint32_t code = *cp;
          // A high surrogate followed by an escaped low surrogate is one code point.
          if (code >= 0xD800 && code <= 0xDBFF && peek() == '\\' && peek(1) == 'u') {
            advance();
            advance();
            auto low = hex4();
            if (!low) return false;
            if (*low >= 0xDC00 && *low <= 0xDFFF) {
              code = 0x10000 + ((code - 0xD800) << 10) + (*low - 0xDC00);
            } else if (out) {
              append_utf8(*out, code);
              code = *low;
            }
          }
          if (out) append_utf8(*out, code);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }

  // true, false, null or a number: everything up to the next delimiter.
  bool literal() {
    size_t start = pos_;
    while (!at_end()) {
      char c = peek();
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == ']' || c == '}' ||
          c == ':' || c == '/' || c == '"' || c == '[' || c == '{') {
        break;
      }
      advance();
    }
    return pos_ > start;
  }

 private:
  std::optional<uint32_t> hex4() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      if (at_end()) return std::nullopt;
      char c = peek();
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        return std::nullopt;
      }
      v = v * 16 + static_cast<uint32_t>(d);
      advance();
    }
    return v;
  }

  std::string_view text_;
  size_t pos_ = 0;
  int line_ = 1;
  int column_ = 1;
};

}  // namespace

TextPosition position_at(std::string_view text, size_t offset) {
  Cursor cursor(text);
  for (size_t i = text.starts_with(kBom) ? kBom.size() : 0; i < offset && i < text.size(); ++i) {
    cursor.advance();
  }
  return cursor.here();
}

TextPosition syntax_error_position(std::string_view text, size_t offset) {
  if (offset >= text.size()) return position_at(text, text.size());
  Cursor in(text);
  std::optional<TextPosition> token;  // start of the last token at or before offset
  while (true) {
    bool blank_ok = in.skip_blank();
    if (in.at_end() || in.offset() > offset) break;
    token = in.here();
    if (!blank_ok) break;  // a stray '/': the error is here
    char c = in.peek();
    if (c == '"') {
      if (!in.string(nullptr)) break;
    } else if (c == '{' || c == '}' || c == '[' || c == ']' || c == ',' || c == ':') {
      in.advance();
    } else if (!in.literal()) {
      in.advance();
    }
  }
  return token ? *token : position_at(text, offset);
}

std::string json_pointer_escape(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

JsonLocator::JsonLocator(std::string_view text) {
  struct Frame {
    bool object;
    std::string pointer;
    size_t index = 0;
    std::unordered_map<std::string, TextPosition> keys;  // objects: first position of each key
  };
  enum class Want { Value, ObjectStart, Key, ArrayStart, AfterValue };

  Cursor in(text);
  std::vector<Frame> stack;
  std::string pointer;  // of the value about to be read
  std::optional<TextPosition> key_pos;
  Want want = Want::Value;

  auto element_pointer = [](const Frame& f) { return f.pointer + "/" + std::to_string(f.index); };

  while (in.skip_blank() && !in.at_end()) {
    char c = in.peek();
    switch (want) {
      case Want::Value: {
        // A repeated key's later value replaces the earlier one, as in nlohmann.
        entries_.insert_or_assign(pointer, Entry{in.here(), key_pos});
        if (c == '{' || c == '[') {
          if (stack.size() >= kMaxDepth) return;
          in.advance();
          stack.push_back(Frame{c == '{', pointer, 0, {}});
          want = c == '{' ? Want::ObjectStart : Want::ArrayStart;
          continue;
        }
        if (!(c == '"' ? in.string(nullptr) : in.literal())) return;
        want = Want::AfterValue;
        continue;
      }
      case Want::ObjectStart:
        if (c == '}') {
          in.advance();
          stack.pop_back();
          want = Want::AfterValue;
          continue;
        }
        [[fallthrough]];
      case Want::Key: {
        if (c != '"') return;
        TextPosition at = in.here();
        std::string name;
        if (!in.string(&name) || !in.skip_blank() || in.peek() != ':') return;
        in.advance();
        Frame& f = stack.back();
        pointer = f.pointer + "/" + json_pointer_escape(name);
        auto [it, inserted] = f.keys.emplace(name, at);
        if (!inserted) duplicates_.push_back({pointer, at, it->second});
        key_pos = at;
        want = Want::Value;
        continue;
      }
      case Want::ArrayStart:
        if (c == ']') {
          in.advance();
          stack.pop_back();
          want = Want::AfterValue;
          continue;
        }
        pointer = element_pointer(stack.back());
        key_pos.reset();
        want = Want::Value;
        continue;
      case Want::AfterValue: {
        if (stack.empty()) return;  // the document is complete
        Frame& f = stack.back();
        if (c == ',') {
          in.advance();
          if (f.object) {
            want = Want::Key;
          } else {
            ++f.index;
            pointer = element_pointer(f);
            key_pos.reset();
            want = Want::Value;
          }
          continue;
        }
        if (c == (f.object ? '}' : ']')) {
          in.advance();
          stack.pop_back();
          continue;
        }
        return;
      }
    }
  }
}

std::optional<TextPosition> JsonLocator::value(const std::string& pointer) const {
  auto it = entries_.find(pointer);
  if (it == entries_.end()) return std::nullopt;
  return it->second.value;
}

std::optional<TextPosition> JsonLocator::key(const std::string& pointer) const {
  auto it = entries_.find(pointer);
  if (it == entries_.end()) return std::nullopt;
  return it->second.key;
}

}  // namespace smtpgate
