#!/bin/sh
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time.
# Usage: tests/fuzz/run_fuzz.sh [seconds per target, default 60]
# Not part of ctest: the seeded replays in tests/unit check the same properties without clang.
set -eu

SECONDS_PER_TARGET=${1:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${FUZZ_OUT:-$ROOT/build-fuzz}

CXX=""
for c in clang++-14 clang++; do
  if command -v "$c" >/dev/null 2>&1; then CXX=$c; break; fi
done
if [ -z "$CXX" ]; then
  if command -v apt-get >/dev/null 2>&1 && apt-cache policy clang-14 | grep -q 'Candidate: [0-9]'; then
    echo "clang not found; installing clang-14" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get install -y clang-14 >&2
    CXX=clang++-14
  else
    echo "clang++ is not available; skipping the fuzz run" >&2
    exit 0
  fi
fi

mkdir -p "$OUT"
FLAGS="-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I$ROOT -I$ROOT/tests"
SOURCES="$ROOT/proxy/smtp/line_reader.cpp $ROOT/proxy/smtp/command.cpp $ROOT/proxy/smtp/body_filter.cpp \
  $ROOT/policy/domain_set.cpp"

status=0
for target in fuzz_body_filter fuzz_command; do
  echo "== building $target" >&2
  # shellcheck disable=SC2086
  $CXX $FLAGS "$HERE/$target.cpp" $SOURCES -o "$OUT/$target"
  mkdir -p "$OUT/corpus-$target"
  echo "== running $target for ${SECONDS_PER_TARGET}s" >&2
  if ! (cd "$OUT" && "./$target" -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 \
          -print_final_stats=1 "corpus-$target"); then
    echo "== $target FAILED (crash input saved in $OUT)" >&2
    status=1
  fi
done
exit $status
