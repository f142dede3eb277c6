// The project's own hiredis adapter for libuv: watches a hiredis async context on a uv loop.
#pragma once

#include <uv.h>

struct redisAsyncContext;

namespace smtpgate {

// hiredis on libuv. Not hiredis 0.14's adapters/libuv.h: that one drops a poll error
// (status < 0, which libuv reports for a refused connect or a reset connection, and then
// stops the handle), so such a connection would hang forever, unnoticed. Here an error is
// handed to hiredis as readiness: its read or write then fails and it tears the context down
// (what later hiredis versions do).
// Returns false (the caller frees `ac`) when the socket cannot be watched.
bool redis_uv_attach(redisAsyncContext* ac, uv_loop_t* loop);

}  // namespace smtpgate
