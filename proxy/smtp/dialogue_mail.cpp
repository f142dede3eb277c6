// The mail transaction: MAIL, RCPT, DATA, the end of the body, and what the backend's
// replies to them mean.
#include "proxy/smtp/dialogue.h"
#include "proxy/smtp/received_header.h"

namespace smtpgate::smtp {

void Dialogue::cmd_mail(const Command& cmd, std::string_view line) {
  if (!helo_seen_) return reply_error(replies::need_helo().wire);
  if (txn_.active) return reply_error(replies::nested_mail().wire);
  auto sender = parse_mail_path(cmd.path);
  if (!sender) return reply_error(replies::bad_sender().wire);
  const bool smtputf8 = cmd.find_param("SMTPUTF8") != nullptr;
  if (!smtputf8 && has_non_ascii(cmd.path))
    return reply_error(replies::smtputf8_required());  // RFC 6531 §3.4
  set_class(engine::class_at_mail(facts_));
  Counters c;
  if (facts_.authenticated) c.messages_last_hour = services_.messages_last_hour(facts_.login);
  const std::string from = sender->address();
  const Decision d = engine::mail(policy_, facts_, *sender, cmd.size.value_or(0), c);
  auto rejected = [&](const Decision& why) {
    record_transaction("rejected", Stage::Mail, why.rule, why.reply.line(),
                       from.empty() ? "<>" : from);
  };
  if (apply(d, from)) return rejected(d);
  if (breaker_on())
    if (const auto s = services_.login_suspended(facts_.login)) {
      const Decision sd = engine::login_suspended(policy_, facts_, Stage::Mail, *s);
      if (apply(sd, from)) return rejected(sd);
    }
  junk_ = 0;
  if (backend_auth_lost_ || !io_.backend_open()) {
    reply(replies::backend_unavailable().wire);
    close();
    return;
  }
  txn_.active = true;
  txn_.smtputf8 = smtputf8;
  txn_.sender = std::move(*sender);
  replies_.add_owed(BackendCommand::Mail, false, ++txn_number_);
  // SPEC §3: AUTH= is never forwarded; the backend knows the login from the session's AUTH.
  std::string without_auth;
  io_.backend_send(BackendCommand::Mail,
                   remove_auth_param(cmd, line, without_auth) ? without_auth : line, true);
}

void Dialogue::cmd_rcpt(const Command& cmd, std::string_view line) {
  if (!txn_.active) return reply_error(replies::need_mail().wire);
  if (txn_.backend_broken) return reply(replies::backend_protocol_error().wire);
  auto rcpt = parse_mail_path(cmd.path);
  if (!rcpt || rcpt->null) return reply_error(replies::bad_recipient().wire);
  if (!txn_.smtputf8 && has_non_ascii(cmd.path)) return reply_error(replies::smtputf8_required());
  Counters c;
  c.recipients_in_message = txn_.rcpt_forwarded;
  if (facts_.authenticated)
    c.recipients_last_hour = txn_.rcpt_forwarded + services_.recipients_last_hour(facts_.login);
  std::string to = rcpt->address();
  const bool recorded = txn_.named.size() < kMaxRecordedRecipients;
  if (recorded) {
    txn_.named.push_back(to);
  } else {
    ++txn_.named_omitted;
  }
  const Decision d = engine::rcpt(policy_, facts_, txn_.sender, *rcpt, c);
  std::string from;  // named in the decision's log line (an allow is not logged)
  if (!d.allowed() || report_allows_) txn_.sender.append_address(from);
  if (apply(d, from, to)) return;
  if (breaker_on()) {
    if (from.empty()) txn_.sender.append_address(from);
    if (refused_as_suspended(Stage::Rcpt, from, to)) return;
    if (auto trip = services_.breaker_recipient(facts_.login, rcpt->domain)) {
      const Decision t = trip_breaker(Stage::Rcpt, *trip, from, to);
      if (t.blocks()) return reply(t.reply);
    }
  }
  if (txn_.rcpt_forwarded == 0) txn_.first_rcpt = to;
  ++txn_.rcpt_forwarded;
  if (recorded) txn_.forwarded.push_back(std::move(to));
  replies_.add_owed(BackendCommand::Rcpt, false, txn_number_);
  io_.backend_send(BackendCommand::Rcpt, line, true);
}

void Dialogue::cmd_data() {
  if (!txn_.active)
    return reply_error(txn_.rcpt_forwarded ? replies::need_rcpt().wire : replies::need_mail().wire);
  if (txn_.backend_broken) return reply(replies::backend_protocol_error().wire);
  if (txn_.rcpt_accepted == 0)
    return reply(txn_.rcpt_forwarded ? replies::no_valid_recipients().wire
                                     : replies::need_rcpt().wire);
  if (refused_as_suspended(Stage::Data)) return;
  if (io_.backend_idle()) {
    reply(replies::backend_unavailable().wire);
    close();
    return;
  }
  replies_.add_owed(BackendCommand::Data, true);  // the client must wait for the 354
  io_.backend_send(BackendCommand::Data, "DATA\r\n", false);
  waiting_ = true;  // the body may follow only after our 354
  io_.clear_deadline();
}

void Dialogue::reply_to_data(const BackendReply& r) {
  waiting_ = false;
  if (r.code == 354 && phase_ != Phase::Closing) {
    phase_ = Phase::Body;
    body_answered_ = false;
    close_after_body_ = false;
    io_.start_body(received_header());
    io_.set_deadline(policy_.timeouts.data);
  } else {
    command_deadline();
  }
  backend_reply_arrived(r.raw);
}

std::string Dialogue::received_header() {
  std::string out;
  if (!policy_.message.received_header) return out;
  ReceivedHeader h;
  h.helo = helo_;
  h.client = &facts_.client;
  h.hostname = policy_.hostname;
  h.esmtp = esmtp_;
  h.tls = facts_.tls;
  h.authenticated = facts_.authenticated;
  h.session_id = session_id_;
  h.message_number = messages_ + 1;
  h.listener = listener_.name;
  if (policy_.message.received_auth) h.login = facts_.login;  // SPEC §4
  h.tls_version = tls_version_;
  h.tls_cipher = tls_cipher_;
  if (txn_.rcpt_accepted == 1) h.recipient = txn_.first_rcpt;
  append_received_header(out, h);
  return out;
}

void Dialogue::on_body_end(BodyFilter::Status status, uint64_t size) {
  phase_ = Phase::Command;
  if (body_answered_) {
    // The client had its 4xx when the backend failed; the body it went on sending is gone,
    // and its end gets no second reply.
    body_answered_ = false;
    txn_.clear();
    if (close_after_body_ || status == BodyFilter::Status::BareNewline) {
      close();
    } else {
      command_deadline();
    }
    close_after_body_ = false;
    return;
  }
  Decision d = engine::body_end(policy_, facts_, size, status == BodyFilter::Status::BareNewline);
  // A suspension while the body streamed (another session tripped the breaker): the message
  // is not completed at the backend either.
  if (d.allowed() && breaker_on())
    if (const auto s = services_.login_suspended(facts_.login))
      d = engine::login_suspended(policy_, facts_, Stage::Data, *s);
  report(d);
  if (d.blocks()) {
    io_.backend_abort();  // closed before the final dot: nothing is delivered
    if (facts_.authenticated) backend_auth_lost_ = true;
    record_transaction("rejected", Stage::Data, d.rule, d.reply.line(), {}, size);
    txn_.clear();
    reply(d.reply);
    if (d.reply.close) {
      close();
    } else {
      command_deadline();
    }
    return;
  }
  sent_.size = size;
  sent_.recipients = txn_.rcpt_accepted;
  sent_.sender.clear();
  txn_.sender.append_address(sent_.sender);
  sent_.named.swap(txn_.named);  // the vectors swap buffers: no copy, no allocation
  sent_.accepted.swap(txn_.accepted);
  sent_.named_omitted = txn_.named_omitted;
  txn_.clear();
  replies_.add_owed(BackendCommand::DataEnd);
  io_.backend_send(BackendCommand::DataEnd, ".\r\n", false);
  command_deadline();
}

void Dialogue::reply_to_data_end(const BackendReply& r) {
  const bool delivered = r.code >= 200 && r.code < 300;
  if (delivered) ++messages_;
  record_message(delivered ? "delivered" : "rejected", r.raw, sent_.size, true);
  backend_reply_arrived(r.raw);
  if (draining_) {
    // Shutting down: the message in flight is done, no new one starts here. Commands the
    // client pipelined after the dot are dropped with the backend connection (their replies
    // would never come); the client hears the 421 after the dot's reply.
    flush_replies();
    if (!replies_.empty() || txn_.active || has_held_) {
      io_.backend_abort();
      replies_.clear();
      has_held_ = false;
      waiting_ = false;
      txn_.clear();
    }
    reply(replies::shutting_down().wire);
    close("drained");
  }
}

}  // namespace smtpgate::smtp
