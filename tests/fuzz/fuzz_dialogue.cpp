// libFuzzer target: the SMTP dialogue driven by any sequence of client commands, backend
// replies and failures (no open relay, DATA and the body only when earned, nothing sent
// after the close, no password in a report).
#include <cstdio>
#include <cstdlib>

#include "fuzz/dialogue_property.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string why = smtpgate::fuzz::check_dialogue_bytes(data, size);
  if (!why.empty()) {
    std::fprintf(stderr, "dialogue property broken: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}
