// libFuzzer target: the inbound PROXY protocol header parser on any bytes a connection may
// start with (every prefix NeedMore until the whole input's result, consumed within the bytes
// and kMaxProxyHeader, printable errors, agreement with a reference reading, headers that can
// be written again). The input is the connection's bytes as they are.
#include <cstdio>
#include <cstdlib>

#include "fuzz/proxy_header_property.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string why = smtpgate::fuzz::check_proxy_header_bytes(data, size);
  if (!why.empty()) {
    std::fprintf(stderr, "proxy header property broken: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}
