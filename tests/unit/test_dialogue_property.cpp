// The dialogue fuzz target's properties on seeded random sessions (tests/fuzz/
// dialogue_property.h): no relay, DATA/body/dot only when earned, nothing after the close.
#include <catch2/catch.hpp>

#include <random>

#include "fuzz/dialogue_property.h"

TEST_CASE("dialogue: fuzz properties on seeded random sessions", "[dialogue][property]") {
  std::mt19937 rng(20261203);
  std::vector<uint8_t> bytes;
  for (int n = 0; n < 3000; ++n) {
    bytes.resize(rng() % 600);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    const std::string why = smtpgate::fuzz::check_dialogue_bytes(bytes.data(), bytes.size());
    if (!why.empty()) {
      std::string hex;
      for (uint8_t b : bytes) hex += "0123456789abcdef"[b >> 4], hex += "0123456789abcdef"[b & 15];
      FAIL_CHECK(why << " on input " << hex);
    }
  }
}
