// libFuzzer target: the body filter's property (canonical CRLF output, no end of data inside
// it, the same boundary as a plain CRLF.CRLF scanner, chunking changes nothing).
#include <cstdio>
#include <cstdlib>

#include "fuzz/body_filter_property.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string why = smtpgate::fuzz::check_body_filter_bytes(data, size);
  if (!why.empty()) {
    std::fprintf(stderr, "body filter property broken: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}
