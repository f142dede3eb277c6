// What the dialogue reports of a transaction when it ends (the `transaction` and `message`
// log events): the facts replay and learn need (SPEC §11).
#include "proxy/smtp/dialogue.h"

namespace smtpgate::smtp {

void Dialogue::on_session_end() {
  if (transaction_open() && !body_answered_)
    record_transaction("abandoned", phase_ == Phase::Body ? Stage::Data : Stage::Quit, {}, {});
  txn_.clear();
  body_answered_ = true;  // recorded once
}

TransactionRecord Dialogue::txn_record(std::string& sender) const {
  TransactionRecord t;
  if (txn_.active) txn_.sender.append_address(sender);
  t.from = sender;
  t.recipients = txn_.named;
  t.recipients_omitted = txn_.named_omitted;
  t.accepted = txn_.accepted;
  t.accepted_count = txn_.rcpt_accepted;
  return t;
}

void Dialogue::record_transaction(std::string_view outcome, Stage stage, std::string_view rule,
                                  std::string_view reply, std::string_view from, uint64_t size) {
  std::string sender;
  TransactionRecord t = txn_record(sender);
  if (!from.empty()) t.from = from;  // a MAIL refused by policy: no transaction holds it
  t.outcome = outcome;
  t.stage = stage;
  t.rule = rule;
  t.reply = first_line(reply);
  t.size = size != 0 ? size : phase_ == Phase::Body ? io_.body_bytes() : 0;
  services_.transaction(t);
}

void Dialogue::record_message(std::string_view outcome, std::string_view reply, uint64_t size,
                              bool from_sent) {
  std::string sender;
  TransactionRecord t = from_sent ? TransactionRecord{} : txn_record(sender);
  if (from_sent) {  // the message whose final dot went out; txn_ may hold the next one
    t.from = sent_.sender;
    t.recipients = sent_.named;
    t.recipients_omitted = sent_.named_omitted;
    t.accepted = sent_.accepted;
    t.accepted_count = sent_.recipients;
  }
  t.outcome = outcome;
  t.stage = Stage::Data;
  t.reply = first_line(reply);
  t.size = size;
  t.message = true;
  services_.transaction(t);
}

}  // namespace smtpgate::smtp
