#!/usr/bin/env bash
# One command for every test: installs what is missing, builds twice (normal, and with
# AddressSanitizer + UBSan) and runs all unit and integration tests in both.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
"$ROOT/deploy/scripts/install-deps.sh"

JOBS=$(nproc)
echo "== build (RelWithDebInfo, warnings are errors)"
"$ROOT/deploy/scripts/build.sh" "$ROOT/build" -DSMTPGATE_WERROR=ON
echo "== tests (normal build)"
ctest --test-dir "$ROOT/build" -j"$JOBS" --output-on-failure --timeout 300

echo "== build (AddressSanitizer + UBSan)"
"$ROOT/deploy/scripts/build.sh" "$ROOT/build-asan" -DSMTPGATE_WERROR=ON -DSMTPGATE_SANITIZE=ON
echo "== tests (sanitizer build: unit tests and the real binary under ASan+UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir "$ROOT/build-asan" -j"$JOBS" --output-on-failure --timeout 300

# The fuzz targets for a bounded time (build-fuzz/, about a minute in all); a finding fails
# the run, with the input printed in hex. SMTPGATE_FUZZ_SECONDS=0 skips them.
FUZZ_SECONDS=${SMTPGATE_FUZZ_SECONDS:-20}
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  echo "== fuzz targets (libFuzzer + ASan + UBSan, ${FUZZ_SECONDS}s each)"
  "$ROOT/tests/fuzz/run_fuzz.sh" "$FUZZ_SECONDS"
fi
echo "== all tests passed"
