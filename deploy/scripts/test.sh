#!/usr/bin/env bash
# One command for every test: installs what is missing, builds twice (normal, and with
# AddressSanitizer + UBSan) and runs all unit and integration tests in both; then a
# ThreadSanitizer build for the tests of the gateway's threads, and the fuzz targets.
# Each step's time is printed after it ("-- N s").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
"$ROOT/deploy/scripts/install-deps.sh"

JOBS=$(nproc)
STEP_START=$SECONDS
step_done() { echo "-- $((SECONDS - STEP_START)) s"; STEP_START=$SECONDS; }

echo "== build (RelWithDebInfo, warnings are errors)"
"$ROOT/deploy/scripts/build.sh" "$ROOT/build" -DSMTPGATE_WERROR=ON
step_done
echo "== tests (normal build)"
ctest --test-dir "$ROOT/build" -j"$JOBS" --output-on-failure --timeout 300
step_done

echo "== build (AddressSanitizer + UBSan)"
# -O1, as the sanitizers' authors recommend: a fraction of -O2's compile time on this 2-core
# budget, and the reports keep their stacks.
"$ROOT/deploy/scripts/build.sh" "$ROOT/build-asan" -DSMTPGATE_WERROR=ON -DSMTPGATE_SANITIZE=ON \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g -DNDEBUG"
step_done
echo "== tests (sanitizer build: unit tests and the real binary under ASan+UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir "$ROOT/build-asan" -j"$JOBS" --output-on-failure --timeout 300
step_done

# ThreadSanitizer (it cannot share a build with ASan): the worker loops, the log writer's and
# the state journal's threads against each other (every integration test runs 2 workers on a
# 2-core machine: `workers` defaults to one per CPU). Only the gateway and the unit tests are built; the unit
# tests of those two threads run 10 times (each run takes well under a second, and races
# depend on timing), then the integration tests that drive them hardest, against the real
# binary (the harness fails a test whose gateway printed a sanitizer report).
echo "== build (ThreadSanitizer: smtpgate and unit_tests)"
cmake -S "$ROOT" -B "$ROOT/build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSMTPGATE_WERROR=ON \
  -DSMTPGATE_SANITIZER=thread "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g -DNDEBUG" >/dev/null
cmake --build "$ROOT/build-tsan" -j"$JOBS" --target smtpgate unit_tests
step_done
echo "== tests (ThreadSanitizer build: [state_journal] and [log_writer] unit tests, test_defences, test_hostile_client, test_stalls, test_workers, test_shared)"
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
for i in $(seq 10); do
  if ! timeout 300 "$ROOT/build-tsan/tests/unit_tests" "[state_journal],[log_writer]" \
      >"$ROOT/build-tsan/unit_tests.log" 2>&1; then
    cat "$ROOT/build-tsan/unit_tests.log"
    echo "ThreadSanitizer unit tests failed (run $i of 10)" >&2
    exit 1
  fi
done
ctest --test-dir "$ROOT/build-tsan" -j"$JOBS" --output-on-failure --timeout 300 --no-tests=error \
  -R '^integration: test_(defences|hostile_client|stalls|workers|shared)$'
unset TSAN_OPTIONS
step_done

# The fuzz targets for a bounded time (build-fuzz/, about a minute in all); a finding fails
# the run, with the input printed in hex. SMTPGATE_FUZZ_SECONDS=0 skips them.
FUZZ_SECONDS=${SMTPGATE_FUZZ_SECONDS:-20}
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  echo "== fuzz targets (libFuzzer + ASan + UBSan, ${FUZZ_SECONDS}s each)"
  "$ROOT/tests/fuzz/run_fuzz.sh" "$FUZZ_SECONDS"
  step_done
fi
echo "== all tests passed"
