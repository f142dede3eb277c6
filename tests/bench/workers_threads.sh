#!/bin/bash
# Where a gateway with N worker loops spends its CPU, per thread: one bounded smtp-source load
# (the harness's persist-1k or conn-per-msg) on one gateway, with per-thread CPU (ns,
# /proc/PID/task/*/schedstat) and context switches per message; optionally the same load
# under `strace -c -f` (syscalls per message, futex among them: the shared-state, metrics and
# post() mutexes only reach the kernel when contended) or `perf record -g` (cpu-clock; this
# VM has no hardware counters).
#
#   tests/bench/workers_threads.sh                          # workers 2, persist, 60,000 msgs
#   WORKERS=1 CASE=conn MSGS=15000 tests/bench/workers_threads.sh
#   TOOL=strace WORKERS=2 tests/bench/workers_threads.sh    # + strace -c -f (slows it ~3x)
#   TOOL=perf WORKERS=2 tests/bench/workers_threads.sh      # + perf record -g, report in WORK
#   TOOL=perfstat WORKERS=2 tests/bench/workers_threads.sh  # + perf stat: syscalls (tracepoints)
#                                                           #   and context switches per message
#   GW_CPUS=0 LOAD_CPUS=1 tests/bench/workers_threads.sh    # pinned with taskset
#
# Starts (127.0.0.1 only, all stopped by PID): smtp-sink -u nobody 127.0.0.1:$SINK_PORT 4096,
# the gateway on 127.0.0.1:$GW_PORT with tests/bench/gateway-bench.json (port, backend,
# "workers" and log path rewritten; log in WORK). Environment (defaults): BIN
# (<repo>/build-bench/smtpgate), WORKERS (2), CASE (persist | conn), MSGS (60000 persist,
# 15000 conn), TOOL (none | strace | perf | perfstat), GW_CPUS / LOAD_CPUS (taskset lists, unset = all),
# SINK_PORT (2762), GW_PORT (2763), WORK (a new /tmp/smtpgate-wthreads.XXXXXX).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/bench
bin=${BIN:-$root/build-bench/smtpgate}
workers=${WORKERS:-2}
case_=${CASE:-persist}
tool=${TOOL:-none}
sink_port=${SINK_PORT:-2762}
gw_port=${GW_PORT:-2763}
case $case_ in
  persist) msgs=${MSGS:-60000}; args="-s 20 -d -l 1024" ;;
  conn) msgs=${MSGS:-15000}; args="-s 20 -l 1024" ;;
  *) echo "CASE persist or conn" >&2; exit 2 ;;
esac
[[ $workers =~ ^[0-9]+$ && $workers -ge 1 && $workers -le 64 ]] || { echo "WORKERS 1..64" >&2; exit 2; }
[[ $msgs =~ ^[0-9]+$ && $msgs -ge 100 && $msgs -le 500000 ]] || { echo "MSGS 100..500000" >&2; exit 2; }
[[ $tool =~ ^(none|strace|perf|perfstat)$ ]] || { echo "TOOL none, strace, perf or perfstat" >&2; exit 2; }
[ -x "$bin" ] || { echo "no binary at $bin (BIN=...)" >&2; exit 1; }
W=${WORK:-$(mktemp -d /tmp/smtpgate-wthreads.XXXXXX)}
mkdir -p "$W"
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"
PORT_HINT="set SINK_PORT/GW_PORT" require_free_ports "$sink_port" "$gw_port"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
pin_gw=(); [ -n "${GW_CPUS:-}" ] && pin_gw=(taskset -c "$GW_CPUS")
pin_load=(); [ -n "${LOAD_CPUS:-}" ] && pin_load=(taskset -c "$LOAD_CPUS")

sed -E -e "s/127.0.0.1:2603/127.0.0.1:$gw_port/; s/127.0.0.1:2526/127.0.0.1:$sink_port/" \
  -e "s#/tmp/smtpgate-bench.log#$W/gw.log#" \
  -e "s#^([[:space:]]*)(\"version\"[[:space:]]*:[[:space:]]*1,)#\\1\\2 \"workers\": $workers,#" \
  "$here/gateway-bench.json" >"$W/gw.json"
grep -q "\"workers\": $workers," "$W/gw.json" || { echo "could not set workers in $W/gw.json" >&2; exit 1; }
"$bin" check -c "$W/gw.json" >/dev/null
"${pin_load[@]}" smtp-sink -u nobody -m 20000 "127.0.0.1:$sink_port" 4096 >"$W/sink.log" 2>&1 &
SINK=$!; pids+=("$SINK")
"${pin_gw[@]}" "$bin" run -c "$W/gw.json" >"$W/gw.stderr" 2>&1 &
GW=$!; pids+=("$GW")
wait_port "$sink_port"; wait_port "$gw_port"
sleep 0.3
# warm-up, not counted ($args is a word list on purpose)
# shellcheck disable=SC2086
timeout -k 5 60 "${pin_load[@]}" smtp-source $args -m 500 -f bench@example.com -t sink@example.com \
  "127.0.0.1:$gw_port" >/dev/null
sleep 0.3
echo "gateway $bin workers=$workers pid $GW, case $case_ ($args -m $msgs), tool $tool, pinning gw=${GW_CPUS:-all} load=${LOAD_CPUS:-all}; work $W; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

threads() {   # pid -> per thread: tid comm cpu_ns voluntary involuntary
  local f
  for f in /proc/"$1"/task/*; do
    echo "${f##*/} $(tr ' ' _ <"$f/comm") $(cut -d' ' -f1 "$f/schedstat") $(awk '/^voluntary_ctxt_switches/{v=$2} /^nonvoluntary_ctxt_switches/{n=$2} END{print v, n}' "$f/status")"
  done
}

TOOLPID=
case $tool in
  strace) strace -c -f -q -p "$GW" -o "$W/strace.txt" & TOOLPID=$!; pids+=("$TOOLPID"); sleep 1 ;;
  perf) perf record -q -g -e cpu-clock -p "$GW" -o "$W/perf.data" 2>"$W/perf.err" & TOOLPID=$!; pids+=("$TOOLPID"); sleep 1 ;;
  perfstat)
    ev=context-switches,cpu-migrations
    for sc in epoll_wait epoll_ctl futex read write sendto accept4 dup close ioctl; do ev+=",syscalls:sys_enter_$sc"; done
    perf stat -x, -e "$ev" -p "$GW" -o "$W/perfstat.csv" 2>"$W/perf.err" & TOOLPID=$!; pids+=("$TOOLPID"); sleep 1 ;;
esac

before=$(threads "$GW"); s0=$(ticks "$SINK"); t0=$(date +%s.%N); rc=0
# shellcheck disable=SC2086
/usr/bin/time -f '%U %S' -o "$W/client.time" timeout -k 5 180 "${pin_load[@]}" smtp-source $args -m "$msgs" \
  -f bench@example.com -t sink@example.com "127.0.0.1:$gw_port" >/dev/null 2>"$W/source.err" || rc=$?
t1=$(date +%s.%N); after=$(threads "$GW"); s1=$(ticks "$SINK")
[ "$rc" = 0 ] && [ ! -s "$W/source.err" ] || echo "smtp-source FAILED rc=$rc: $(head -c 300 "$W/source.err")" >&2

if [ -n "$TOOLPID" ]; then
  kill -INT "$TOOLPID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$TOOLPID" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$TOOLPID"; forget_pid "$TOOLPID"
fi

wall=$(awk "BEGIN{print $t1 - $t0}")
read -r cu cs <"$W/client.time"
echo "msgs $msgs  wall ${wall}s  $(awk -v m="$msgs" -v w="$wall" 'BEGIN{printf "%.0f", m/w}') msg/s  load after: $(cut -d' ' -f1 /proc/loadavg)"
awk -v m="$msgs" -v hz="$(getconf CLK_TCK)" -v cu="$cu" -v cs="$cs" -v s="$((s1 - s0))" \
  'BEGIN{printf "client smtp-source %.1f µs/msg, smtp-sink %.1f µs/msg\n", (cu+cs)*1e6/m, s*1e6/hz/m}'
printf '%-8s %-16s %10s %12s %12s\n' tid thread 'µs/msg' 'vol cs/msg' 'invol cs/msg'
awk -v m="$msgs" '
  FNR == NR { c0[$1] = $3; v0[$1] = $4; n0[$1] = $5; next }
  { dc = $3 - c0[$1]; dv = $4 - v0[$1]; dn = $5 - n0[$1]; tc += dc
    printf "%-8s %-16s %10.2f %12.3f %12.3f\n", $1, $2, dc / 1000 / m, dv / m, dn / m }
  END { printf "%-8s %-16s %10.2f\n", "all", "", tc / 1000 / m }' <(echo "$before") <(echo "$after")

case $tool in
  strace)
    echo "strace -c -f (all threads), calls per message:"
    awk -v m="$msgs" '$0 ~ /^[ 0-9.]+[0-9]/ && NF >= 5 { name = $NF; calls = (NF == 6 ? $4 : $4);
      printf "  %-16s %8.3f  (%s calls, %s errors)\n", name, calls / m, calls, (NF == 6 ? $5 : 0) }' \
      "$W/strace.txt" | sort -k2 -nr | head -15
    echo "(full table: $W/strace.txt)" ;;
  perf)
    perf report -i "$W/perf.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null \
      | grep -v '^$' | grep -E '^ +[0-9.]+%' | head -40 >"$W/perf.top" || true
    perf report -i "$W/perf.data" --no-children --sort sym --stdio -g caller,0.5,callee --symbol-filter=futex 2>/dev/null \
      | head -80 >"$W/perf.futex" || true
    echo "perf top symbols ($W/perf.top):"; head -30 "$W/perf.top"
    echo "futex call chains: $W/perf.futex" ;;
  perfstat)
    echo "perf stat (all threads; from attach to after the load, i.e. a little idle time too), per message:"
    awk -F, -v m="$msgs" '$1 ~ /^[0-9]+$/ { e = $3; sub(/^syscalls:sys_enter_/, "", e); printf "  %-18s %8.3f\n", e, $1 / m }' "$W/perfstat.csv" ;;
esac
