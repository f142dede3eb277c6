#!/bin/bash
# Builds smtpgate in Release (its own build directory, build-bench) and runs the shared SMTP
# proxy harness (/work/shared/bench/run.sh) with the gateway as an extra target next to
# direct / haproxy / nginx, so every figure is compared within one run.
#
#   tests/bench/run_gateway_bench.sh [harness options]
#   e.g. tests/bench/run_gateway_bench.sh --reps 3
#        tests/bench/run_gateway_bench.sh --reps 1 --scale 0.1 --idle-conns 200   # ~3 min smoke
#        tests/bench/run_gateway_bench.sh --reps 3 --cases "persist-1k conn-per-msg" --no-idle
#
# All options are passed through to run.sh (see run.sh --help). The harness starts the
# gateway itself (foreground, PID saved, restarted for each idle measurement, killed at exit).
# Everything listens on 127.0.0.1 only: gateway :2603 -> smtp-sink :2526 (tests/bench/gateway-bench.json).
# Environment: HARNESS (default /work/shared/bench/run.sh), BUILD (default <repo>/build-bench),
# GW_LOG (the gateway's JSON log, default /tmp/smtpgate-bench.log; truncated at start),
# NO_BUILD=1 to skip the build step.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD:-$root/build-bench}
harness=${HARNESS:-/work/shared/bench/run.sh}
policy=$root/tests/bench/gateway-bench.json
gw_log=${GW_LOG:-/tmp/smtpgate-bench.log}

if [ "${NO_BUILD:-0}" != 1 ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSMTPGATE_WERROR=OFF >/dev/null
  make -C "$build" -j2 smtpgate >/dev/null
fi
bin=$build/smtpgate
[ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }

# The policy names /tmp/smtpgate-bench.log; a different GW_LOG gets a rewritten copy.
if [ "$gw_log" != /tmp/smtpgate-bench.log ]; then
  tmp_policy=$(mktemp /tmp/gateway-bench.XXXXXX.json)
  sed "s#/tmp/smtpgate-bench.log#$gw_log#" "$policy" >"$tmp_policy"
  policy=$tmp_policy
fi
"$bin" check -c "$policy"
: >"$gw_log"

out=${OUT:-/tmp/smtp-bench-gw-$(date +%Y%m%d-%H%M%S)}
echo "binary: $bin ($("$bin" --version 2>/dev/null || echo '?')), policy: $policy, log: $gw_log" >&2
echo "results will be in $out (summary: $out/summary.md)" >&2
set +e
OUT=$out "$harness" --extra-proxy gw=127.0.0.1:2603 \
  --extra-cmd gw="$bin run -c $policy" "$@"
rc=$?
set -e
echo "gateway log: $gw_log ($(wc -l <"$gw_log") lines)" >&2
echo "summary: $out/summary.md   per-run: $out/runs.tsv   idle: $out/idle.tsv" >&2
exit $rc
