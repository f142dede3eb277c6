// libFuzzer target: the backend reply path on any backend stream (replies well-formed,
// bounded and printable, as a reference reading finds them, chunking changes nothing; a reply
// is taken only for a command written before it arrived, only if it fits, in order).
// Build with -DSMTPGATE_FUZZ_CLIENT_AS_IS to model the earlier, reordering BackendClient::send
// (the property must catch it).
#include <cstdio>
#include <cstdlib>

#include "fuzz/backend_reply_property.h"

#ifdef SMTPGATE_FUZZ_CLIENT_AS_IS
static constexpr bool kClientAsIs = true;
#else
static constexpr bool kClientAsIs = false;
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string why = smtpgate::fuzz::check_backend_reply_bytes(data, size, kClientAsIs);
  if (!why.empty()) {
    std::fprintf(stderr, "backend reply property broken: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}
