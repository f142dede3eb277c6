// Ownership of a loop object that frees itself once libuv has closed its handle (Connection,
// Timer): resetting or destroying the pointer closes it, and no event reaches the owner after
// that. The object itself is deleted later, in libuv's close callback.
#pragma once

#include <memory>

namespace smtpgate {

template <class T>
struct CloseOnRelease {
  void operator()(T* p) const { p->close(); }
};

template <class T>
using HandlePtr = std::unique_ptr<T, CloseOnRelease<T>>;

}  // namespace smtpgate
