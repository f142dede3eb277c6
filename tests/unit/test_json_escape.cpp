// The log's JSON string escaping (every client-supplied text in a log line goes through it).
#include <catch2/catch.hpp>

#include <string>

#include "proxy/log.h"

namespace {

std::string esc(std::string_view s) {
  std::string out = "<";
  smtpgate::append_json_escaped(out, s);
  return out + ">";
}

}  // namespace

TEST_CASE("json escape: plain runs as they are, the rest escaped", "[log][json]") {
  CHECK(esc("") == "<>");
  CHECK(esc("user@example.com") == "<user@example.com>");
  CHECK(esc("a\"b\\c") == "<a\\\"b\\\\c>");
  CHECK(esc("line\r\nnext\tTab") == "<line\\r\\nnext\\tTab>");
  CHECK(esc(std::string("nul\0x\x1f\x7f", 7)) == "<nul\\u0000x\\u001f\x7f>");
  CHECK(esc("caf\xc3\xa9 \xe2\x82\xac") == "<caf\xc3\xa9 \xe2\x82\xac>");  // valid UTF-8 kept
  CHECK(esc("bad \xff end") == "<bad \\ufffd end>");                       // invalid replaced
  CHECK(esc("cut \xc3") == "<cut \\ufffd>");                               // truncated sequence
  CHECK(esc("\"") == "<\\\">");
  const std::string long_plain(1000, 'x');
  CHECK(esc(long_plain) == "<" + long_plain + ">");
}
