// The properties of the backend reply path for any byte stream a backend may send, shared by
// the libFuzzer target and the seeded replay in the unit tests (so CI checks them without
// clang). Socket-free: the parser is the real smtp::ReplyParser and smtp::reply_fits; who may
// answer what, and when, is a model of BackendClient's rules (ReplyTurns below).
//
// Parser: every reply is "DDD-text" lines ending in a "DDD text" line, one code, text
// printable ASCII, each line ending in CRLF, within kMaxReplyBytes and kMaxReplyLines; it
// matches a plain reference reading of the stream; an error is sticky; and how the stream is
// cut into reads changes nothing.
//
// Turns: a reply is taken only as the answer to the oldest command written before the bytes
// that completed it arrived (so never a reply beyond the commands written, never the final
// dot's answer from the read that held the 354), only if it fits its command, in the order
// the session sent its commands; and a reply refused as out of turn really came too early.
// Which replies arrive in which read legitimately changes where a conversation fails, so runs
// with different cuts must agree up to the first reply one of them refuses as out of turn.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz/cuts.h"

#include "proxy/smtp/reply_check.h"
#include "proxy/smtp/reply_parser.h"

namespace smtpgate::fuzz {

using smtp::BackendCommand;

// ---------------------------------------------------------------- the parser

struct ParsedReply {
  int code = 0;
  std::string raw;
  std::vector<std::string> lines;

  bool operator==(const ParsedReply&) const = default;
};

struct ParseRun {
  std::vector<ParsedReply> replies;
  std::string error;     // the parser's error(), "" when it never failed
  bool partial = false;  // at the end, part of a reply was pending

  bool operator==(const ParseRun&) const = default;
};

inline bool is_reply_digit(char c) {
  return c >= '0' && c <= '9';
}

// The shape of one reply as the session relays it; "" when fine.
inline std::string check_reply_shape(const smtp::BackendReply& r) {
  if (r.code < 200 || r.code > 599) return "reply code out of 200..599";
  if (r.raw.empty()) return "empty reply";
  if (r.raw.size() > smtp::kMaxReplyBytes) return "reply over kMaxReplyBytes";
  if (r.lines.size() > smtp::kMaxReplyLines) return "reply over kMaxReplyLines";
  std::string_view raw = r.raw;
  size_t n = 0;
  while (!raw.empty()) {
    const size_t lf = raw.find('\n');
    if (lf == std::string_view::npos) return "reply does not end in LF";
    if (lf == 0 || raw[lf - 1] != '\r') return "line not ended by CRLF";
    const std::string_view line = raw.substr(0, lf - 1);
    if (line.size() < 4) return "line shorter than a code and separator";
    raw.remove_prefix(lf + 1);
    if (!is_reply_digit(line[0]) || !is_reply_digit(line[1]) || !is_reply_digit(line[2]))
      return "line without a code";
    const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (code != r.code) return "line code differs from the reply's";
    if (line[3] != (raw.empty() ? ' ' : '-')) return "wrong separator (' ' ends a reply)";
    for (char ch : line) {
      const auto u = static_cast<unsigned char>(ch);
      if (u < 0x20 || u > 0x7e) return "byte outside printable ASCII in a line";
    }
    if (n >= r.lines.size() || r.lines[n] != line.substr(4)) return "lines() differs from raw";
    ++n;
  }
  if (n != r.lines.size()) return "lines() has extra entries";
  if (r.positive() != (r.code < 400) || r.transient() != (r.code >= 400 && r.code < 500) ||
      r.permanent() != (r.code >= 500))
    return "positive/transient/permanent disagree with the code";
  return {};
}

// The EHLO reading of any reply: no crash, and flags consistent with one another.
inline std::string check_capabilities(const smtp::BackendReply& r) {
  const smtp::EhloCapabilities c = smtp::parse_ehlo_capabilities(r);
  const bool any = c.starttls || c.pipelining || c.eight_bit_mime || c.smtputf8 || c.chunking ||
                   c.enhanced_status_codes || c.size || c.auth || c.xclient;
  if (r.code != 250 && any) return "capabilities from a reply that is not 250";
  if ((c.auth_plain || c.auth_login) && !c.auth) return "AUTH mechanism without AUTH";
  if (c.size_limit != 0 && !c.size) return "SIZE limit without SIZE";
  if (c.xclient_attrs != 0 && !c.xclient) return "XCLIENT attributes without XCLIENT";
  return {};
}

// Feeds `input` to `p` cut at `cuts` (ascending offsets), checking every result.
inline ParseRun run_reply_parser(smtp::ReplyParser& p, std::string_view input,
                                 const std::vector<size_t>& cuts, std::string& why) {
  using Status = smtp::ReplyParser::Status;
  ParseRun run;
  size_t since_reply = 0;  // bytes taken since the last reply ended
  size_t from = 0;
  for (size_t k = 0; k <= cuts.size(); ++k) {
    const size_t to = k < cuts.size() ? cuts[k] : input.size();
    std::string_view in = input.substr(from, to - from);
    from = to;
    while (!in.empty()) {
      const auto r = p.feed(in);
      if (r.consumed > in.size()) {
        why = "consumed too much";
        return run;
      }
      const std::string_view taken = in.substr(0, r.consumed);
      in.remove_prefix(r.consumed);
      since_reply += r.consumed;
      if (r.status == Status::Error) {
        run.error = std::string(p.error());
        if (run.error.empty()) why = "error without a reason";
        // Sticky: nothing more is taken, whatever comes.
        const auto again = p.feed("250 ok\r\n");
        if (again.status != Status::Error || again.consumed != 0) why = "error not sticky";
        if (p.feed({}).status != Status::Error) why = "error not sticky on empty input";
        return run;
      }
      if (r.status == Status::NeedMore) {
        if (!in.empty()) why = "NeedMore left input";
        if (p.partial() != (since_reply != 0)) why = "partial() wrong after NeedMore";
        break;
      }
      if (r.consumed == 0 || taken.back() != '\n') why = "reply does not end at an LF";
      if (p.partial()) why = "partial() after a complete reply";
      const smtp::BackendReply& rep = p.reply();
      std::string w = check_reply_shape(rep);
      if (w.empty()) w = check_capabilities(rep);
      if (!w.empty() && why.empty()) why = w;
      ParsedReply got{rep.code, std::string(rep.raw), {}};
      for (std::string_view l : rep.lines) got.lines.emplace_back(l);
      run.replies.push_back(std::move(got));
      since_reply = 0;
      if (!why.empty()) return run;
    }
  }
  run.partial = p.partial();
  if (run.partial != (since_reply != 0)) why = "partial() wrong at the end";
  return run;
}

// A plain reading of a backend's stream by the documented rules: lines end at LF (a CR just
// before it belongs to the terminator); a line is a code 2xx..5xx, '-' or ' ', then text whose
// bytes outside printable ASCII read as '?'; all lines of a reply carry one code; a reply
// longer than kMaxReplyBytes (lines as CRLF-ended) or kMaxReplyLines is refused, as soon as
// what has arrived of it already is.
inline ParseRun reference_reply_parse(std::string_view input) {
  ParseRun run;
  ParsedReply cur;
  size_t pos = 0;
  for (;;) {
    const size_t lf = input.find('\n', pos);
    if (lf == std::string_view::npos) {
      const size_t tail = input.size() - pos;
      if (cur.raw.size() + tail > smtp::kMaxReplyBytes) {
        run.error = "reply too long";
      } else {
        run.partial = tail != 0 || !cur.raw.empty();
      }
      return run;
    }
    std::string_view line = input.substr(pos, lf - pos);
    pos = lf + 1;
    const bool had_cr = !line.empty() && line.back() == '\r';
    if (had_cr) line.remove_suffix(1);
    const size_t size = cur.raw.size() + line.size() + 2;
    if (size > smtp::kMaxReplyBytes) {
      run.error = "reply too long";
      return run;
    }
    if (line.size() < 4 || line[0] < '2' || line[0] > '5' || !is_reply_digit(line[1]) ||
        !is_reply_digit(line[2]) || (line[3] != ' ' && line[3] != '-')) {
      run.error = "malformed reply line";
      return run;
    }
    const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (!cur.raw.empty() && code != cur.code) {
      run.error = "reply code changes between lines";
      return run;
    }
    if (cur.lines.size() + 1 > smtp::kMaxReplyLines) {
      run.error = "reply has too many lines";
      return run;
    }
    std::string text(line.substr(4));
    for (char& ch : text) {
      const auto u = static_cast<unsigned char>(ch);
      if (u < 0x20 || u > 0x7e) ch = '?';
    }
    cur.code = code;
    cur.raw.append(line.substr(0, 4)).append(text).append("\r\n");
    cur.lines.push_back(std::move(text));
    if (line[3] == ' ') {
      run.replies.push_back(std::move(cur));
      cur = {};
    }
  }
}

// ---------------------------------------------------------------- the turns

// BackendClient's rules for which reply answers which command, without a socket: replies
// answer written commands in order; a read may hold at most the replies owed when it arrived
// (during the handshake, one per read); no reply may follow a 354 or a 334 in its read (the
// final dot, or AUTH's next line, is written after it); every reply must fit its command.
// Commands given before the handshake ends, or while a backend without PIPELINING owes a
// reply, are held and written later, in the order given.
//
// A command given while others are held waits behind them (BackendClient::must_hold).
// `send_overtakes_held` models the earlier BackendClient that wrote it at once when no reply
// was owed, ahead of the held ones: the property must catch that reordering.
class ReplyTurns {
 public:
  enum class Verdict : uint8_t {
    Accepted,         // answers the oldest written command: the session gets it
    Challenge,        // AUTH's 334: the next line of the exchange is written
    Handshake,        // a handshake step's reply; the next step (or Ready) follows
    OutOfTurn,        // more replies than were owed when the read arrived: fail
    Unfit,            // does not fit its command (reply_fits): fail
    HandshakeFailed,  // a handshake step refused: fail (not a protocol error)
  };
  static bool fatal(Verdict v) { return v >= Verdict::OutOfTurn; }

  // What went out on the wire, in order, for the checker to stamp.
  struct Write {
    enum class Kind : uint8_t { Handshake, Command, AuthLine } kind;
    uint32_t id;  // the command's (Command, AuthLine)
    BackendCommand tag;
  };

  // `handshake_steps`: replies owed before Ready (banner, EHLO, ...); the first is owed from
  // the start (the connection itself asked for it).
  ReplyTurns(unsigned handshake_steps, bool pipelining, bool send_overtakes_held = false)
      : handshake_left_(handshake_steps),
        pipelining_(pipelining),
        send_overtakes_held_(send_overtakes_held) {
    if (handshake_left_ > 0) writes_.push_back({Write::Kind::Handshake, 0, {}});
  }

  bool ready() const { return handshake_left_ == 0; }
  bool failed() const { return failed_; }

  // The session sends a command (id: its own number, increasing).
  void send(uint32_t id, BackendCommand tag) {
    if (!ready() || (!held_.empty() && !send_overtakes_held_) ||
        (!pipelining_ && !pending_.empty())) {
      held_.emplace_back(tag, id);
      return;
    }
    write(tag, id);
  }

  // A read arrived: it may hold the replies owed now.
  void chunk_arrived() { chunk_owed_ = ready() ? pending_.size() : 1; }

  // A complete reply from the current read. `deliver(id, tag)` is the session's handler for
  // an accepted reply (it may send more); held commands go out after it.
  template <class F>
  Verdict on_reply(int code, F&& deliver) {
    if (failed_) return Verdict::OutOfTurn;
    if (chunk_owed_ == 0) return fail(Verdict::OutOfTurn);
    --chunk_owed_;
    if (!ready()) {
      chunk_owed_ = 0;  // what follows answers what is written now
      if (code < 200 || code >= 300) return fail(Verdict::HandshakeFailed);
      if (--handshake_left_ > 0) {
        writes_.push_back({Write::Kind::Handshake, 0, {}});
      } else {
        release_held();
      }
      return Verdict::Handshake;
    }
    if (pending_.empty()) return fail(Verdict::OutOfTurn);
    const auto [tag, id] = pending_.front();
    if (tag == BackendCommand::Auth && code == 334) {
      chunk_owed_ = 0;  // the next reply answers the line written now
      writes_.push_back({Write::Kind::AuthLine, id, tag});
      return Verdict::Challenge;
    }
    if (!smtp::reply_fits(tag, code)) return fail(Verdict::Unfit);
    if (tag == BackendCommand::Data && code == 354) chunk_owed_ = 0;  // only the dot is next
    pending_.pop_front();
    deliver(id, tag);
    release_held();
    return Verdict::Accepted;
  }

  // Lines written since the last call, oldest first.
  std::vector<Write> take_writes() { return std::exchange(writes_, {}); }

 private:
  Verdict fail(Verdict v) {
    failed_ = true;
    return v;
  }
  void write(BackendCommand tag, uint32_t id) {
    pending_.emplace_back(tag, id);
    writes_.push_back({Write::Kind::Command, id, tag});
  }
  void release_held() {
    while (!held_.empty() && ready() && (pipelining_ || pending_.empty())) {
      write(held_.front().first, held_.front().second);
      held_.pop_front();
    }
  }

  unsigned handshake_left_;
  bool pipelining_;
  bool send_overtakes_held_;
  bool failed_ = false;
  size_t chunk_owed_ = 0;
  std::deque<std::pair<BackendCommand, uint32_t>> pending_;  // written, reply owed
  std::deque<std::pair<BackendCommand, uint32_t>> held_;     // given, not written yet
  std::vector<Write> writes_;
};

// One command of a session's script.
struct ScriptStep {
  BackendCommand cmd = BackendCommand::Mail;  // Data brings its final dot after a 354
  bool barrier = false;  // sent only once every reply owed to the session is in
  // Given only from the handler of a reply (as Session::pump runs the client's held input
  // after each backend reply), not when client input arrives between two reads.
  bool later = false;
};

struct Conversation {
  unsigned handshake_steps = 0;
  bool pipelining = true;
  bool dot_later = false;            // the body's end arrives only at the next event after the 354
  bool send_overtakes_held = false;  // ReplyTurns as BackendClient is today
  std::vector<ScriptStep> script;
};

// The session side: gives the script's commands to ReplyTurns as a session would (DATA and
// AUTH end a pipelined group: nothing follows them until their reply; the final dot only
// after a 354), and checks what it is told: replies for its commands, in its order.
class SessionModel {
 public:
  SessionModel(const Conversation& c, ReplyTurns& turns) : c_(c), turns_(turns) {}

  // Client input may have arrived (`from_reply`: in a reply's handler): send what the script
  // allows now.
  void pump(bool from_reply = false) {
    if (dot_due_) {
      if (c_.dot_later && !dot_waited_) {
        dot_waited_ = true;
        return;
      }
      dot_due_ = false;
      give(BackendCommand::DataEnd);
    }
    while (!waiting_ && next_ < c_.script.size()) {
      const ScriptStep& s = c_.script[next_];
      if (s.barrier && !outstanding_.empty()) return;
      if (s.later && !from_reply) return;
      ++next_;
      give(s.cmd);
      if (s.cmd == BackendCommand::Data || s.cmd == BackendCommand::Auth) waiting_ = true;
    }
  }

  // ReplyTurns delivers a reply to command `id`.
  void deliver(uint32_t id, BackendCommand tag, int code) {
    if (outstanding_.empty()) {
      why_ = "reply delivered with no command outstanding";
      return;
    }
    if (outstanding_.front().first != id || outstanding_.front().second != tag) {
      why_ = "reply delivered to another command than the session's oldest";
      return;
    }
    if (!smtp::reply_fits(tag, code)) why_ = "reply delivered that does not fit its command";
    outstanding_.pop_front();
    if (tag == BackendCommand::Data) {
      waiting_ = false;
      if (code == 354) {
        dot_due_ = true;
        dot_waited_ = false;
      }
    }
    if (tag == BackendCommand::Auth) waiting_ = false;
    pump(true);
  }

  const std::string& why() const { return why_; }

 private:
  void give(BackendCommand cmd) {
    const uint32_t id = next_id_++;
    outstanding_.emplace_back(id, cmd);
    turns_.send(id, cmd);
  }

  const Conversation& c_;
  ReplyTurns& turns_;
  size_t next_ = 0;
  uint32_t next_id_ = 1;
  bool waiting_ = false;  // DATA or AUTH sent, its reply not in
  bool dot_due_ = false;
  bool dot_waited_ = false;
  std::deque<std::pair<uint32_t, BackendCommand>> outstanding_;  // sent, reply not delivered
  std::string why_;
};

// One conversation over `stream` cut at `cuts`: what happened to each reply ("A<id>" taken
// for command id, "C" AUTH challenge, "H" handshake), then how it ended ("END", "OUT",
// "UNFIT", "HSFAIL", "PARSE:<why>"). `why`: the first broken rule, if any.
inline std::vector<std::string> run_conversation(const Conversation& c, std::string_view stream,
                                                 const std::vector<size_t>& cuts,
                                                 std::string& why) {
  using Verdict = ReplyTurns::Verdict;
  using Kind = ReplyTurns::Write::Kind;
  struct OnWire {
    Kind kind;
    uint32_t id;
    BackendCommand tag;
    size_t stamp;  // reads that had arrived when it was written: answerable from that read on
  };
  ReplyTurns turns(c.handshake_steps, c.pipelining, c.send_overtakes_held);
  SessionModel session(c, turns);
  smtp::ReplyParser parser;
  std::deque<OnWire> wire;  // written, not answered: what an honest backend may answer next
  std::vector<std::string> trace;
  uint32_t last_written_id = 0;
  size_t data_354_chunk = SIZE_MAX;  // the read that held the last 354

  size_t now = 0;  // reads arrived so far
  auto stamp_writes = [&] {
    for (const auto& w : turns.take_writes()) {
      if (w.kind == Kind::AuthLine) {
        if (wire.empty() || wire.front().kind != Kind::Command || wire.front().id != w.id ||
            wire.front().tag != BackendCommand::Auth) {
          why = "AUTH line written for no outstanding AUTH";
          continue;
        }
        wire.front().stamp = now;
        continue;
      }
      if (w.kind == Kind::Command) {
        // The session numbers its commands 1, 2, 3...: the wire must carry them so.
        if (w.id != last_written_id + 1) why = "commands written out of the session's order";
        last_written_id = w.id;
      }
      wire.push_back({w.kind, w.id, w.tag, now});
    }
  };
  stamp_writes();
  session.pump();
  stamp_writes();

  size_t from = 0;
  for (size_t k = 0; k <= cuts.size(); ++k) {
    const size_t to = k < cuts.size() ? cuts[k] : stream.size();
    std::string_view in = stream.substr(from, to - from);
    from = to;
    // Client input may come between two reads of the backend.
    session.pump();
    stamp_writes();
    const size_t chunk = now++;  // this read; what is written while handling it comes after
    turns.chunk_arrived();
    while (!in.empty()) {
      const auto r = parser.feed(in);
      in.remove_prefix(r.consumed);
      if (r.status == smtp::ReplyParser::Status::NeedMore) break;
      if (r.status == smtp::ReplyParser::Status::Error) {
        trace.push_back("PARSE:" + std::string(parser.error()));
        return trace;
      }
      const int code = parser.reply().code;
      // What an honest backend may have answered: the oldest line written before this read.
      const bool eligible = !wire.empty() && wire.front().stamp <= chunk;
      const OnWire front = wire.empty() ? OnWire{Kind::Handshake, 0, {}, 0} : wire.front();
      const Verdict v = turns.on_reply(
          code, [&](uint32_t id, BackendCommand tag) { session.deliver(id, tag, code); });
      std::string w;
      switch (v) {
        case Verdict::Accepted:
          trace.push_back("A" + std::to_string(front.id));
          if (!eligible) {
            w = wire.empty() ? "reply taken with no command written"
                             : "reply taken from a read that came before its command";
          } else if (front.kind != Kind::Command) {
            w = "reply taken for a command while a handshake step is owed";
          } else if (!smtp::reply_fits(front.tag, code)) {
            w = "reply taken that does not fit its command";
          } else if (front.tag == BackendCommand::DataEnd && data_354_chunk >= chunk) {
            w = "final dot answered from the read that held the 354";
          }
          if (front.tag == BackendCommand::Data && code == 354) data_354_chunk = chunk;
          if (!wire.empty()) wire.pop_front();
          break;
        case Verdict::Challenge:
          trace.push_back("C");
          if (!eligible || front.kind != Kind::Command || front.tag != BackendCommand::Auth ||
              code != 334)
            w = "334 taken as a challenge out of turn";
          break;
        case Verdict::Handshake:
          trace.push_back("H");
          if (!eligible || front.kind != Kind::Handshake) w = "handshake reply out of turn";
          if (code < 200 || code >= 300) w = "handshake step taken with a failure code";
          if (!wire.empty()) wire.pop_front();
          break;
        case Verdict::OutOfTurn:
          trace.push_back("OUT");
          // Tight: a reply an honest backend could have sent by then is never refused.
          if (eligible) w = "reply refused as out of turn that was owed";
          break;
        case Verdict::Unfit:
          trace.push_back("UNFIT");
          if (!eligible || front.kind != Kind::Command || smtp::reply_fits(front.tag, code) ||
              (front.tag == BackendCommand::Auth && code == 334))
            w = "reply refused as unfit that fits";
          break;
        case Verdict::HandshakeFailed:
          trace.push_back("HSFAIL");
          if (!eligible || front.kind != Kind::Handshake || (code >= 200 && code < 300))
            w = "handshake failed on a good reply";
          break;
      }
      if (w.empty()) w = session.why();
      if (!w.empty() && why.empty()) why = w;
      if (ReplyTurns::fatal(v) || !why.empty()) return trace;
      stamp_writes();
      if (!why.empty()) return trace;
    }
  }
  trace.push_back("END");
  return trace;
}

// Two runs of one conversation cut differently agree up to the first reply that one of them
// refuses as out of turn (the only verdict that depends on how the bytes arrived).
inline bool same_until_out_of_turn(const std::vector<std::string>& a,
                                   const std::vector<std::string>& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (a[i] != b[i]) return a[i] == "OUT" || b[i] == "OUT";
  }
  return a.size() == b.size();
}

// ---------------------------------------------------------------- the whole property

// Returns "" when every rule holds for `stream`, else the first one broken.
inline std::string check_backend_reply(const Conversation& c, std::string_view stream,
                                       uint32_t seed) {
  // Long streams (those reaching the limits) get fewer, coarser cuttings: they are slow, and
  // their long lines are no more interesting cut at every byte.
  const bool small = stream.size() <= 8192;
  std::vector<std::vector<size_t>> cuttings;
  cuttings.push_back(random_cuts(stream.size(), seed, small ? 7 : 997));
  if (small) {
    cuttings.push_back(every_byte(stream.size()));
    // Each line a read of its own: the most a backend can be owed.
    std::vector<size_t> at_lf;
    for (size_t i = 0; i + 1 < stream.size(); ++i) {
      if (stream[i] == '\n') at_lf.push_back(i + 1);
    }
    cuttings.push_back(std::move(at_lf));
    if (!stream.empty()) cuttings.push_back({seed % stream.size() + 1});
  }

  std::string why;
  smtp::ReplyParser parser;
  const ParseRun whole = run_reply_parser(parser, stream, {}, why);
  if (!why.empty()) return "parser, whole: " + why;
  if (!(whole == reference_reply_parse(stream))) return "parser differs from the reference reading";
  // A reset parser is a new one, whatever it held (capacity is reused).
  parser.reset();
  if (small && (!(run_reply_parser(parser, stream, {}, why) == whole) || !why.empty()))
    return "parser after reset() differs" + (why.empty() ? "" : ": " + why);
  for (const auto& cuts : cuttings) {
    smtp::ReplyParser p;
    if (!(run_reply_parser(p, stream, cuts, why) == whole)) return "parser: chunked differs";
    if (!why.empty()) return "parser, chunked: " + why;
  }

  const std::vector<std::string> one_read = run_conversation(c, stream, {}, why);
  if (!why.empty()) return "turns, one read: " + why;
  for (const auto& cuts : cuttings) {
    const std::vector<std::string> t = run_conversation(c, stream, cuts, why);
    if (!why.empty()) return "turns, chunked: " + why;
    if (!same_until_out_of_turn(one_read, t)) return "turns: chunked run takes other replies";
  }
  return {};
}

// Builds the start of one long reply (code 250, CRLF lines) so a short input can reach the
// limits: `kind` 1: kMaxReplyBytes - 16 + delta bytes, 2: kMaxReplyLines - 4 + delta lines.
inline std::string limit_prefix(unsigned kind, int delta) {
  std::string out;
  if (kind == 1) {
    const size_t total = static_cast<size_t>(static_cast<int>(smtp::kMaxReplyBytes) - 16 + delta);
    const std::string line = "250-" + std::string(994, 'x') + "\r\n";  // 1000 bytes
    while (out.size() + line.size() + 6 <= total) out += line;
    out += "250-" + std::string(total - out.size() - 6, 'y') + "\r\n";
  } else if (kind == 2) {
    const size_t lines = static_cast<size_t>(static_cast<int>(smtp::kMaxReplyLines) - 4 + delta);
    for (size_t i = 0; i < lines; ++i) out += "250-\r\n";
  }
  return out;
}

// Decodes a fuzzer's bytes:
//   [0] bits 0-1 handshake steps, bit 2 PIPELINING, bit 3 the dot comes later,
//       bits 4-6 a prefix reaching a limit (limit_prefix: 1 bytes, 2 lines, others none)
//   [1] seed of the random cuts
//   [2] bits 0-3 the prefix's delta (-8..7), bits 4-7 script length
//   then one byte per script step: bits 0-2 the command (Mail, Rcpt, Data, Rset, Auth, and
//   Mail/Rcpt/Rset again), bit 3 barrier, bit 4 later; the rest is the backend's stream.
// `send_overtakes_held`: model BackendClient::send as it is today (see ReplyTurns).
inline std::string check_backend_reply_bytes(const uint8_t* data, size_t size,
                                             bool send_overtakes_held = false) {
  if (size < 3) return {};
  static constexpr BackendCommand kCommands[8] = {
      BackendCommand::Mail, BackendCommand::Rcpt, BackendCommand::Data, BackendCommand::Rset,
      BackendCommand::Auth, BackendCommand::Mail, BackendCommand::Rcpt, BackendCommand::Rset};
  Conversation c;
  c.handshake_steps = data[0] & 3;
  c.pipelining = (data[0] & 4) != 0;
  c.dot_later = (data[0] & 8) != 0;
  c.send_overtakes_held = send_overtakes_held;
  const unsigned prefix = (data[0] >> 4) & 7;
  const int delta = static_cast<int>(data[2] & 15) - 8;
  const size_t steps = data[2] >> 4;
  size_t at = 3;
  for (size_t i = 0; i < steps && at < size; ++i, ++at) {
    c.script.push_back({kCommands[data[at] & 7], (data[at] & 8) != 0, (data[at] & 16) != 0});
  }
  std::string stream = limit_prefix(prefix, delta);
  stream.append(reinterpret_cast<const char*>(data + at), size - at);
  return check_backend_reply(c, stream, data[1]);
}

}  // namespace smtpgate::fuzz
