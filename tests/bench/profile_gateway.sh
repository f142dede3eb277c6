#!/bin/bash
# Instruction-level profile of smtpgate under valgrind --tool=callgrind, for one bounded
# smtp-source load. Repeatable (instruction counts do not depend on machine noise), but it
# sees user space only: syscalls count as one instruction each, so pair it with the
# harness's CPU figures (run_gateway_bench.sh), where the kernel's socket work dominates.
#
#   tests/bench/profile_gateway.sh [persist|conn] [messages]
#     persist: smtp-source -s 5 -d -l 1024 -m N     (default N=2000; one session reused)
#     conn:    smtp-source -s 5 -l 1024 -m N        (default N=1000; one connection per message)
#
# Starts on 127.0.0.1 only, and stops by PID: smtp-sink on SINK_PORT (2546), the gateway
# under callgrind on GW_PORT (2623), using a copy of tests/bench/gateway-bench.json with
# those ports and a JSON log in the work directory. Collection starts after the gateway
# listens (policy load is excluded) and ends at the graceful stop (SIGTERM).
# Output: WORK/callgrind.out, WORK/inclusive.txt, WORK/exclusive.txt (callgrind_annotate).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BINARY:-$root/build-bench/smtpgate}
mode=${1:-persist}
case $mode in
  persist) m=${2:-2000}; args="-s 5 -d -l 1024" ;;
  conn)    m=${2:-1000}; args="-s 5 -l 1024" ;;
  *) echo "usage: $0 [persist|conn] [messages]" >&2; exit 2 ;;
esac
sink_port=${SINK_PORT:-2546}
gw_port=${GW_PORT:-2623}
work=${WORK:-$(mktemp -d /tmp/smtpgate-profile.XXXXXX)}
W=$work
mkdir -p "$work"
[ -x "$bin" ] || { echo "build first: no $bin" >&2; exit 1; }

# shellcheck source=tests/bench/lib.sh
. "$root/tests/bench/lib.sh"
require_free_ports "$sink_port" "$gw_port"

sed -e "s#127.0.0.1:2603#127.0.0.1:$gw_port#" -e "s#127.0.0.1:2526#127.0.0.1:$sink_port#" \
    -e "s#/tmp/smtpgate-bench.log#$work/gateway.log#" \
    "$root/tests/bench/gateway-bench.json" >"$work/policy.json"

smtp-sink -u nobody -m 512 "127.0.0.1:$sink_port" 256 >"$work/sink.log" 2>&1 &
pids+=($!)
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
  "$bin" run -c "$work/policy.json" >"$work/valgrind.log" 2>&1 &
gw=$!; pids+=($gw)
wait_port "$sink_port"; wait_port "$gw_port" 300  # valgrind starts slowly
callgrind_control -i on "$gw" >/dev/null

echo "load: smtp-source $args -m $m -> 127.0.0.1:$gw_port (under callgrind, slow)" >&2
start=$(date +%s.%N)
timeout -k 5 600 smtp-source $args -m "$m" -f bench@example.com -t sink@example.com \
  "127.0.0.1:$gw_port"
end=$(date +%s.%N)
echo "load done in $(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') s" >&2

kill -TERM "$gw"
for i in $(seq 100); do kill -0 "$gw" 2>/dev/null || break; sleep 0.1; done
kill -0 "$gw" 2>/dev/null && { echo "gateway did not stop in 10 s" >&2; exit 1; }

callgrind_annotate --inclusive=yes "$work/callgrind.out" >"$work/inclusive.txt" 2>/dev/null
callgrind_annotate "$work/callgrind.out" >"$work/exclusive.txt" 2>/dev/null
total=$(grep -m1 'PROGRAM TOTALS' "$work/exclusive.txt" | awk '{gsub(",","",$1); print $1}')
echo "total Ir: $total  =>  $(awk -v t="$total" -v m="$m" 'BEGIN{printf "%.0f", t/m}') instructions per message" >&2
echo "annotations: $work/inclusive.txt $work/exclusive.txt" >&2
