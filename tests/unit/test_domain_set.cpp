#include <catch2/catch.hpp>

#include "policy/domain_set.h"

using smtpgate::ascii_lower;
using smtpgate::DomainSet;
using smtpgate::iequals;

TEST_CASE("ascii_lower and iequals", "[domain]") {
  CHECK(ascii_lower("Example.COM") == "example.com");
  CHECK(ascii_lower("") == "");
  CHECK(ascii_lower("@[]09-_") == "@[]09-_");
  // Bytes outside ASCII are left alone (no locale, no IDNA).
  CHECK(ascii_lower("\xC3\x84.de") == "\xC3\x84.de");
  CHECK(iequals("Example.COM", "example.com"));
  CHECK(iequals("", ""));
  CHECK_FALSE(iequals("example.com", "example.co"));
  CHECK_FALSE(iequals("example.com", "exbmple.com"));
  CHECK_FALSE(iequals("\xC3\xA4", "\xC3\x84"));
  CHECK_FALSE(iequals("[", "{"));  // '[' and '{' differ by the case bit but are not letters
}

TEST_CASE("DomainSet: exact names", "[domain]") {
  DomainSet set;
  CHECK(set.empty());
  CHECK_FALSE(set.contains("example.com"));
  set.add("Example.com");
  set.add("example.net.");
  CHECK_FALSE(set.empty());
  CHECK(set.contains("example.com"));
  CHECK(set.contains("EXAMPLE.COM"));
  CHECK(set.contains("example.com."));
  CHECK(set.contains("example.net"));
  CHECK(set.contains("Example.Net."));
  CHECK_FALSE(set.contains("sub.example.com"));
  CHECK_FALSE(set.contains("example.co"));
  CHECK_FALSE(set.contains("xexample.com"));
  CHECK_FALSE(set.contains("example.com.."));
  CHECK_FALSE(set.contains(""));
  CHECK_FALSE(set.contains("."));
}

TEST_CASE("DomainSet: wildcard subdomains", "[domain]") {
  DomainSet set;
  set.add("*.Example.org");
  CHECK_FALSE(set.empty());
  CHECK(set.contains("mail.example.org"));
  CHECK(set.contains("a.b.c.EXAMPLE.ORG"));
  CHECK(set.contains("mail.example.org."));
  CHECK_FALSE(set.contains("example.org"));  // not the apex
  CHECK_FALSE(set.contains("example.org."));
  CHECK_FALSE(set.contains(".example.org"));
  CHECK_FALSE(set.contains("badexample.org"));
  CHECK_FALSE(set.contains("mail.example.org.evil.com"));
  CHECK_FALSE(set.contains("example.org.evil.com"));

  set.add("example.org");  // the apex must be listed on its own
  CHECK(set.contains("example.org"));
}

TEST_CASE("DomainSet: several wildcards and exact names together", "[domain]") {
  DomainSet set;
  for (const char* p : {"*.b.example", "*.a.example", "c.example", "*.a.example", "*.z"})
    set.add(p);
  CHECK(set.contains("x.a.example"));
  CHECK(set.contains("x.b.example"));
  CHECK(set.contains("c.example"));
  CHECK(set.contains("host.z"));
  CHECK_FALSE(set.contains("a.example"));
  CHECK_FALSE(set.contains("x.c.example"));
  CHECK_FALSE(set.contains("example"));
  CHECK_FALSE(set.contains("z"));
}
