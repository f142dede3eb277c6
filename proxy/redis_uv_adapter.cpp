// The project's own hiredis adapter for libuv (why its own: see redis_uv_adapter.h).
#include "proxy/redis_uv_adapter.h"

#include <hiredis/async.h>

namespace smtpgate {

namespace {

struct UvEvents {
  redisAsyncContext* ac = nullptr;  // null once hiredis cleaned up: the handle is closing
  uv_poll_t poll{};
  int events = 0;
};

void uv_on_poll(uv_poll_t* h, int status, int events) {
  auto* p = static_cast<UvEvents*>(h->data);
  int ready = status < 0 ? p->events : events;
  // Reading may free the context (and clear p->ac) before the write is looked at.
  if (p->ac && (ready & UV_READABLE)) redisAsyncHandleRead(p->ac);
  if (p->ac && (ready & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
}

void uv_update(UvEvents* p) {
  if (p->events)
    uv_poll_start(&p->poll, p->events, uv_on_poll);
  else
    uv_poll_stop(&p->poll);
}

void ev_add_read(void* d) {
  auto* p = static_cast<UvEvents*>(d);
  p->events |= UV_READABLE;
  uv_update(p);
}
void ev_del_read(void* d) {
  auto* p = static_cast<UvEvents*>(d);
  p->events &= ~UV_READABLE;
  uv_update(p);
}
void ev_add_write(void* d) {
  auto* p = static_cast<UvEvents*>(d);
  p->events |= UV_WRITABLE;
  uv_update(p);
}
void ev_del_write(void* d) {
  auto* p = static_cast<UvEvents*>(d);
  p->events &= ~UV_WRITABLE;
  uv_update(p);
}
// hiredis calls this before it closes the socket: the handle stops watching the fd at once
// and frees itself on the next loop iteration.
void ev_cleanup(void* d) {
  auto* p = static_cast<UvEvents*>(d);
  p->ac = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&p->poll),
           [](uv_handle_t* h) { delete static_cast<UvEvents*>(h->data); });
}

}  // namespace

bool redis_uv_attach(redisAsyncContext* ac, uv_loop_t* loop) {
  auto* p = new UvEvents;
  if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
    delete p;
    return false;
  }
  p->ac = ac;
  p->poll.data = p;
  ac->ev.data = p;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  return true;
}

}  // namespace smtpgate
