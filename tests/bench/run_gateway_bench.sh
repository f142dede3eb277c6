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
#
# Worker loops (the policy's "workers" key; gateway-bench.json sets 1; "auto" = one per
# CPU):
#   GW_WORKERS="1 2"  one gateway per value, side by side in the same run (targets gw-w1, gw-w2,
#                     …, ports 2603, 2604, …; each a copy of the policy with "workers" set and
#                     its own log, GW_LOG with -wN before .log); a single value runs one
#                     gateway named gw-wN on 2603. After the harness's summary,
#                     workers_summary.py prints msg/s and CPU per message per value, paired.
#   GW_CPUS=LIST      start the gateway(s) under `taskset -c LIST` (e.g. 0)
#   LOAD_CPUS=LIST    run the harness itself, i.e. smtp-source, smtp-sink and the peers, under
#                     `taskset -c LIST` (e.g. 1); the gateways get GW_CPUS, or all CPUs if unset
#   e.g. NO_BUILD=1 BUILD=/work/build-wbench GW_WORKERS="1 2" tests/bench/run_gateway_bench.sh \
#          --reps 5 --cases "persist-1k conn-per-msg" --peers "" --no-idle --scale 3
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

out=${OUT:-/tmp/smtp-bench-gw-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

# gw_policy PORT LOG [WORKERS] NAME -> $out/NAME.json, a copy of the policy listening on PORT,
# logging to LOG, with "workers" set (added after "version" when the policy has no such key).
gw_policy() {
  local f=$out/$4.json
  sed -e "s#127.0.0.1:2603#127.0.0.1:$1#" -e "s#/tmp/smtpgate-bench.log#$2#" "$policy" >"$f"
  if [ -n "${3:-}" ]; then
    if grep -q '"workers"' "$f"; then
      sed -i -E "s#(\"workers\"[[:space:]]*:[[:space:]]*)(\"[^\"]*\"|[0-9]+)#\1$3#" "$f"
    else
      sed -i -E "s#^([[:space:]]*)(\"version\"[[:space:]]*:[[:space:]]*1,)#\1\2 \"workers\": $3,#" "$f"
    fi
    grep -Eq "\"workers\"[[:space:]]*:[[:space:]]*$3[,[:space:]]" "$f" ||
      { echo "could not set workers=$3 in $f" >&2; exit 1; }
  fi
  "$bin" check -c "$f" >&2
  echo "$f"
}

pin_gw=()
[ -n "${GW_CPUS:-}" ] && pin_gw=(taskset -c "$GW_CPUS")
pin_load=()
[ -n "${LOAD_CPUS:-}" ] && pin_load=(taskset -c "$LOAD_CPUS")
gw_args=()
gw_logs=()
if [ -n "${GW_WORKERS:-}" ]; then
  port=2603
  for n in $GW_WORKERS; do
    [[ $n =~ ^([1-9]|[1-5][0-9]|6[0-4]|auto)$ ]] || { echo "GW_WORKERS: $n is not 1..64 or auto" >&2; exit 2; }
    log=${gw_log%.log}-w$n.log
    pf=$(gw_policy "$port" "$log" "$( [ "$n" = auto ] && echo '"auto"' || echo "$n")" "gw-w$n")
    : >"$log"
    gw_logs+=("$log")
    gw_args+=(--extra-proxy "gw-w$n=127.0.0.1:$port" --extra-cmd "gw-w$n=${pin_gw[*]} $bin run -c $pf")
    echo "gw-w$n: 127.0.0.1:$port, policy $pf, log $log" >&2
    port=$((port + 1))
    [ "$port" -le 2612 ] || { echo "GW_WORKERS: at most 10 values" >&2; exit 2; }
  done
else
  # The policy names /tmp/smtpgate-bench.log; a different GW_LOG gets a rewritten copy.
  if [ "$gw_log" != /tmp/smtpgate-bench.log ]; then
    policy=$(gw_policy 2603 "$gw_log" "" gw)
  fi
  "$bin" check -c "$policy"
  : >"$gw_log"
  gw_logs+=("$gw_log")
  gw_args+=(--extra-proxy gw=127.0.0.1:2603 --extra-cmd "gw=${pin_gw[*]} $bin run -c $policy")
fi

echo "binary: $bin ($("$bin" --version 2>/dev/null || echo '?')), policy: $policy, log: ${gw_logs[*]}" >&2
echo "pinning: gateway ${GW_CPUS:-all CPUs}, harness/load ${LOAD_CPUS:-all CPUs}; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "results will be in $out (summary: $out/summary.md)" >&2
set +e
OUT=$out "${pin_load[@]}" "$harness" "${gw_args[@]}" "$@"
rc=$?
set -e
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for l in "${gw_logs[@]}"; do echo "gateway log: $l ($(wc -l <"$l") lines, $(grep -c '"error"' "$l") with \"error\")" >&2; done
if [ -n "${GW_WORKERS:-}" ] && [ -s "$out/runs.tsv" ]; then
  python3 "$root/tests/bench/workers_summary.py" "$out" | tee "$out/workers.md"
fi
echo "summary: $out/summary.md   per-run: $out/runs.tsv   idle: $out/idle.tsv" >&2
exit $rc
