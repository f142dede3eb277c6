#!/bin/sh
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ (a CMake build with
# -DSMTPGATE_FUZZ=ON, the binaries in build-fuzz/tests/fuzz/) and runs each for a
# bounded time; exits non-zero when a target finds an input that breaks its property (the
# input is saved in build-fuzz/ and printed in hex).
# Usage: tests/fuzz/run_fuzz.sh [seconds per target, default 60]
# Not part of ctest: the seeded replays in tests/unit check the same properties without clang.
set -eu

SECONDS_PER_TARGET=${1:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${FUZZ_OUT:-$ROOT/build-fuzz}
TARGETS="fuzz_body_filter fuzz_command fuzz_backend_reply fuzz_dialogue fuzz_proxy_header"

CXX=""
for c in clang++-14 clang++; do
  if command -v "$c" >/dev/null 2>&1; then CXX=$c; break; fi
done
if [ -z "$CXX" ]; then
  if command -v apt-get >/dev/null 2>&1 && apt-cache policy clang-14 | grep -q 'Candidate: [0-9]'; then
    echo "clang not found; installing clang-14" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get install -y clang-14 libclang-rt-14-dev >&2
    CXX=clang++-14
  else
    echo "clang++ is not available; skipping the fuzz run" >&2
    exit 0
  fi
fi

# The targets are CMake targets (tests/fuzz/CMakeLists.txt, SMTPGATE_FUZZ=ON): they link the
# project's libraries, compiled with coverage but without libFuzzer's main. Debug: -g -O1 with
# asserts on (the -O1 comes from tests/fuzz/CMakeLists.txt).
echo "== configuring $OUT" >&2
cmake -S "$ROOT" -B "$OUT" -DCMAKE_CXX_COMPILER="$CXX" -DSMTPGATE_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=Debug -DBUILD_TESTING=OFF >/dev/null
echo "== building $TARGETS" >&2
# shellcheck disable=SC2086
cmake --build "$OUT" --parallel "$(nproc 2>/dev/null || echo 2)" --target $TARGETS >&2

status=0
for target in $TARGETS; do
  mkdir -p "$OUT/corpus-$target"
  # New inputs go to the first corpus directory; the checked-in seeds are only read.
  extra=""
  [ -d "$HERE/seeds/$target" ] && extra="$HERE/seeds/$target"
  set --
  if [ -f "$HERE/$target.dict" ]; then set -- "-dict=$HERE/$target.dict"; fi
  echo "== running $target for ${SECONDS_PER_TARGET}s" >&2
  rm -f "$OUT/$target-crash-"* "$OUT/$target-leak-"* "$OUT/$target-timeout-"* "$OUT/$target-oom-"*
  # shellcheck disable=SC2086
  if ! (cd "$OUT" && "$OUT/tests/fuzz/$target" -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 \
          -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$OUT/$target-" \
          -print_final_stats=1 "$@" "corpus-$target" $extra); then
    echo "== $target FAILED; the input, saved in $OUT:" >&2
    for f in "$OUT/$target-"*; do
      [ -f "$f" ] || continue
      echo "$f:" >&2
      od -An -tx1 -v "$f" | head -64 >&2
    done
    status=1
  fi
done
exit $status
