#include <catch2/catch.hpp>

#include "policy/ip_address.h"

using smtpgate::Cidr;
using smtpgate::IpAddress;

namespace {

std::string canon(const char* text) {
  auto ip = IpAddress::parse(text);
  REQUIRE(ip);
  return ip->to_string();
}

// With host bits masked (a policy file's entries must not have any: see the next test).
std::string cidr(const char* text) {
  auto c = Cidr::parse(text, true);
  INFO(c.error());
  REQUIRE(c);
  return c->to_string();
}

std::string cidr_error(const char* text) {
  auto c = Cidr::parse(text);
  REQUIRE_FALSE(c);
  return c.error();
}

}  // namespace

TEST_CASE("IpAddress parses IPv4 strictly", "[ip]") {
  auto ip = IpAddress::parse("192.0.2.1");
  REQUIRE(ip);
  CHECK(ip->is_v4());
  CHECK(ip->v4_host_order() == 0xC0000201u);
  CHECK(ip->to_string() == "192.0.2.1");
  CHECK(canon("0.0.0.0") == "0.0.0.0");
  CHECK(canon("255.255.255.255") == "255.255.255.255");

  for (const char* bad :
       {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "203.0.113.300", "01.2.3.4", "1.2.3.4 ", " 1.2.3.4",
        "1.2.3.4/32", "0x7f.0.0.1", "127.1", "1.2.3.-4", "localhost"}) {
    INFO(bad);
    CHECK_FALSE(IpAddress::parse(bad));
  }
  // An embedded NUL must not let "1.2.3.4\0junk" through as 1.2.3.4.
  CHECK_FALSE(IpAddress::parse(std::string_view("1.2.3.4\0x", 9)));
  CHECK_FALSE(IpAddress::parse(std::string(200, '1')));
}

TEST_CASE("IpAddress parses IPv6 and prints RFC 5952 form", "[ip]") {
  CHECK(canon("2001:DB8:0:0:0:0:0:1") == "2001:db8::1");
  CHECK(canon("2001:0db8:0000:0000:0000:0000:0000:0001") == "2001:db8::1");
  CHECK(canon("::") == "::");
  CHECK(canon("::1") == "::1");
  CHECK(canon("1::") == "1::");
  // A single zero group is not compressed.
  CHECK(canon("2001:db8:0:1:1:1:1:1") == "2001:db8:0:1:1:1:1:1");
  // The longest run wins; on a tie the first.
  CHECK(canon("2001:0:0:1:0:0:0:1") == "2001:0:0:1::1");
  CHECK(canon("2001:db8:0:0:1:0:0:1") == "2001:db8::1:0:0:1");
  CHECK(canon("fe80::abcd:ef01") == "fe80::abcd:ef01");
  // IPv4-compatible (deprecated) addresses print as plain hex groups.
  CHECK(canon("::1.2.3.4") == "::102:304");
  CHECK(canon("::2:3") == "::2:3");

  for (const char* bad :
       {"1:2:3:4:5:6:7:8:9", "1::2::3", "fe80::1%eth0", "[::1]", "12345::", "::g", ":1", "1:"}) {
    INFO(bad);
    CHECK_FALSE(IpAddress::parse(bad));
  }
}

TEST_CASE("IPv4-mapped IPv6 becomes IPv4", "[ip]") {
  auto ip = IpAddress::parse("::ffff:192.0.2.1");
  REQUIRE(ip);
  CHECK(ip->is_v4());
  CHECK(ip->to_string() == "192.0.2.1");
  CHECK(*ip == *IpAddress::parse("192.0.2.1"));
  CHECK(*IpAddress::parse("::FFFF:c000:0201") == *IpAddress::parse("192.0.2.1"));

  std::array<uint8_t, 16> b{};
  b[10] = b[11] = 0xff;
  b[12] = 10;
  b[15] = 7;
  CHECK(IpAddress::v6(b).is_v4());
  CHECK(IpAddress::v6(b).to_string() == "10.0.0.7");

  // Neighbours of the mapped range stay IPv6.
  CHECK(IpAddress::parse("::fffe:1.2.3.4")->is_v6());
  CHECK(IpAddress::parse("0:0:0:0:1:ffff:102:304")->is_v6());
  CHECK(IpAddress::parse("64:ff9b::1.2.3.4")->is_v6());
}

TEST_CASE("IpAddress::v4 and ordering", "[ip]") {
  CHECK(IpAddress::v4(0x7f000001).to_string() == "127.0.0.1");
  CHECK(IpAddress::v4(0x7f000001) == *IpAddress::parse("127.0.0.1"));
  CHECK(*IpAddress::parse("10.0.0.1") < *IpAddress::parse("10.0.0.2"));
  CHECK(*IpAddress::parse("10.0.0.255") < *IpAddress::parse("10.0.1.0"));
  CHECK(*IpAddress::parse("255.255.255.255") < *IpAddress::parse("::"));
  CHECK(IpAddress() == IpAddress::v4(0));
}

TEST_CASE("is_loopback", "[ip]") {
  CHECK(IpAddress::parse("127.0.0.1")->is_loopback());
  CHECK(IpAddress::parse("127.255.255.254")->is_loopback());
  CHECK(IpAddress::parse("::1")->is_loopback());
  CHECK(IpAddress::parse("::ffff:127.0.0.1")->is_loopback());
  CHECK_FALSE(IpAddress::parse("128.0.0.1")->is_loopback());
  CHECK_FALSE(IpAddress::parse("126.255.255.255")->is_loopback());
  CHECK_FALSE(IpAddress::parse("::")->is_loopback());
  CHECK_FALSE(IpAddress::parse("::2")->is_loopback());
  CHECK_FALSE(IpAddress::parse("1::1")->is_loopback());
}

TEST_CASE("Cidr::parse", "[ip][cidr]") {
  CHECK(cidr("192.0.2.0/24") == "192.0.2.0/24");
  CHECK(cidr("192.0.2.77/24") == "192.0.2.0/24");  // host bits cleared
  CHECK(cidr("192.0.2.77") == "192.0.2.77/32");
  CHECK(cidr("0.0.0.0/0") == "0.0.0.0/0");
  CHECK(cidr("255.255.255.255/0") == "0.0.0.0/0");
  CHECK(cidr("10.255.255.255/9") == "10.128.0.0/9");
  CHECK(cidr("10.1.2.3/31") == "10.1.2.2/31");
  CHECK(cidr("2001:db8::/32") == "2001:db8::/32");
  CHECK(cidr("2001:db8:ffff::1/33") == "2001:db8:8000::/33");
  CHECK(cidr("2001:DB8::1") == "2001:db8::1/128");
  CHECK(cidr("::/0") == "::/0");
  CHECK(cidr("ffff::/0") == "::/0");
  CHECK(cidr("::1/128") == "::1/128");
  CHECK(cidr("10.0.0.0/08") == "10.0.0.0/8");

  auto c = Cidr::parse("192.0.2.77/24", true);
  REQUIRE(c);
  CHECK(c->prefix == 24);
  CHECK(c->address.is_v4());
  CHECK(c->address.to_string() == "192.0.2.0");
}

TEST_CASE("Cidr::parse: host bits set are an error naming both readings", "[ip][cidr]") {
  CHECK(cidr_error("127.0.0.10/24") ==
        "\"127.0.0.10/24\" has host bits set; did you mean \"127.0.0.0/24\" or "
        "\"127.0.0.10/32\"?");
  CHECK(cidr_error("2001:db8::1/64") ==
        "\"2001:db8::1/64\" has host bits set; did you mean \"2001:db8::/64\" or "
        "\"2001:db8::1/128\"?");
  CHECK(cidr_error("255.255.255.255/0").find("\"0.0.0.0/0\"") != std::string::npos);
  CHECK(Cidr::parse("127.0.0.0/24"));
  CHECK(Cidr::parse("127.0.0.10"));
  CHECK(Cidr::parse("2001:db8::/64"));
}

TEST_CASE("Cidr::parse maps ::ffff:0:0/96 prefixes to IPv4", "[ip][cidr]") {
  auto c = Cidr::parse("::ffff:192.0.2.0/120");
  REQUIRE(c);
  CHECK(c->address.is_v4());
  CHECK(c->prefix == 24);
  CHECK(c->to_string() == "192.0.2.0/24");
  CHECK(cidr("::ffff:0:0/96") == "0.0.0.0/0");
  CHECK(cidr("::ffff:1.2.3.4") == "1.2.3.4/32");
  // Shorter than /96 reaches beyond the mapped range: it stays an IPv6 prefix.
  CHECK(cidr("::ffff:1.2.3.4/95") == "::fffe:0:0/95");
  CHECK(cidr("::ffff:1.2.3.4/64") == "::/64");
}

TEST_CASE("Cidr::parse errors", "[ip][cidr]") {
  CHECK(cidr_error("203.0.113.300") == "\"203.0.113.300\" is not an IP address or CIDR");
  CHECK(cidr_error("10.0.0.0/33") == "\"10.0.0.0/33\": prefix /33 is out of range for IPv4");
  CHECK(cidr_error("::/129") == "\"::/129\": prefix /129 is out of range for IPv6");
  CHECK(cidr_error("::ffff:1.2.3.4/129") ==
        "\"::ffff:1.2.3.4/129\": prefix /129 is out of range for IPv6");
  for (const char* bad : {"", "/24", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/8/8",
                          "10.0.0.0/ 8", "10.0.0.0/8 ", "10.0.0.0/0008", "10.0.0.0/x",
                          "example.com", "[::1]/128", "10.0.0.0/99999999999"}) {
    INFO(bad);
    auto r = Cidr::parse(bad);
    CHECK_FALSE(r);
    CHECK(r.error().find("is not an IP address or CIDR") != std::string::npos);
  }
}

TEST_CASE("Cidr::contains", "[ip][cidr]") {
  auto net = *Cidr::parse("192.0.2.0/25");
  CHECK(net.contains(*IpAddress::parse("192.0.2.0")));
  CHECK(net.contains(*IpAddress::parse("192.0.2.127")));
  CHECK_FALSE(net.contains(*IpAddress::parse("192.0.2.128")));
  CHECK_FALSE(net.contains(*IpAddress::parse("192.0.1.255")));
  CHECK(net.contains(*IpAddress::parse("::ffff:192.0.2.5")));

  auto all4 = *Cidr::parse("0.0.0.0/0");
  auto all6 = *Cidr::parse("::/0");
  CHECK(all4.contains(*IpAddress::parse("255.255.255.255")));
  CHECK_FALSE(all4.contains(*IpAddress::parse("::")));
  CHECK(all6.contains(*IpAddress::parse("ffff::1")));
  CHECK_FALSE(all6.contains(*IpAddress::parse("0.0.0.0")));
  CHECK_FALSE(all6.contains(*IpAddress::parse("::ffff:1.2.3.4")));

  auto v6 = *Cidr::parse("2001:db8:8000::/33");
  CHECK(v6.contains(*IpAddress::parse("2001:db8:8000::1")));
  CHECK(v6.contains(*IpAddress::parse("2001:db8:ffff:ffff::")));
  CHECK_FALSE(v6.contains(*IpAddress::parse("2001:db8:7fff:ffff::")));

  auto host = *Cidr::parse("2001:db8::1");
  CHECK(host.contains(*IpAddress::parse("2001:db8::1")));
  CHECK_FALSE(host.contains(*IpAddress::parse("2001:db8::2")));
}

TEST_CASE("IpAddress::masked keeps the prefix, clears the rest", "[ip]") {
  auto v6 = *IpAddress::parse("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
  CHECK(v6.masked(64).to_string() == "2001:db8:1:2::");
  CHECK(v6.masked(48).to_string() == "2001:db8:1::");
  CHECK(v6.masked(56).to_string() == "2001:db8:1::");
  CHECK(v6.masked(60).to_string() == "2001:db8:1::");
  CHECK(v6.masked(62).to_string() == "2001:db8:1::");
  CHECK(v6.masked(63).to_string() == "2001:db8:1:2::");
  CHECK(v6.masked(128) == v6);
  CHECK(IpAddress::parse("::1")->masked(64).to_string() == "::");
  auto v4 = *IpAddress::parse("192.0.2.77");
  CHECK(v4.masked(24).to_string() == "192.0.2.0");
  CHECK(v4.masked(32) == v4);
  // Two hosts of one /64 share a key; the next /64 does not.
  CHECK(IpAddress::parse("2001:db8:0:5::1")->masked(64) ==
        IpAddress::parse("2001:db8:0:5:ffff::9")->masked(64));
  CHECK(IpAddress::parse("2001:db8:0:5::1")->masked(64) !=
        IpAddress::parse("2001:db8:0:6::1")->masked(64));
}
