#include "policy/policy.h"

namespace smtpgate {

const Listener* Policy::find_listener(std::string_view name) const {
  for (const Listener& l : listeners) {
    if (l.name == name) return &l;
  }
  return nullptr;
}

std::string_view to_string(TlsMode m) {
  switch (m) {
    case TlsMode::None:
      return "none";
    case TlsMode::StartTls:
      return "starttls";
    case TlsMode::Implicit:
      return "implicit";
  }
  return "?";
}

std::string_view to_string(ListenerClass c) {
  switch (c) {
    case ListenerClass::Mx:
      return "mx";
    case ListenerClass::Submission:
      return "submission";
    case ListenerClass::Auto:
      return "auto";
  }
  return "?";
}

}  // namespace smtpgate
