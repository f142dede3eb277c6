#include <catch2/catch.hpp>

#include <string>

#include "proxy/smtp/received_header.h"

using smtpgate::append_received_header;
using smtpgate::IpAddress;
using smtpgate::ReceivedHeader;

namespace {

std::vector<std::string> lines_of(const std::string& header) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < header.size()) {
    const size_t end = header.find("\r\n", at);
    REQUIRE(end != std::string::npos);
    out.push_back(header.substr(at, end - at));
    at = end + 2;
  }
  return out;
}

}  // namespace

TEST_CASE("received header: the usual shape", "[received]") {
  const IpAddress ip = IpAddress::v4(0xC6336409);  // 198.51.100.9
  ReceivedHeader h;
  h.helo = "client.example";
  h.client = &ip;
  h.hostname = "mx.example.com";
  h.session_id = "abc";
  h.message_number = 2;
  h.listener = "mx";
  h.recipient = "user@example.com";
  std::string out;
  append_received_header(out, h);
  const auto lines = lines_of(out);
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == "Received: from client.example ([198.51.100.9])");
  CHECK(lines[1] == "\tby mx.example.com (smtpgate) with ESMTP id abc.2");
  CHECK(lines[2] == "\t(listener mx)");
  CHECK(lines[3].rfind("\tfor <user@example.com>; ", 0) == 0);
}

TEST_CASE("received header: hostile client parts stay short and printable", "[received]") {
  const IpAddress ip = IpAddress::v4(0x7F000001);
  const std::string helo(990, 'h');
  const std::string login = std::string(12000, 'l') + "\x1b(\r\n)";
  const std::string rcpt = std::string(300, 'r') + "@example.com";
  ReceivedHeader h;
  h.helo = helo;
  h.client = &ip;
  h.hostname = "mx.example.com";
  h.session_id = "abc";
  h.listener = "sub";
  h.authenticated = true;
  h.login = login;
  h.recipient = rcpt;
  std::string out;
  append_received_header(out, h);
  for (const auto& line : lines_of(out)) {
    INFO(line.substr(0, 60));
    CHECK(line.size() <= 998);
    for (char c : line) CHECK(((c >= 32 && c < 127) || c == '\t'));
  }
  CHECK(out.find("Received: from " + std::string(255, 'h') + " ([127.0.0.1])") == 0);
  CHECK(out.find("for <") == std::string::npos);  // a recipient that long is left out
}
