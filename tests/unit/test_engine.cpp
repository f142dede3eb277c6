// The decision engine: every rule id with an allow and a reject case, and dry-run.
#include <catch2/catch.hpp>

#include "policy/engine.h"
#include "policy/loader.h"

using namespace smtpgate;

namespace {

std::shared_ptr<Policy> load(const std::string& extra) {
  std::string text = R"({
    "version": 1, "hostname": "mx.example.com",
    "local_domains": ["example.com", "*.example.net"],
    "lists": { "cms": ["203.0.113.10", "2001:db8:10::/64"] },
    "listeners": [
      { "name": "mx", "listen": "127.0.0.1:25", "class": "mx" },
      { "name": "sub", "listen": "127.0.0.1:587", "class": "submission" },
      { "name": "legacy", "listen": "127.0.0.1:2525", "class": "auto" }
    ],
    "backend": { "address": "127.0.0.1:10025" })" +
                     extra + "}";
  LoadOptions o;
  o.check_files = false;
  auto r = load_policy_text(text, "test.json", o);
  if (!r.ok()) {
    for (const auto& e : r.errors) UNSCOPED_INFO(e.to_string());
  }
  REQUIRE(r.ok());
  return r.policy;
}

// Submission without TLS keeps these tests about the rules, not about certificates.
const std::string kBase = R"(,
    "submission": { "require_tls": false,
      "access": { "default": "deny", "allow": ["@cms"] },
      "senders": { "cms@example.com": ["noreply@example.com", "@customers.example.org"] } },
    "mx": { "access": { "default": "allow", "deny": ["198.51.100.0/24"] },
            "reject_local_sender": true, "max_recipients": 2 })";

SessionFacts facts(const Policy& p, const char* listener, const char* ip) {
  SessionFacts s;
  s.listener = p.find_listener(listener);
  REQUIRE(s.listener);
  s.client = *IpAddress::parse(ip);
  s.cls = engine::initial_class(*s.listener);
  return s;
}

MailPath path(const char* text) {
  auto r = parse_mail_path(text);
  REQUIRE(r);
  return *r;
}

}  // namespace

TEST_CASE("connect: mx.access allow and deny", "[engine]") {
  auto p = load(kBase);
  auto ok = engine::connect(*p, facts(*p, "mx", "192.0.2.1"));
  CHECK(ok.allowed());
  CHECK(ok.rule == "mx.access");
  auto no = engine::connect(*p, facts(*p, "mx", "198.51.100.7"));
  CHECK(no.verdict == Verdict::Reject);
  CHECK(no.rule == "mx.access");
  CHECK(no.enforced);
  CHECK(no.reply.line() == "554 5.7.1 mx.example.com access denied");
  CHECK(no.reply.close);
  CHECK_THAT(no.reason, Catch::Contains("198.51.100.0/24"));
}

TEST_CASE("connect: submission.access allow via a named list, deny by default", "[engine]") {
  auto p = load(kBase);
  auto ok = engine::connect(*p, facts(*p, "sub", "203.0.113.10"));
  CHECK(ok.allowed());
  CHECK(ok.rule == "submission.access");
  CHECK_THAT(ok.reason, Catch::Contains("@cms"));
  auto ok6 = engine::connect(*p, facts(*p, "sub", "2001:db8:10::5"));
  CHECK(ok6.allowed());
  auto no = engine::connect(*p, facts(*p, "sub", "203.0.113.11"));
  CHECK(no.blocks());
  CHECK(no.rule == "submission.access");
  CHECK_THAT(no.reason, Catch::Contains("default deny"));
}

TEST_CASE("connect: auto listener refuses only when both lists deny", "[engine]") {
  auto p = load(R"(,
    "submission": { "require_tls": false, "access": { "default": "deny", "allow": ["@cms"] } },
    "mx": { "access": { "default": "allow", "deny": ["198.51.100.0/24", "203.0.113.0/24"] } })");
  CHECK(engine::connect(*p, facts(*p, "legacy", "192.0.2.1")).allowed());
  // mx denies, submission allows: the CMS may still connect to submit.
  CHECK(engine::connect(*p, facts(*p, "legacy", "203.0.113.10")).allowed());
  auto both = engine::connect(*p, facts(*p, "legacy", "198.51.100.1"));
  CHECK(both.blocks());
  CHECK(both.reply.code == 554);
}

TEST_CASE("connect: a ban outranks lists, never_ban outranks a ban", "[engine]") {
  auto p = load(kBase + R"(, "brute_force": { "never_ban": ["@cms"] })");
  auto s = facts(*p, "mx", "192.0.2.1");
  s.banned = true;
  auto d = engine::connect(*p, s);
  CHECK(d.blocks());
  CHECK(d.rule == "ban");
  CHECK(d.reply.line() == "554 5.7.1 mx.example.com access denied");
  auto cms = facts(*p, "sub", "203.0.113.10");
  cms.banned = true;
  auto d2 = engine::connect(*p, cms);
  CHECK(d2.allowed());
  CHECK(d2.rule == "ban");
}

TEST_CASE("auth: mx.auth refuse and ban", "[engine]") {
  auto p = load(kBase);
  auto d = engine::auth_attempt(*p, facts(*p, "mx", "192.0.2.1"));
  CHECK(d.verdict == Verdict::Reject);
  CHECK(d.rule == "mx.auth");
  CHECK(d.reply.line() == "502 5.5.1 AUTH not available");
  CHECK(engine::auth_refusal_counts_as_failure(d));

  auto pb = load(kBase + R"(, "brute_force": { "never_ban": ["@cms"] })");
  auto pban = load(R"(, "mx": { "auth": "ban" }, "submission": { "require_tls": false },
                        "brute_force": { "never_ban": ["@cms"] })");
  auto b = engine::auth_attempt(*pban, facts(*pban, "mx", "192.0.2.1"));
  CHECK(b.verdict == Verdict::Ban);
  CHECK(b.rule == "mx.auth");
  // never_ban: refused, not banned
  auto nb = engine::auth_attempt(*pban, facts(*pban, "mx", "203.0.113.10"));
  CHECK(nb.verdict == Verdict::Reject);
  (void)pb;
}

TEST_CASE("auth: submission.require_tls", "[engine]") {
  auto p = load(R"(, "tls": {"cert": "/nonexistent/c.pem", "key": "/nonexistent/k.pem"},
                    "submission": { "access": { "default": "allow" } })");
  auto s = facts(*p, "sub", "192.0.2.1");
  auto no = engine::auth_attempt(*p, s);
  CHECK(no.blocks());
  CHECK(no.rule == "submission.require_tls");
  CHECK(no.reply.line() == "530 5.7.0 Must issue a STARTTLS command first");
  CHECK_FALSE(engine::auth_refusal_counts_as_failure(no));
  s.tls = true;
  CHECK(engine::auth_attempt(*p, s).allowed());
}

TEST_CASE("auth: auto listener checks submission.access at AUTH", "[engine]") {
  auto p = load(kBase);
  auto no = engine::auth_attempt(*p, facts(*p, "legacy", "192.0.2.1"));
  CHECK(no.blocks());
  CHECK(no.rule == "submission.access");
  CHECK(no.reply.line() == "535 5.7.8 Authentication credentials invalid");
  CHECK(engine::auth_refusal_counts_as_failure(no));
  auto ok = engine::auth_attempt(*p, facts(*p, "legacy", "203.0.113.10"));
  CHECK(ok.allowed());
  CHECK(ok.rule == "submission.access");
}

TEST_CASE("auth: result and brute force", "[engine]") {
  auto p = load(kBase + R"(, "brute_force": { "max_failures": 3, "never_ban": ["@cms"] })");
  auto s = facts(*p, "sub", "203.0.113.99");
  s.login = "cms@example.com";
  CHECK(engine::auth_result(*p, s, true).allowed());
  auto f = engine::auth_result(*p, s, false);
  CHECK(f.blocks());
  CHECK(f.rule == "auth");
  CHECK(f.reply.code == 535);
  CHECK(engine::brute_force(*p, s, 2).allowed());
  auto ban = engine::brute_force(*p, s, 3);
  CHECK(ban.verdict == Verdict::Ban);
  CHECK(ban.rule == "brute_force");
  CHECK(ban.reply.close);
  auto cms = facts(*p, "sub", "203.0.113.10");
  CHECK(engine::brute_force(*p, cms, 2).rule == "brute_force");
  auto saved = engine::brute_force(*p, cms, 10);
  CHECK(saved.allowed());
  CHECK(saved.rule == "brute_force.never_ban");  // logged by the session (never_ban saved it)
}

TEST_CASE("mail: submission.auth_required", "[engine]") {
  auto p = load(kBase);
  auto s = facts(*p, "sub", "203.0.113.10");
  auto no = engine::mail(*p, s, path("cms@example.com"), 0, {});
  CHECK(no.blocks());
  CHECK(no.rule == "submission.auth_required");
  CHECK(no.reply.line() == "530 5.7.0 Authentication required");
  s.authenticated = true;
  s.login = "cms@example.com";
  CHECK(engine::mail(*p, s, path("cms@example.com"), 0, {}).allowed());
}

TEST_CASE("mail: submission.auth_match address, domain, none and senders", "[engine]") {
  auto p = load(kBase);
  auto s = facts(*p, "sub", "203.0.113.10");
  s.authenticated = true;
  s.login = "cms@example.com";
  CHECK(engine::mail(*p, s, path("CMS@Example.COM"), 0, {}).allowed());
  CHECK(engine::mail(*p, s, path("noreply@example.com"), 0, {}).allowed());
  CHECK(engine::mail(*p, s, path("billing@customers.example.org"), 0, {}).allowed());
  CHECK(engine::mail(*p, s, path("billing@CUSTOMERS.example.org"), 0, {}).allowed());
  auto no = engine::mail(*p, s, path("ceo@example.com"), 0, {});
  CHECK(no.blocks());
  CHECK(no.rule == "submission.auth_match");
  CHECK(no.reply.line() == "553 5.7.1 Sender address rejected: not owned by user cms@example.com");
  // a subdomain of a listed @domain is not the domain
  CHECK(engine::mail(*p, s, path("x@sub.customers.example.org"), 0, {}).blocks());
  // the null sender is not an impersonation
  CHECK(engine::mail(*p, s, path(""), 0, {}).allowed());

  auto pd = load(R"(, "submission": { "require_tls": false, "auth_match": "domain" })");
  auto sd = facts(*pd, "sub", "203.0.113.10");
  sd.authenticated = true;
  sd.login = "cms@example.com";
  CHECK(engine::mail(*pd, sd, path("anyone@example.com"), 0, {}).allowed());
  CHECK(engine::mail(*pd, sd, path("anyone@example.org"), 0, {}).blocks());

  auto pn = load(R"(, "submission": { "require_tls": false, "auth_match": "none" })");
  auto sn = facts(*pn, "sub", "203.0.113.10");
  sn.authenticated = true;
  sn.login = "cms@example.com";
  CHECK(engine::mail(*pn, sn, path("anyone@anywhere.test"), 0, {}).allowed());
}

TEST_CASE("mail: senders wildcards, @*.domain and *, name the entry that matched", "[engine]") {
  auto p = load(R"(, "submission": { "require_tls": false,
      "senders": { "cms@example.com": ["@*.customers.example"], "relay@example.com": ["*"] } })");
  auto s = facts(*p, "sub", "203.0.113.10");
  s.allow_reasons = true;
  s.authenticated = true;
  s.login = "cms@example.com";
  auto a = engine::mail(*p, s, path("billing@a.customers.example"), 0, {});
  CHECK(a.allowed());
  CHECK(a.reason ==
        "login cms@example.com: sender listed in submission.senders as "
        "@*.customers.example");
  CHECK(engine::mail(*p, s, path("x@deep.B.Customers.Example"), 0, {}).allowed());
  CHECK(engine::mail(*p, s, path("x@customers.example"), 0, {}).blocks());  // not the apex
  CHECK(engine::mail(*p, s, path("x@evilcustomers.example"), 0, {}).blocks());
  s.login = "relay@example.com";
  auto any = engine::mail(*p, s, path("anyone@anywhere.test"), 0, {});
  CHECK(any.allowed());
  CHECK(any.reason == "login relay@example.com: sender listed in submission.senders as *");
}

TEST_CASE("mail: internationalized domains compare as given", "[engine]") {
  auto p = load(R"(, "submission": { "require_tls": false,
      "senders": { "user@bücher.example": ["@straße.example"] } })");
  auto s = facts(*p, "sub", "203.0.113.10");
  s.authenticated = true;
  s.login = "user@bücher.example";
  CHECK(engine::mail(*p, s, path("user@bücher.example"), 0, {}).allowed());
  CHECK(engine::mail(*p, s, path("x@straße.example"), 0, {}).allowed());
  CHECK(engine::mail(*p, s, path("x@xn--strae-oqa.example"), 0, {}).blocks());
}

TEST_CASE("mail: mx.local_sender", "[engine]") {
  auto p = load(kBase);
  auto s = facts(*p, "mx", "192.0.2.1");
  auto no = engine::mail(*p, s, path("ceo@example.com"), 0, {});
  CHECK(no.blocks());
  CHECK(no.rule == "mx.local_sender");
  CHECK(no.reply.line() ==
        "553 5.7.1 Sender address rejected: authentication required for local domains");
  CHECK(engine::mail(*p, s, path("friend@elsewhere.org"), 0, {}).allowed());
  CHECK(engine::mail(*p, s, path(""), 0, {}).allowed());  // bounces must arrive
  auto off = load(R"(, "submission": { "require_tls": false } )");
  CHECK(
      engine::mail(*off, facts(*off, "mx", "192.0.2.1"), path("ceo@example.com"), 0, {}).allowed());
}

TEST_CASE("mail: message.size from SIZE=", "[engine]") {
  auto p = load(kBase + R"(, "message": { "max_bytes": 1000 })");
  auto s = facts(*p, "mx", "192.0.2.1");
  CHECK(engine::mail(*p, s, path("a@b.org"), 1000, {}).allowed());
  auto no = engine::mail(*p, s, path("a@b.org"), 1001, {});
  CHECK(no.blocks());
  CHECK(no.rule == "message.size");
  CHECK(no.reply.line() == "552 5.3.4 Message size exceeds fixed limit");
}

TEST_CASE("mail: auto classification and mx.access at MAIL", "[engine]") {
  auto p = load(
      R"(, "submission": { "require_tls": false, "access": { "default": "deny", "allow": ["@cms"] } },
                    "mx": { "access": { "default": "allow", "deny": ["203.0.113.0/24"] } })");
  auto s = facts(*p, "legacy", "203.0.113.10");
  CHECK(s.cls == ListenerClass::Auto);
  CHECK(engine::class_at_mail(s) == ListenerClass::Mx);
  s.cls = engine::class_at_mail(s);
  auto no = engine::mail(*p, s, path("a@b.org"), 0, {});
  CHECK(no.blocks());
  CHECK(no.rule == "mx.access");
  CHECK(no.reply.code == 554);
  CHECK_FALSE(no.reply.close);
  auto a = facts(*p, "legacy", "203.0.113.10");
  a.authenticated = true;
  a.login = "cms@example.com";
  CHECK(engine::class_at_mail(a) == ListenerClass::Submission);
}

TEST_CASE("mail: limits.rate for messages per hour", "[engine]") {
  auto p =
      load(R"(, "submission": { "require_tls": false, "limits": { "messages_per_hour": 10 } })");
  auto s = facts(*p, "sub", "203.0.113.10");
  s.authenticated = true;
  s.login = "cms@example.com";
  Counters c;
  c.messages_last_hour = 9;
  CHECK(engine::mail(*p, s, path("cms@example.com"), 0, c).allowed());
  c.messages_last_hour = 10;
  auto no = engine::mail(*p, s, path("cms@example.com"), 0, c);
  CHECK(no.blocks());
  CHECK(no.verdict == Verdict::Tempfail);
  CHECK(no.rule == "limits.rate");
  CHECK(no.reply.line() == "450 4.7.1 rate limit exceeded, try later");
}

TEST_CASE("rcpt: mx.relay local domains, wildcards, source routes, percent hack", "[engine]") {
  auto p = load(kBase);
  auto s = facts(*p, "mx", "192.0.2.1");
  auto from = path("a@b.org");
  CHECK(engine::rcpt(*p, s, from, path("user@example.com"), {}).allowed());
  CHECK(engine::rcpt(*p, s, from, path("user@EXAMPLE.com"), {}).allowed());
  CHECK(engine::rcpt(*p, s, from, path("user@a.b.example.net"), {}).allowed());
  CHECK(engine::rcpt(*p, s, from, path("postmaster"), {}).allowed());
  auto apex = engine::rcpt(*p, s, from, path("user@example.net"), {});
  CHECK(apex.blocks());
  CHECK(apex.rule == "mx.relay");
  auto relay = engine::rcpt(*p, s, from, path("victim@gmail.example"), {});
  CHECK(relay.blocks());
  CHECK(relay.reply.line() == "554 5.7.1 Relay access denied");
  // judged by the final address of a source route
  CHECK(engine::rcpt(*p, s, from, path("@example.com:victim@gmail.example"), {}).blocks());
  CHECK(engine::rcpt(*p, s, from, path("@relay.test:user@example.com"), {}).allowed());
  CHECK(engine::rcpt(*p, s, from, path("victim%gmail.example@example.com"), {}).blocks());
  CHECK(engine::rcpt(*p, s, from, path("gmail.example!victim@example.com"), {}).blocks());
  CHECK(engine::rcpt(*p, s, from, path("\"victim@gmail.example\"@example.com"), {}).blocks());
  MailPath no_domain;
  no_domain.local = "someone";
  CHECK(engine::rcpt(*p, s, from, no_domain, {}).blocks());
}

TEST_CASE("rcpt: submission relays anywhere; limits.recipients on both classes", "[engine]") {
  auto p = load(R"(, "submission": { "require_tls": false,
      "limits": { "max_recipients": 2, "recipients_per_hour": 5 } },
      "mx": { "max_recipients": 2 })");
  auto s = facts(*p, "sub", "203.0.113.10");
  s.authenticated = true;
  s.login = "cms@example.com";
  s.cls = ListenerClass::Submission;
  auto from = path("cms@example.com");
  Counters c;
  CHECK(engine::rcpt(*p, s, from, path("anyone@gmail.example"), c).allowed());
  c.recipients_in_message = 2;
  auto many = engine::rcpt(*p, s, from, path("anyone@gmail.example"), c);
  CHECK(many.blocks());
  CHECK(many.rule == "limits.recipients");
  CHECK(many.reply.line() == "452 4.5.3 Too many recipients");
  c.recipients_in_message = 0;
  c.recipients_last_hour = 5;
  auto rate = engine::rcpt(*p, s, from, path("anyone@gmail.example"), c);
  CHECK(rate.blocks());
  CHECK(rate.rule == "limits.rate");

  auto m = facts(*p, "mx", "192.0.2.1");
  Counters mc;
  mc.recipients_in_message = 1;
  CHECK(engine::rcpt(*p, m, path("a@b.org"), path("u@example.com"), mc).allowed());
  mc.recipients_in_message = 2;
  auto mx = engine::rcpt(*p, m, path("a@b.org"), path("u@example.com"), mc);
  CHECK(mx.blocks());
  CHECK(mx.rule == "limits.recipients");
}

TEST_CASE("data: message.size at end of data is always enforced", "[engine]") {
  auto p = load(kBase + R"(, "mode": "dry-run", "message": { "max_bytes": 100 })");
  auto s = facts(*p, "mx", "192.0.2.1");
  CHECK(engine::data_end(*p, s, 100).allowed());
  auto no = engine::data_end(*p, s, 101);
  CHECK(no.blocks());
  CHECK(no.enforced);
  CHECK(no.rule == "message.size");
}

TEST_CASE("data: a bare LF or CR ends the message with 521 and a close, even in dry-run",
          "[engine]") {
  auto p = load(kBase + R"(, "mode": "dry-run", "message": { "max_bytes": 100 })");
  auto s = facts(*p, "mx", "192.0.2.1");
  CHECK(engine::body_end(*p, s, 10, false).allowed());
  CHECK(engine::body_end(*p, s, 101, false).rule == "message.size");
  auto bare = engine::body_end(*p, s, 10, true);
  CHECK(bare.blocks());
  CHECK(bare.rule == "message.bare_newline");
  CHECK(bare.stage == Stage::Data);
  CHECK(bare.reply.line() == "521 5.5.2 bare <LF> received");
  CHECK(bare.reply.close);
}

TEST_CASE("admission: connection caps, in order total, rate, per address; always enforced",
          "[engine]") {
  auto p = load(kBase + R"(, "mode": "dry-run",
      "connections": { "max_total": 3, "max_per_ip": 2 })");
  const IpAddress ip = *IpAddress::parse("192.0.2.7");
  engine::ConnectionLoad load;
  CHECK(engine::admit(*p, ip, load).allowed());
  load.open_total = 2;
  load.open_from_ip = 1;
  CHECK(engine::admit(*p, ip, load).allowed());

  load.open_from_ip = 2;
  auto per_ip = engine::admit(*p, ip, load);
  CHECK(per_ip.blocks());
  CHECK(per_ip.rule == "limits.connections");
  CHECK(per_ip.reply.line() == "421 4.7.0 too many connections, try later");
  CHECK(per_ip.reply.close);
  CHECK(per_ip.reason == "2 sessions open from 192.0.2.7; connections.max_per_ip is 2");

  load.over_rate = true;
  auto rate = engine::admit(*p, ip, load);
  CHECK(rate.blocks());
  CHECK(rate.rule == "limits.connection_rate");

  load.open_total = 3;
  auto total = engine::admit(*p, ip, load);
  CHECK(total.blocks());
  CHECK(total.rule == "limits.connections");
  CHECK(total.reason == "3 sessions open; connections.max_total is 3");
}

TEST_CASE("dry-run: global mode, and a section overriding it", "[engine]") {
  auto global = load(kBase + R"(, "mode": "dry-run")");
  auto d = engine::connect(*global, facts(*global, "mx", "198.51.100.7"));
  CHECK(d.verdict == Verdict::Reject);
  CHECK_FALSE(d.enforced);
  CHECK_FALSE(d.blocks());
  auto r = engine::rcpt(*global, facts(*global, "mx", "192.0.2.1"), path("a@b.org"),
                        path("x@gmail.example"), {});
  CHECK(r.verdict == Verdict::Reject);
  CHECK_FALSE(r.enforced);

  // mx in dry-run, submission enforced (global enforce)
  auto section = load(R"(, "submission": { "require_tls": false, "access": { "default": "deny" } },
                          "mx": { "mode": "dry-run", "access": { "default": "deny" } })");
  CHECK_FALSE(engine::connect(*section, facts(*section, "mx", "192.0.2.1")).enforced);
  CHECK(engine::connect(*section, facts(*section, "sub", "192.0.2.1")).enforced);
  // auto: refused only if both deny with enforcement
  CHECK_FALSE(engine::connect(*section, facts(*section, "legacy", "192.0.2.1")).blocks());

  // global dry-run, submission section enforcing
  auto inv = load(R"(, "mode": "dry-run",
                      "submission": { "mode": "enforce", "require_tls": false } )");
  CHECK(engine::connect(*inv, facts(*inv, "sub", "192.0.2.1")).blocks());
  CHECK_FALSE(engine::connect(*inv, facts(*inv, "mx", "192.0.2.1")).blocks());

  // brute_force in dry-run: a ban is decided but not enforced
  auto bf = load(kBase + R"(, "brute_force": { "mode": "dry-run", "max_failures": 1 })");
  auto b = engine::brute_force(*bf, facts(*bf, "sub", "192.0.2.1"), 1);
  CHECK(b.verdict == Verdict::Ban);
  CHECK_FALSE(b.enforced);
}

TEST_CASE("allow_reasons off: same verdicts and rules, no reason text on allows", "[engine]") {
  auto p = load(kBase);
  auto s = facts(*p, "mx", "192.0.2.1");
  auto with = engine::mail(*p, s, path("a@elsewhere.example"), 0, {});
  auto rcpt_with = engine::rcpt(*p, s, path("a@elsewhere.example"), path("b@example.com"), {});
  s.allow_reasons = false;
  auto without = engine::mail(*p, s, path("a@elsewhere.example"), 0, {});
  auto rcpt_without = engine::rcpt(*p, s, path("a@elsewhere.example"), path("b@example.com"), {});
  CHECK(with.allowed());
  CHECK(without.allowed());
  CHECK(with.rule == without.rule);
  CHECK(with.reason == "sender a@elsewhere.example");
  CHECK(without.reason.empty());
  CHECK(rcpt_with.rule == rcpt_without.rule);
  CHECK(rcpt_with.reason == "example.com is a local domain");
  CHECK(rcpt_without.reason.empty());
  CHECK(engine::data_end(*p, s, 10).reason.empty());
  // Refusals keep their reasons: they are logged.
  auto relay = engine::rcpt(*p, s, path("a@elsewhere.example"), path("v@gmail.example"), {});
  CHECK(relay.rule == "mx.relay");
  CHECK_FALSE(relay.reason.empty());
}
