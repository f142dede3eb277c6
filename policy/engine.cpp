#include "policy/engine.h"

#include <algorithm>

#include "policy/replies.h"
#include "policy/rule_ids.h"

namespace smtpgate::engine {
namespace {

bool enforced(Mode m) {
  return m == Mode::Enforce;
}

Decision allow(Stage stage, std::string_view rule, std::string reason) {
  Decision d;
  d.stage = stage;
  d.rule = rule;
  d.verdict = Verdict::Allow;
  d.reason = std::move(reason);
  return d;
}

// For the per-command stages: the reason text is built only when the caller wants it
// (SessionFacts::allow_reasons).
template <class Why>
Decision allow_if(const SessionFacts& s, Stage stage, std::string_view rule, Why why) {
  return allow(stage, rule, s.allow_reasons ? why() : std::string());
}

Decision refuse(Stage stage, std::string_view rule, Verdict v, Mode mode, std::string reason,
                Reply reply) {
  Decision d;
  d.stage = stage;
  d.rule = rule;
  d.verdict = v;
  d.enforced = enforced(mode);
  d.reason = std::move(reason);
  d.reply = std::move(reply);
  return d;
}

struct AccessResult {
  bool allowed;
  std::string reason;
};

AccessResult check_access(const Policy& p, const AccessPolicy& a, const IpAddress& ip,
                          std::string_view list_name) {
  std::string who = ip.to_string();
  if (auto m = a.entries.lookup(ip)) {
    bool ok = m->access == Access::Allow;
    std::string reason = std::string(list_name) + ": " + who + " matched " +
                         (ok ? "allow" : "deny") + " entry " + m->entry.to_string();
    if (m->origin < p.list_names.size() && !p.list_names[m->origin].empty())
      reason += " (@" + p.list_names[m->origin] + ")";
    return {ok, std::move(reason)};
  }
  bool ok = a.default_access == Access::Allow;
  return {ok, std::string(list_name) + ": " + who + " matched no entry; default " +
                  (ok ? "allow" : "deny")};
}

// never_ban, and the load balancers of trusted_proxies (SPEC §8): banning one would refuse
// every client behind it (its own health checks arrive as LOCAL sessions from it).
bool never_banned(const Policy& p, const IpAddress& ip) {
  return p.brute_force.never_ban.lookup(ip).has_value() || p.trusted_proxies.lookup(ip).has_value();
}
std::string_view never_ban_list(const Policy& p, const IpAddress& ip) {
  return p.brute_force.never_ban.lookup(ip) ? "never_ban" : "trusted_proxies";
}

std::string_view domain_of(std::string_view address) {
  auto at = address.rfind('@');
  return at == std::string_view::npos ? std::string_view{} : address.substr(at + 1);
}

// The login owns the sender when auth_match allows it, directly or through senders[login].
bool sender_owned(const Policy& p, std::string_view login, const MailPath& sender,
                  std::string* how) {
  const auto& sub = p.submission;
  if (sub.auth_match == AuthMatch::None) {
    *how = "auth_match none";
    return true;
  }
  std::string address = sender.address();
  if (sub.auth_match == AuthMatch::Address && iequals(address, login)) {
    *how = "sender equals the login";
    return true;
  }
  if (sub.auth_match == AuthMatch::Domain) {
    auto login_domain = domain_of(login);
    if (!login_domain.empty() && iequals(login_domain, sender.domain)) {
      *how = "sender is in the login's domain";
      return true;
    }
  }
  auto it = sub.senders.find(ascii_lower(login));
  if (it != sub.senders.end()) {
    for (const auto& entry : it->second) {
      const std::string_view e = entry;
      bool match;
      if (e == "*") {
        match = true;  // any sender for this login
      } else if (e.starts_with("@*.")) {
        // Any subdomain, not the apex: "@*.customers.example" takes a.customers.example.
        const std::string_view parent = e.substr(2);  // ".customers.example"
        const std::string_view d = sender.domain;
        match = d.size() > parent.size() && iequals(d.substr(d.size() - parent.size()), parent);
      } else if (e.starts_with('@')) {
        match = iequals(e.substr(1), sender.domain);
      } else {
        match = iequals(e, address);
      }
      if (match) {
        *how = "sender listed in submission.senders as " + entry;
        return true;
      }
    }
  }
  return false;
}

}  // namespace

ListenerClass initial_class(const Listener& listener) {
  return listener.cls;
}

Decision connect(const Policy& p, const SessionFacts& s) {
  if (s.banned) {
    if (never_banned(p, s.client))
      return allow(
          Stage::Connect, rules::kBan,
          s.client.to_string() + " is banned but in " + std::string(never_ban_list(p, s.client)));
    return refuse(Stage::Connect, rules::kBan, Verdict::Reject, p.brute_force_mode(),
                  s.client.to_string() + " is banned", replies::access_denied(p.hostname));
  }
  switch (s.listener->cls) {
    case ListenerClass::Mx: {
      auto r = check_access(p, p.mx.access, s.client, rules::kMxAccess);
      if (r.allowed) return allow(Stage::Connect, rules::kMxAccess, std::move(r.reason));
      return refuse(Stage::Connect, rules::kMxAccess, Verdict::Reject, p.mx_mode(),
                    std::move(r.reason), replies::access_denied(p.hostname));
    }
    case ListenerClass::Submission: {
      auto r = check_access(p, p.submission.access, s.client, rules::kSubmissionAccess);
      if (r.allowed) return allow(Stage::Connect, rules::kSubmissionAccess, std::move(r.reason));
      return refuse(Stage::Connect, rules::kSubmissionAccess, Verdict::Reject, p.submission_mode(),
                    std::move(r.reason), replies::access_denied(p.hostname));
    }
    case ListenerClass::Auto: {
      // Refused only when both classes deny: the host can neither deliver nor submit.
      auto mx = check_access(p, p.mx.access, s.client, rules::kMxAccess);
      if (mx.allowed) return allow(Stage::Connect, rules::kMxAccess, std::move(mx.reason));
      auto sub = check_access(p, p.submission.access, s.client, rules::kSubmissionAccess);
      if (sub.allowed)
        return allow(Stage::Connect, rules::kSubmissionAccess, std::move(sub.reason));
      Decision d = refuse(Stage::Connect, rules::kMxAccess, Verdict::Reject, p.mx_mode(),
                          mx.reason + "; " + sub.reason, replies::access_denied(p.hostname));
      // In dry-run for either class the host would still get in for that class.
      d.enforced = enforced(p.mx_mode()) && enforced(p.submission_mode());
      return d;
    }
  }
  return allow(Stage::Connect, "default", "no rule applies");
}

Decision auth_attempt(const Policy& p, const SessionFacts& s) {
  if (s.listener->cls == ListenerClass::Mx) {
    bool ban = p.mx.auth == MxPolicy::AuthAction::Ban;
    Decision d =
        refuse(Stage::Auth, rules::kMxAuth, ban ? Verdict::Ban : Verdict::Reject, p.mx_mode(),
               std::string("AUTH attempted on mx listener ") + s.listener->name +
                   (ban ? " (mx.auth: ban)" : ""),
               replies::auth_not_available());
    if (ban && never_banned(p, s.client)) {
      d.verdict = Verdict::Reject;
      d.reason += "; client in " + std::string(never_ban_list(p, s.client)) + ", not banned";
    }
    return d;
  }
  if (p.submission.require_tls && !s.tls)
    return refuse(Stage::Auth, rules::kSubmissionRequireTls, Verdict::Reject, p.submission_mode(),
                  "AUTH before STARTTLS; submission.require_tls is on", replies::must_starttls());
  if (s.listener->cls == ListenerClass::Auto) {
    auto r = check_access(p, p.submission.access, s.client, rules::kSubmissionAccess);
    if (!r.allowed)
      return refuse(Stage::Auth, rules::kSubmissionAccess, Verdict::Reject, p.submission_mode(),
                    std::move(r.reason), replies::auth_invalid());
    return allow(Stage::Auth, rules::kSubmissionAccess, std::move(r.reason));
  }
  return allow(Stage::Auth, "default", "AUTH offered on submission listener " + s.listener->name);
}

bool auth_refusal_counts_as_failure(const Decision& d) {
  return d.verdict != Verdict::Allow &&
         (d.rule == rules::kMxAuth || d.rule == rules::kSubmissionAccess);
}

Decision auth_result(const Policy& /*p*/, const SessionFacts& s, bool ok) {
  if (ok) return allow(Stage::Auth, "auth", "backend accepted credentials for " + s.login);
  return refuse(Stage::Auth, "auth", Verdict::Reject, Mode::Enforce,
                "backend rejected credentials for " + s.login, replies::auth_invalid());
}

Decision brute_force(const Policy& p, const SessionFacts& s, uint32_t failures_in_window) {
  const auto& bf = p.brute_force;
  std::string count = std::to_string(failures_in_window) + " of " +
                      std::to_string(bf.max_failures) + " AUTH failures within " +
                      format_duration(bf.window);
  if (failures_in_window < bf.max_failures)
    return allow(Stage::Auth, rules::kBruteForce, s.client.to_string() + ": " + count);
  if (never_banned(p, s.client))
    return allow(Stage::Auth, rules::kBruteForceNeverBan,
                 s.client.to_string() + ": " + count + "; in " +
                     std::string(never_ban_list(p, s.client)) + ", not banned");
  Reply r = replies::auth_invalid();
  r.close = true;
  return refuse(Stage::Auth, rules::kBruteForce, Verdict::Ban, p.brute_force_mode(),
                s.client.to_string() + ": " + count, std::move(r));
}

Decision login_locked(const Policy& p, const SessionFacts& s, std::string_view until_text) {
  return refuse(Stage::Auth, rules::kBruteForceLogin, Verdict::Reject, p.brute_force_mode(),
                "login " + s.login + " is locked until " + std::string(until_text) +
                    " for addresses it has not logged in from (brute_force.per_login)",
                replies::auth_invalid());
}

namespace {
Reply suspended_reply(Stage stage) {
  return stage == Stage::Auth ? replies::account_suspended_auth().reply
                              : replies::account_suspended().reply;
}
}  // namespace

Decision breaker_tripped(const Policy& p, const SessionFacts& s, Stage stage,
                         const BreakerTrip& trip) {
  return refuse(stage, rules::kSubmissionBreaker, Verdict::Tempfail, p.submission_mode(),
                // Counts stop at threshold + 1 (nothing needs more): "over", not a number.
                "login " + s.login + " went over submission.breaker." + std::string(trip.trigger) +
                    " (" + std::to_string(trip.threshold) + " in the last hour)",
                suspended_reply(stage));
}

Decision login_suspended(const Policy& p, const SessionFacts& s, Stage stage,
                         const Suspension& suspension) {
  return refuse(stage, rules::kSubmissionBreaker, Verdict::Tempfail, p.submission_mode(),
                "login " + s.login + " is suspended (submission.breaker." + suspension.trigger +
                    ": " + std::to_string(suspension.value) + ", threshold " +
                    std::to_string(suspension.threshold) + ") until an admin releases it",
                suspended_reply(stage));
}

ListenerClass class_at_mail(const SessionFacts& s) {
  if (s.cls != ListenerClass::Auto) return s.cls;
  return s.authenticated ? ListenerClass::Submission : ListenerClass::Mx;
}

Decision mail(const Policy& p, const SessionFacts& s, const MailPath& sender, uint64_t size_param,
              const Counters& c) {
  if (size_param > p.message.max_bytes)
    return refuse(Stage::Mail, rules::kMessageSize, Verdict::Reject, Mode::Enforce,
                  "SIZE=" + std::to_string(size_param) + " exceeds message.max_bytes " +
                      std::to_string(p.message.max_bytes),
                  replies::message_too_big());

  if (s.cls == ListenerClass::Submission) {
    if (!s.authenticated)
      return refuse(
          Stage::Mail, rules::kSubmissionAuthRequired, Verdict::Reject, p.submission_mode(),
          "MAIL without AUTH on submission listener " + s.listener->name, replies::auth_required());
    std::string how;
    if (sender.null) {
      how = "null sender";
    } else if (!sender_owned(p, s.login, sender, &how)) {
      return refuse(Stage::Mail, rules::kSubmissionAuthMatch, Verdict::Reject, p.submission_mode(),
                    "sender " + sender.address() + " is not owned by login " + s.login,
                    replies::sender_not_owned(s.login));
    }
    const auto& lim = p.submission.limits;
    if (lim.messages_per_hour != 0 && c.messages_last_hour >= lim.messages_per_hour)
      return refuse(Stage::Mail, rules::kLimitsRate, Verdict::Tempfail, p.submission_mode(),
                    s.login + " sent " + std::to_string(c.messages_last_hour) +
                        " messages in the last hour; limit " +
                        std::to_string(lim.messages_per_hour),
                    replies::rate_limited());
    return allow_if(s, Stage::Mail, rules::kSubmissionAuthMatch,
                    [&] { return "login " + s.login + ": " + how; });
  }

  // mx class (an auto session without AUTH arrives here as mx)
  if (s.listener->cls == ListenerClass::Auto) {
    auto r = check_access(p, p.mx.access, s.client, rules::kMxAccess);
    if (!r.allowed) {
      Reply reply = replies::access_denied(p.hostname);
      reply.close = false;
      return refuse(Stage::Mail, rules::kMxAccess, Verdict::Reject, p.mx_mode(),
                    std::move(r.reason), std::move(reply));
    }
  }
  if (p.mx.reject_local_sender && !sender.null && p.local_domains.contains(sender.domain))
    return refuse(
        Stage::Mail, "mx.local_sender", Verdict::Reject, p.mx_mode(),
        "unauthenticated sender " + sender.address() + " is in local domain " + sender.domain,
        replies::local_sender_needs_auth());
  return allow_if(s, Stage::Mail, "default", [&] {
    return sender.null ? std::string("null sender accepted on mx") : "sender " + sender.address();
  });
}

Decision rcpt(const Policy& p, const SessionFacts& s, const MailPath& /*sender*/,
              const MailPath& recipient, const Counters& c) {
  if (s.cls == ListenerClass::Submission) {
    const auto& lim = p.submission.limits;
    if (lim.max_recipients != 0 && c.recipients_in_message >= lim.max_recipients)
      return refuse(Stage::Rcpt, rules::kLimitsRecipients, Verdict::Tempfail, p.submission_mode(),
                    "more than " + std::to_string(lim.max_recipients) + " recipients",
                    replies::too_many_recipients());
    if (lim.recipients_per_hour != 0 && c.recipients_last_hour >= lim.recipients_per_hour)
      return refuse(Stage::Rcpt, rules::kLimitsRate, Verdict::Tempfail, p.submission_mode(),
                    s.login + " reached " + std::to_string(lim.recipients_per_hour) +
                        " recipients in the last hour",
                    replies::rate_limited());
    return allow_if(s, Stage::Rcpt, "default",
                    [] { return std::string("authenticated submission may relay"); });
  }

  // mx: only local recipients, judged by the final address of a source route.
  if (recipient.domain.empty()) {
    // RFC 5321 4.5.1: "postmaster" without a domain must be accepted; anything else is
    // not addressable here.
    if (!iequals(recipient.local, "postmaster"))
      return refuse(Stage::Rcpt, rules::kMxRelay, Verdict::Reject, p.mx_mode(),
                    "recipient " + recipient.local + " has no domain", replies::relay_denied());
  } else if (!p.local_domains.contains(recipient.domain)) {
    return refuse(Stage::Rcpt, rules::kMxRelay, Verdict::Reject, p.mx_mode(),
                  "recipient domain " + recipient.domain + " is not a local domain",
                  replies::relay_denied());
  }
  // '%' and '!' route onward (the percent hack, UUCP paths); a quoted '@' does the same on
  // servers that re-parse the local part.
  if (recipient.local.find_first_of("%!@") != std::string::npos)
    return refuse(Stage::Rcpt, rules::kMxRelay, Verdict::Reject, p.mx_mode(),
                  "'%', '!' or '@' in the local part of " + recipient.address() + " (percent hack)",
                  replies::relay_denied());
  if (c.recipients_in_message >= p.mx.max_recipients)
    return refuse(Stage::Rcpt, rules::kLimitsRecipients, Verdict::Tempfail, p.mx_mode(),
                  "more than " + std::to_string(p.mx.max_recipients) + " recipients",
                  replies::too_many_recipients());
  return allow_if(s, Stage::Rcpt, rules::kMxRelay, [&] {
    return recipient.domain.empty() ? std::string("postmaster")
                                    : recipient.domain + " is a local domain";
  });
}

Decision data_end(const Policy& p, const SessionFacts& s, uint64_t body_bytes) {
  if (body_bytes > p.message.max_bytes)
    return refuse(Stage::Data, rules::kMessageSize, Verdict::Reject, Mode::Enforce,
                  "message of " + std::to_string(body_bytes) + " bytes exceeds message.max_bytes " +
                      std::to_string(p.message.max_bytes),
                  replies::message_too_big());
  return allow_if(s, Stage::Data, rules::kMessageSize,
                  [&] { return std::to_string(body_bytes) + " bytes"; });
}

Decision admit(const Policy& p, const IpAddress& client, const ConnectionLoad& load) {
  const auto& lim = p.connections;
  if (load.open_total >= lim.max_total)
    return refuse(Stage::Connect, rules::kLimitsConnections, Verdict::Reject, Mode::Enforce,
                  std::to_string(load.open_total) + " sessions open; connections.max_total is " +
                      std::to_string(lim.max_total),
                  replies::too_many_connections());
  if (load.over_rate)
    return refuse(Stage::Connect, rules::kLimitsConnectionRate, Verdict::Reject, Mode::Enforce,
                  "connection rate of " + client.to_string() + " over connections.rate_per_ip",
                  replies::connection_rate());
  if (load.open_from_ip >= lim.max_per_ip)
    return refuse(Stage::Connect, rules::kLimitsConnections, Verdict::Reject, Mode::Enforce,
                  std::to_string(load.open_from_ip) + " sessions open from " + client.to_string() +
                      "; connections.max_per_ip is " + std::to_string(lim.max_per_ip),
                  replies::too_many_connections());
  return allow(Stage::Connect, rules::kLimitsConnections, {});
}

Decision body_end(const Policy& p, const SessionFacts& s, uint64_t body_bytes, bool bare_newline) {
  if (bare_newline)
    // Only "reject" stops at a bare LF/CR (the body filter fixes or passes the others).
    return refuse(Stage::Data, rules::kMessageBareNewline, Verdict::Reject, Mode::Enforce,
                  "bare LF or CR in message body", replies::bare_lf());
  return data_end(p, s, body_bytes);
}

}  // namespace smtpgate::engine
