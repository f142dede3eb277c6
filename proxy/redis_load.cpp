// RedisLink's full load: SCAN, then MGET and ZRANGEBYSCORE, assembled into a SharedSnapshot.
#include "proxy/redis_link.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

#include "proxy/redis_reply.h"

namespace smtpgate {

namespace {

// SCAN MATCH is a glob: the prefix is matched literally.
std::string glob_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

template <class T>
bool parse_number(std::string_view s, T& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

struct LoadPhase {
  std::string_view infix;
  bool zset;
};
constexpr LoadPhase kLoadPhases[] = {
    {"ban:", false}, {"login:", false}, {"fail:", true}, {"sent:", true}};
constexpr size_t kLoadPhaseCount = sizeof kLoadPhases / sizeof kLoadPhases[0];

}  // namespace

struct RedisLink::Load {
  LoadFn done;
  int64_t since_ms = 0;
  uint64_t gen = 0;
  size_t phase = 0;
  std::string cursor = "0";
  size_t pending = 0;  // replies awaited before the next SCAN
  bool stop = false;   // max_load_keys reached: finish after the pending replies
  bool finished = false;
  std::unordered_set<std::string> seen;  // SCAN may return a key twice
  SharedSnapshot snap;
};

bool RedisLink::load_all(int64_t since_ms, LoadFn done) {
  if (phase_ != Phase::Up || !done) return false;
  auto load = std::make_shared<Load>();
  load->done = std::move(done);
  load->since_ms = since_ms;
  load->gen = gen_;
  load_scan(load);
  return true;
}

void RedisLink::load_scan(const std::shared_ptr<Load>& load) {
  auto c = make_call(CallKind::Scan, load);
  std::string pattern =
      glob_escape(cfg_.prefix) + std::string(kLoadPhases[load->phase].infix) + "*";
  load->pending = 1;
  if (load->gen != gen_ ||
      !send(cmd_,
            {"SCAN", load->cursor, "MATCH", pattern, "COUNT", std::to_string(cfg_.scan_count)},
            std::move(c)))
    load_finish(load, false);
}

void RedisLink::load_reply(Call& call, redisReply* r) {
  std::shared_ptr<Load> load = call.load;
  if (load->finished) return;
  if (call.gen != gen_ || load->gen != gen_ || !r) {
    load_finish(load, false);  // the connection broke: the owner loads again on up
    return;
  }
  SharedSnapshot& snap = load->snap;
  const LoadPhase& phase = kLoadPhases[load->phase];
  const std::string prefix = cfg_.prefix + std::string(phase.infix);

  if (call.kind == CallKind::Scan) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !is_text(r->element[0]) ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
      log(Level::Error, "full load failed: SCAN answered " +
                            (r->type == REDIS_REPLY_ERROR ? std::string(str_of(r))
                                                          : std::string("an unexpected reply")));
      load_finish(load, false);
      return;
    }
    load->pending = 0;
    load->cursor = std::string(str_of(r->element[0]));
    std::vector<std::string> fresh;
    const redisReply* keys = r->element[1];
    for (size_t i = 0; i < keys->elements; ++i) {
      if (!is_text(keys->element[i])) continue;
      if (snap.keys_read >= cfg_.max_load_keys) {
        if (snap.complete)
          log(Level::Error, "full load stopped after " + std::to_string(snap.keys_read) +
                                " keys (the bound); the rest is learnt from events");
        snap.complete = false;
        load->stop = true;
        break;
      }
      std::string key(str_of(keys->element[i]));
      if (!load->seen.insert(key).second) continue;
      ++snap.keys_read;
      fresh.push_back(std::move(key));
    }
    if (fresh.empty()) {
      load_next(load);
      return;
    }
    auto make = [&](CallKind kind) { return make_call(kind, load); };
    if (!phase.zset) {
      // One MGET for the batch: a key that expired since the SCAN comes back nil.
      Argv argv{"MGET"};
      argv.insert(argv.end(), fresh.begin(), fresh.end());
      auto c = make(CallKind::Mget);
      c->keys = std::move(fresh);
      load->pending = 1;
      if (!send(cmd_, argv, std::move(c))) load_finish(load, false);
      return;
    }
    // Pipelined, one per key: SCAN batches keep the number in flight bounded.
    std::string since = std::to_string(load->since_ms);
    std::string limit = std::to_string(cfg_.max_entries_per_key);
    for (std::string& key : fresh) {
      auto c = make(CallKind::Zrange);
      Argv argv{"ZRANGEBYSCORE", key, since, "+inf", "WITHSCORES", "LIMIT", "0", limit};
      c->keys = {std::move(key)};
      if (!send(cmd_, argv, std::move(c))) {
        load_finish(load, false);
        return;
      }
      ++load->pending;
    }
    return;
  }

  if (call.kind == CallKind::Mget) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != call.keys.size()) {
      log(Level::Error, "full load failed: MGET answered " +
                            (r->type == REDIS_REPLY_ERROR ? std::string(str_of(r))
                                                          : std::string("an unexpected reply")));
      load_finish(load, false);
      return;
    }
    for (size_t i = 0; i < r->elements; ++i) {
      const redisReply* v = r->element[i];
      if (v->type == REDIS_REPLY_NIL) continue;  // expired since the SCAN
      std::string_view text = str_of(v);
      auto value = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
      if (v->type != REDIS_REPLY_STRING || value.is_discarded()) {
        ++snap.skipped;
        continue;
      }
      std::string name = call.keys[i].substr(std::min(prefix.size(), call.keys[i].size()));
      if (phase.infix == "ban:")
        snap.bans.push_back({std::move(name), std::move(value)});
      else
        snap.logins.push_back({std::move(name), std::move(value)});
    }
  } else {  // Zrange
    const std::string& key = call.keys.front();
    if (r->type != REDIS_REPLY_ARRAY) {
      ++snap.skipped;  // WRONGTYPE: not written by a gateway
    } else {
      SharedSnapshot::Window w;
      std::string_view rest = std::string_view(key).substr(std::min(prefix.size(), key.size()));
      bool ok = true;
      if (phase.infix == "fail:") {
        size_t colon = rest.find(':');
        ok = colon != std::string_view::npos && colon > 0;
        if (ok) {
          w.kind = std::string(rest.substr(0, colon));
          w.key = std::string(rest.substr(colon + 1));
        }
      } else {
        w.key = std::string(rest);
      }
      for (size_t i = 0; ok && i + 1 < r->elements; i += 2) {
        SharedEntry e;
        std::string_view member = str_of(r->element[i]);
        std::string score(str_of(r->element[i + 1]));
        // Scores are whole milliseconds, shown by Redis as a double ("1.7e12" for big ones).
        char* end = nullptr;
        double d = std::strtod(score.c_str(), &end);
        if (score.empty() || *end != '\0') {
          ++snap.skipped;
          continue;
        }
        e.at_ms = static_cast<int64_t>(d);
        if (phase.infix == "sent:") {
          size_t colon = member.find(':');
          if (colon == std::string_view::npos || !parse_number(member.substr(0, colon), e.count)) {
            ++snap.skipped;
            continue;
          }
          e.id = std::string(member.substr(colon + 1));
        } else {
          e.id = std::string(member);
        }
        w.entries.push_back(std::move(e));
      }
      if (!ok) {
        ++snap.skipped;
      } else if (!w.entries.empty()) {
        (phase.infix == "fail:" ? snap.failures : snap.sent).push_back(std::move(w));
      }
    }
  }
  if (load->pending > 0 && --load->pending == 0) load_next(load);
}

void RedisLink::load_next(const std::shared_ptr<Load>& load) {
  if (load->stop) {
    load_finish(load, true);
    return;
  }
  if (load->cursor != "0") {
    load_scan(load);
    return;
  }
  load->phase++;
  load->cursor = "0";
  if (load->phase >= kLoadPhaseCount)
    load_finish(load, true);
  else
    load_scan(load);
}

void RedisLink::load_finish(const std::shared_ptr<Load>& load, bool ok) {
  if (load->finished) return;
  load->finished = true;
  LoadFn done = std::move(load->done);
  if (closing_ || !done) return;
  if (!ok) {
    log(Level::Debug, "full load interrupted: the connection broke");
    done(false, SharedSnapshot{});
    return;
  }
  const SharedSnapshot& s = load->snap;
  log(Level::Debug, "full load: " + std::to_string(s.bans.size()) + " bans, " +
                        std::to_string(s.logins.size()) + " login states, " +
                        std::to_string(s.failures.size()) + " failure sets, " +
                        std::to_string(s.sent.size()) + " sending counters");
  done(true, std::move(load->snap));
}

}  // namespace smtpgate
