#include <catch2/catch.hpp>

#include <string>

#include "proxy/metrics.h"

using smtpgate::AuthResult;
using smtpgate::LabeledCounter;
using smtpgate::MessageResult;
using smtpgate::MetricsRegistry;
using smtpgate::RefusedReason;

namespace {

// The exposition of a registry nothing has touched; families with open label sets are empty.
const char* const kEmpty =
    R"(# HELP smtpgate_connections_total TCP connections accepted, by listener.
# TYPE smtpgate_connections_total counter
# HELP smtpgate_connections_active TCP connections currently open.
# TYPE smtpgate_connections_active gauge
smtpgate_connections_active 0
# HELP smtpgate_workers Event loops serving sessions.
# TYPE smtpgate_workers gauge
smtpgate_workers 1
# HELP smtpgate_connections_refused_total Connections refused before the session started, by reason.
# TYPE smtpgate_connections_refused_total counter
smtpgate_connections_refused_total{reason="ban"} 0
smtpgate_connections_refused_total{reason="access"} 0
smtpgate_connections_refused_total{reason="limit"} 0
smtpgate_connections_refused_total{reason="rate"} 0
# HELP smtpgate_sessions_total SMTP sessions, by listener and class.
# TYPE smtpgate_sessions_total counter
# HELP smtpgate_decisions_total Policy decisions, by stage, rule, verdict and whether they were enforced.
# TYPE smtpgate_decisions_total counter
# HELP smtpgate_bans_active Client IPs currently banned.
# TYPE smtpgate_bans_active gauge
smtpgate_bans_active 0
# HELP smtpgate_logins_locked Logins locked for unknown addresses (brute_force.per_login).
# TYPE smtpgate_logins_locked gauge
smtpgate_logins_locked 0
# HELP smtpgate_logins_suspended Logins suspended by submission.breaker until an admin releases them.
# TYPE smtpgate_logins_suspended gauge
smtpgate_logins_suspended 0
# HELP smtpgate_bans_issued_total Bans issued.
# TYPE smtpgate_bans_issued_total counter
smtpgate_bans_issued_total 0
# HELP smtpgate_auth_total AUTH attempts, by result.
# TYPE smtpgate_auth_total counter
smtpgate_auth_total{result="ok"} 0
smtpgate_auth_total{result="failed"} 0
smtpgate_auth_total{result="tempfail"} 0
smtpgate_auth_total{result="refused"} 0
# HELP smtpgate_messages_total Messages, by result of the final reply.
# TYPE smtpgate_messages_total counter
smtpgate_messages_total{result="delivered"} 0
smtpgate_messages_total{result="rejected"} 0
# HELP smtpgate_message_bytes_total Bytes of messages the backend accepted.
# TYPE smtpgate_message_bytes_total counter
smtpgate_message_bytes_total 0
# HELP smtpgate_backend_errors_total Backend failures, by reason.
# TYPE smtpgate_backend_errors_total counter
# HELP smtpgate_proxy_protocol_total Connections on proxy_protocol listeners, by how their PROXY header went.
# TYPE smtpgate_proxy_protocol_total counter
# HELP smtpgate_backend_reply_seconds Time from a command forwarded to the backend's reply.
# TYPE smtpgate_backend_reply_seconds histogram
smtpgate_backend_reply_seconds_bucket{le="0.001"} 0
smtpgate_backend_reply_seconds_bucket{le="0.0025"} 0
smtpgate_backend_reply_seconds_bucket{le="0.005"} 0
smtpgate_backend_reply_seconds_bucket{le="0.01"} 0
smtpgate_backend_reply_seconds_bucket{le="0.025"} 0
smtpgate_backend_reply_seconds_bucket{le="0.05"} 0
smtpgate_backend_reply_seconds_bucket{le="0.1"} 0
smtpgate_backend_reply_seconds_bucket{le="0.25"} 0
smtpgate_backend_reply_seconds_bucket{le="0.5"} 0
smtpgate_backend_reply_seconds_bucket{le="1"} 0
smtpgate_backend_reply_seconds_bucket{le="2.5"} 0
smtpgate_backend_reply_seconds_bucket{le="5"} 0
smtpgate_backend_reply_seconds_bucket{le="10"} 0
smtpgate_backend_reply_seconds_bucket{le="+Inf"} 0
smtpgate_backend_reply_seconds_sum 0
smtpgate_backend_reply_seconds_count 0
# HELP smtpgate_policy_reloads_total Policy reloads, by result.
# TYPE smtpgate_policy_reloads_total counter
# HELP smtpgate_log_dropped_total Log lines dropped because the log sink did not keep up or failed.
# TYPE smtpgate_log_dropped_total counter
smtpgate_log_dropped_total 0
# HELP smtpgate_state_write_errors_total Failed writes of the ban state file (bans stay in force in memory).
# TYPE smtpgate_state_write_errors_total counter
smtpgate_state_write_errors_total 0
)";

}  // namespace

TEST_CASE("MetricsRegistry: an empty registry", "[metrics]") {
  MetricsRegistry m;
  CHECK(m.render_prometheus() == kEmpty);
}

TEST_CASE("MetricsRegistry: the exact exposition of a small registry", "[metrics]") {
  MetricsRegistry m;
  m.connection_opened("mx");
  m.connection_opened("mx");
  m.connection_opened("submission");
  m.connection_closed();
  m.connection_refused(RefusedReason::Ban);
  m.connection_refused(RefusedReason::Rate);
  m.connection_refused(RefusedReason::Rate);
  m.session("mx", "mx");
  m.session("legacy", "submission");
  m.session("mx", "mx");
  m.decision("connect", "ban", "reject", true);
  m.decision("rcpt", "mx.relay", "reject", true);
  m.decision("rcpt", "mx.relay", "reject", false);
  m.decision("rcpt", "mx.relay", "reject", true);
  m.set_bans_active(2);
  m.set_logins(3, 1);
  m.ban_issued();
  m.auth(AuthResult::Ok);
  m.auth(AuthResult::Failed);
  m.auth(AuthResult::Failed);
  m.message_delivered(1000);
  m.message_delivered(24);
  m.message_rejected();
  m.backend_error("connect");
  m.proxy_protocol("untrusted");
  m.observe_backend_reply(0.001);  // on the bound: in le="0.001"
  m.observe_backend_reply(0.25);
  m.observe_backend_reply(1.5);
  m.observe_backend_reply(60);  // only in +Inf
  m.policy_reload("ok");
  m.policy_reload("failed");
  m.set_log_dropped(7);
  m.set_state_write_errors(2);

  const char* expected = R"(# HELP smtpgate_connections_total TCP connections accepted, by listener.
# TYPE smtpgate_connections_total counter
smtpgate_connections_total{listener="mx"} 2
smtpgate_connections_total{listener="submission"} 1
# HELP smtpgate_connections_active TCP connections currently open.
# TYPE smtpgate_connections_active gauge
smtpgate_connections_active 2
# HELP smtpgate_workers Event loops serving sessions.
# TYPE smtpgate_workers gauge
smtpgate_workers 1
# HELP smtpgate_connections_refused_total Connections refused before the session started, by reason.
# TYPE smtpgate_connections_refused_total counter
smtpgate_connections_refused_total{reason="ban"} 1
smtpgate_connections_refused_total{reason="access"} 0
smtpgate_connections_refused_total{reason="limit"} 0
smtpgate_connections_refused_total{reason="rate"} 2
# HELP smtpgate_sessions_total SMTP sessions, by listener and class.
# TYPE smtpgate_sessions_total counter
smtpgate_sessions_total{listener="legacy",class="submission"} 1
smtpgate_sessions_total{listener="mx",class="mx"} 2
# HELP smtpgate_decisions_total Policy decisions, by stage, rule, verdict and whether they were enforced.
# TYPE smtpgate_decisions_total counter
smtpgate_decisions_total{stage="connect",rule="ban",verdict="reject",enforced="true"} 1
smtpgate_decisions_total{stage="rcpt",rule="mx.relay",verdict="reject",enforced="false"} 1
smtpgate_decisions_total{stage="rcpt",rule="mx.relay",verdict="reject",enforced="true"} 2
# HELP smtpgate_bans_active Client IPs currently banned.
# TYPE smtpgate_bans_active gauge
smtpgate_bans_active 2
# HELP smtpgate_logins_locked Logins locked for unknown addresses (brute_force.per_login).
# TYPE smtpgate_logins_locked gauge
smtpgate_logins_locked 3
# HELP smtpgate_logins_suspended Logins suspended by submission.breaker until an admin releases them.
# TYPE smtpgate_logins_suspended gauge
smtpgate_logins_suspended 1
# HELP smtpgate_bans_issued_total Bans issued.
# TYPE smtpgate_bans_issued_total counter
smtpgate_bans_issued_total 1
# HELP smtpgate_auth_total AUTH attempts, by result.
# TYPE smtpgate_auth_total counter
smtpgate_auth_total{result="ok"} 1
smtpgate_auth_total{result="failed"} 2
smtpgate_auth_total{result="tempfail"} 0
smtpgate_auth_total{result="refused"} 0
# HELP smtpgate_messages_total Messages, by result of the final reply.
# TYPE smtpgate_messages_total counter
smtpgate_messages_total{result="delivered"} 2
smtpgate_messages_total{result="rejected"} 1
# HELP smtpgate_message_bytes_total Bytes of messages the backend accepted.
# TYPE smtpgate_message_bytes_total counter
smtpgate_message_bytes_total 1024
# HELP smtpgate_backend_errors_total Backend failures, by reason.
# TYPE smtpgate_backend_errors_total counter
smtpgate_backend_errors_total{reason="connect"} 1
# HELP smtpgate_proxy_protocol_total Connections on proxy_protocol listeners, by how their PROXY header went.
# TYPE smtpgate_proxy_protocol_total counter
smtpgate_proxy_protocol_total{result="untrusted"} 1
# HELP smtpgate_backend_reply_seconds Time from a command forwarded to the backend's reply.
# TYPE smtpgate_backend_reply_seconds histogram
smtpgate_backend_reply_seconds_bucket{le="0.001"} 1
smtpgate_backend_reply_seconds_bucket{le="0.0025"} 1
smtpgate_backend_reply_seconds_bucket{le="0.005"} 1
smtpgate_backend_reply_seconds_bucket{le="0.01"} 1
smtpgate_backend_reply_seconds_bucket{le="0.025"} 1
smtpgate_backend_reply_seconds_bucket{le="0.05"} 1
smtpgate_backend_reply_seconds_bucket{le="0.1"} 1
smtpgate_backend_reply_seconds_bucket{le="0.25"} 2
smtpgate_backend_reply_seconds_bucket{le="0.5"} 2
smtpgate_backend_reply_seconds_bucket{le="1"} 2
smtpgate_backend_reply_seconds_bucket{le="2.5"} 3
smtpgate_backend_reply_seconds_bucket{le="5"} 3
smtpgate_backend_reply_seconds_bucket{le="10"} 3
smtpgate_backend_reply_seconds_bucket{le="+Inf"} 4
smtpgate_backend_reply_seconds_sum 61.751
smtpgate_backend_reply_seconds_count 4
# HELP smtpgate_policy_reloads_total Policy reloads, by result.
# TYPE smtpgate_policy_reloads_total counter
smtpgate_policy_reloads_total{result="failed"} 1
smtpgate_policy_reloads_total{result="ok"} 1
# HELP smtpgate_log_dropped_total Log lines dropped because the log sink did not keep up or failed.
# TYPE smtpgate_log_dropped_total counter
smtpgate_log_dropped_total 7
# HELP smtpgate_state_write_errors_total Failed writes of the ban state file (bans stay in force in memory).
# TYPE smtpgate_state_write_errors_total counter
smtpgate_state_write_errors_total 2
)";
  CHECK(m.render_prometheus() == expected);
  CHECK(m.connections_active() == 2);
  CHECK(m.refused(RefusedReason::Rate) == 2);
  CHECK(m.auth_count(AuthResult::Failed) == 2);
  CHECK(m.messages(MessageResult::Delivered) == 2);
  CHECK(m.message_bytes() == 1024);
  CHECK(m.decisions().get({"rcpt", "mx.relay", "reject", "true"}) == 2);
  CHECK(m.decisions().total() == 4);
}

TEST_CASE("MetricsRegistry: label values are escaped", "[metrics]") {
  CHECK(smtpgate::prometheus_escape_label("plain") == "plain");
  CHECK(smtpgate::prometheus_escape_label(R"(a"b\c)") == R"(a\"b\\c)");
  CHECK(smtpgate::prometheus_escape_label("line\nbreak") == "line\\nbreak");
  MetricsRegistry m;
  m.connection_opened("we\"ird\\name\n");
  std::string text = m.render_prometheus();
  CHECK(text.find("smtpgate_connections_total{listener=\"we\\\"ird\\\\name\\n\"} 1\n") !=
        std::string::npos);
}

TEST_CASE("MetricsRegistry: gauges and odd observations", "[metrics]") {
  MetricsRegistry m;
  m.connection_closed();  // never below zero
  CHECK(m.connections_active() == 0);
  m.observe_backend_reply(-1);  // a clock step: counted as zero
  m.observe_backend_reply(std::nan(""));
  std::string text = m.render_prometheus();
  CHECK(text.find("smtpgate_backend_reply_seconds_bucket{le=\"0.001\"} 1\n") != std::string::npos);
  CHECK(text.find("smtpgate_backend_reply_seconds_count 1\n") != std::string::npos);
  CHECK(text.find("smtpgate_backend_reply_seconds_sum 0\n") != std::string::npos);
}

TEST_CASE("LabeledCounter: keys are owned copies, lookups by view", "[metrics]") {
  LabeledCounter<2> c;
  {
    std::string listener = "transient";
    c.add({listener, "mx"});
    c.add({listener, "mx"}, 5);
  }  // the caller's string is gone; the counter kept its own copy
  CHECK(c.get({"transient", "mx"}) == 6);
  CHECK(c.get({"transient", "submission"}) == 0);
  CHECK(c.size() == 1);
  c.add({"a", "z"});
  c.add({"a", ""});
  // Sorted by label tuple.
  auto it = c.values().begin();
  CHECK(it->first[0] == "a");
  CHECK(it->first[1] == "");
  CHECK(c.total() == 8);
}
