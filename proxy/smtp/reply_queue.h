// Replies owed to a client, in command order (RFC 2920: pipelined commands are answered in
// the order they were sent). The gateway's own replies are ready at once; a backend's fill
// their place later. Nothing here does I/O: the caller writes what comes out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/smtp/reply_check.h"

namespace smtpgate::smtp {

class ReplyQueue {
 public:
  // What a reply the client must wait for (RFC 2920 synchronisation points) answers.
  enum class SyncPoint : uint8_t { None, Helo, Data };

  bool empty() const { return head_ == slots_.size(); }
  size_t pending() const { return slots_.size() - head_; }
  // Reply text held here (ready, but behind a reply still owed): part of the owed output.
  size_t held_bytes() const { return held_bytes_; }

  // A ready reply: true when nothing is owed ahead of it, so the caller writes `text` now and
  // nothing is kept; otherwise it is copied and waits its turn. `sync`: EHLO/HELO's reply.
  bool add_ready(std::string_view text, bool sync = false) {
    if (empty()) return true;
    Slot s;
    s.text.assign(text);
    s.ready = true;
    s.sync = sync;
    held_bytes_ += text.size();
    slots_.push_back(std::move(s));
    return false;
  }

  // A reply the backend owes for `cmd`. `sync`: DATA's (the client waits for the 354).
  // `txn`: the caller's number for the mail transaction the command belongs to.
  void add_owed(BackendCommand cmd, bool sync = false, uint32_t txn = 0) {
    Slot s;
    s.cmd = cmd;
    s.sync = sync;
    s.txn = txn;
    slots_.push_back(std::move(s));
  }

  // The transaction number of the oldest reply still owed (the one the backend's next
  // reply answers), or 0 when none is owed.
  uint32_t next_owed_txn() const {
    for (size_t i = head_; i < slots_.size(); ++i)
      if (!slots_[i].ready) return slots_[i].txn;
    return 0;
  }

  // The backend's reply for the oldest slot still owed: true when that slot is the first in
  // line, so the caller writes `text` now (the usual case, no copy); otherwise it is kept.
  bool fill(std::string_view text) {
    for (size_t i = head_; i < slots_.size(); ++i) {
      if (slots_[i].ready) continue;
      if (i == head_) {
        ++head_;
        compact();
        return true;
      }
      slots_[i].text.assign(text);
      slots_[i].ready = true;
      held_bytes_ += text.size();
      return false;
    }
    return false;
  }

  // Every reply still owed gets the text `text_for(cmd)` chooses (the backend is gone).
  template <class F>
  void fill_all_owed(F&& text_for) {
    for (size_t i = head_; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (s.ready) continue;
      s.text.assign(text_for(s.cmd));
      s.ready = true;
      held_bytes_ += s.text.size();
    }
  }

  // Hands the ready replies at the head of the line to `write`, in order.
  template <class F>
  void drain(F&& write) {
    while (head_ < slots_.size() && slots_[head_].ready) {
      write(std::string_view(slots_[head_].text));
      held_bytes_ -= slots_[head_].text.size();
      ++head_;
    }
    compact();
  }

  // The first reply the client must wait for, if one is still in line: a ready sync slot is
  // the gateway's own EHLO/HELO reply, an owed one is DATA's.
  SyncPoint awaiting_sync() const {
    for (size_t i = head_; i < slots_.size(); ++i)
      if (slots_[i].sync) return slots_[i].ready ? SyncPoint::Helo : SyncPoint::Data;
    return SyncPoint::None;
  }

  void clear() {
    slots_.clear();
    head_ = 0;
    held_bytes_ = 0;
  }

 private:
  struct Slot {
    std::string text;
    bool ready = false;
    bool sync = false;
    BackendCommand cmd = BackendCommand::Mail;
    uint32_t txn = 0;
  };
  void compact() {
    if (head_ == slots_.size()) clear();  // keeps the vector's buffer for the next group
  }

  std::vector<Slot> slots_;
  size_t head_ = 0;
  size_t held_bytes_ = 0;
};

}  // namespace smtpgate::smtp
