// For RedisLink's .cpp files: a command's reply context (RedisLink::Call) and reply readers.
#pragma once

#include <hiredis/hiredis.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/redis_link.h"

namespace smtpgate {

// One command's context for its reply callback: which link, which connection generation.
struct RedisLink::Call {
  RedisLink* link = nullptr;
  uint64_t gen = 0;
  CallKind kind = CallKind::Write;
  std::shared_ptr<Load> load;
  std::vector<std::string> keys;  // Mget, Zrange: the keys read
};

inline std::string_view str_of(const redisReply* r) {
  return r && r->str ? std::string_view(r->str, r->len) : std::string_view();
}
inline bool is_text(const redisReply* r) {
  return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

}  // namespace smtpgate
