// A FIFO queue on a vector: no allocation until the first push (std::deque allocates a
// block up front, which idle sessions cannot afford), storage reused once drained.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace smtpgate {

template <class T>
class Fifo {
 public:
  bool empty() const { return head_ == items_.size(); }
  size_t size() const { return items_.size() - head_; }
  T& front() { return items_[head_]; }
  const T& front() const { return items_[head_]; }
  void push_back(T v) { items_.push_back(std::move(v)); }
  template <class... A>
  void emplace_back(A&&... a) {
    items_.emplace_back(std::forward<A>(a)...);
  }
  void pop_front() {
    ++head_;
    if (head_ == items_.size()) clear();
  }
  void clear() {
    items_.clear();
    head_ = 0;
  }

 private:
  std::vector<T> items_;
  size_t head_ = 0;
};

}  // namespace smtpgate
