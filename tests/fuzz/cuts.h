// Where the chunking properties split their input: after every byte, and at seeded
// pseudo-random points (xorshift32), so a failure replays from its seed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace smtpgate::fuzz {

inline std::vector<size_t> every_byte(size_t size) {
  std::vector<size_t> cuts;
  for (size_t i = 1; i < size; ++i) cuts.push_back(i);
  return cuts;
}

// Chunks of 1..max_chunk bytes.
inline std::vector<size_t> random_cuts(size_t size, uint32_t seed, uint32_t max_chunk) {
  std::vector<size_t> cuts;
  uint32_t x = seed | 1;
  for (size_t at = 0;;) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    at += 1 + x % max_chunk;
    if (at >= size) break;
    cuts.push_back(at);
  }
  return cuts;
}

}  // namespace smtpgate::fuzz
