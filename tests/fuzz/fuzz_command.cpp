// libFuzzer target: line reader + command parser on any client stream (views stay inside the
// line, control characters refused, chunking changes nothing).
#include <cstdio>
#include <cstdlib>

#include "fuzz/command_property.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string why = smtpgate::fuzz::check_command_bytes(data, size);
  if (!why.empty()) {
    std::fprintf(stderr, "command property broken: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}
