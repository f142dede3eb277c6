#include "policy/policy.h"

namespace smtpgate {

const Listener* Policy::find_listener(std::string_view name) const {
  for (const Listener& l : listeners) {
    if (l.name == name) return &l;
  }
  return nullptr;
}

}  // namespace smtpgate
