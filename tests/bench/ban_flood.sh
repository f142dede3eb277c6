#!/bin/bash
# Ban flood: what a connection flood from banned addresses costs the gateway, and what it
# does to a legitimate sender on the same gateway.
#
#   tests/bench/ban_flood.sh            # defaults below, ~2 min (STRACE=1: +20 s)
#   REPS=1 FLOOD_TOTAL=5000 tests/bench/ban_flood.sh      # smoke
#
# Starts (127.0.0.1 only, all stopped by PID at exit):
#   smtp-sink -u nobody 127.0.0.1:$SINK_PORT 256                    backend
#   smtpgate run -c $W/policy.json   mx listener 127.0.0.1:$GW_PORT,
#       brute_force.state_file pre-seeded with bans for 127.0.0.50..53 (the flood sources)
#       plus $EXTRA_BANS bans in 10.77.0.0/16, connections.max_per_ip 20000
#   tests/bench/ban_flood.py   the flood: $FLOOD_TOTAL connections round-robin from the 4
#       banned sources, $FLOOD_CONC in flight, each reads 554 + EOF and closes
#   smtp-source -s 5 -d -l 1024 -m $LEGIT_MSGS -f bench@example.com -t sink@example.com
#       the legitimate sender, from 127.0.0.1
#
# Each repetition has these phases (legit and mixed alternate in order between reps):
#   legit   the legitimate sender alone
#   mixed   the flood, and 0.5 s after it started the legitimate sender (same size); the
#           flood goes on until the legitimate sender is done (capped at $MIXED_MAX
#           connections and 100 s), so the sender is flooded from its first to its last message
#   flood   the flood alone: exactly $FLOOD_TOTAL connections; next to it one legitimate
#           session from 127.0.0.1 sends a NOOP every 5 ms (ban_flood.py --probe) and
#           records the reply time: how long the event loop keeps legitimate sessions waiting
#   hold    as flood, but the probe first opens $HOLD idle legitimate sessions (220 + EHLO)
#           and keeps them open during the flood (HOLD=0 skips this phase): the cost of a
#           refusal as a function of the number of open sessions
# STRACE=1 adds one more flood-alone phase under `strace -c -f -p GATEWAY` (syscalls per
# refusal; strace slows the gateway, so that phase is left out of the figures).
# Measured per phase: wall time, gateway CPU (utime+stime from /proc/PID/stat, deltas),
# gateway VmRSS and open fds afterwards, log bytes written.
# Environment (defaults): REPS (5), HOLD (2000), FLOOD_TOTAL (20000), FLOOD_CONC (300),
# LEGIT_MSGS (3000), MIXED_MAX (100000), EXTRA_BANS (1000), GW_PORT (2711), SINK_PORT (2712),
# BIN (<repo>/build-bench2/smtpgate), WORK (a new /tmp/smtpgate-banflood.XXXXXX),
# KEEP_LOG=1 keeps the gateway's JSON log (otherwise truncated after each phase's count).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/bench
bin=${BIN:-$root/build-bench2/smtpgate}
reps=${REPS:-5}
flood_total=${FLOOD_TOTAL:-20000}
flood_conc=${FLOOD_CONC:-300}
legit_msgs=${LEGIT_MSGS:-3000}
mixed_max=${MIXED_MAX:-100000}
hold=${HOLD:-2000}
extra_bans=${EXTRA_BANS:-1000}
gw_port=${GW_PORT:-2711}
sink_port=${SINK_PORT:-2712}
sources=127.0.0.50,127.0.0.51,127.0.0.52,127.0.0.53
W=${WORK:-$(mktemp -d /tmp/smtpgate-banflood.XXXXXX)}
mkdir -p "$W"
[ -x "$bin" ] || { echo "no binary at $bin (build first, see README.md)" >&2; exit 1; }
[[ $reps =~ ^[0-9]+$ && $reps -ge 1 && $reps -le 10 ]] || { echo "REPS 1..10" >&2; exit 2; }
[[ $flood_total =~ ^[0-9]+$ && $flood_total -le 100000 ]] || { echo "FLOOD_TOTAL <= 100000" >&2; exit 2; }
[[ $legit_msgs =~ ^[0-9]+$ && $legit_msgs -le 50000 ]] || { echo "LEGIT_MSGS <= 50000" >&2; exit 2; }
for p in $gw_port $sink_port; do
  if ss -Hltn "sport = :$p" | grep -q .; then echo "port $p busy; set GW_PORT/SINK_PORT" >&2; exit 1; fi
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)
FAILED=0

pids=()
stop_pid() {   # TERM, wait up to 5 s, then KILL; only PIDs this script started
  local p=$1 i
  kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
forget_pid() {   # a reaped PID must not be signalled later (it may be reused)
  local p keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
cleanup() {
  local rc=$? p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  echo "stopped: ${pids[*]:-none}; work dir: $W" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() {
  local i
  for i in $(seq 100); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  echo "port $1 did not open" >&2; return 1
}
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12+$13}'; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
nfds() { ls "/proc/$1/fd" | wc -l; }
now() { date +%s.%N; }
calc() { awk "BEGIN{printf \"$1\", $2}"; }

# ---------------------------------------------------------------- policy + ban state
python3 - "$W/bans.json" "$extra_bans" "$sources" <<'EOF'
import json, sys, time
path, extra, sources = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
now = int(time.time())
bans = [{"ip": ip, "since": now, "until": now + 3600, "offense": 1, "reason": "seed"}
        for ip in sources]
bans += [{"ip": "10.77.%d.%d" % (i // 250, i % 250 + 1), "since": now, "until": now + 3600,
          "offense": 1, "reason": "seed"} for i in range(extra)]
json.dump({"version": 1, "bans": bans, "history": []}, open(path, "w"))
EOF
cat >"$W/policy.json" <<EOF
// generated by tests/bench/ban_flood.sh
{
  "version": 1,
  "hostname": "smtpgate-banflood.localhost",
  "local_domains": ["example.com"],
  "listeners": [ { "name": "mx", "listen": "127.0.0.1:$gw_port", "class": "mx" } ],
  "backend": { "address": "127.0.0.1:$sink_port" },
  "brute_force": { "state_file": "$W/bans.json" },
  "connections": { "max_total": 9000, "max_per_ip": 20000 },
  "message": { "received_header": true },
  "log": { "format": "json", "path": "$W/gateway.log" }
}
EOF
"$bin" check -c "$W/policy.json"

# ---------------------------------------------------------------- start
smtp-sink -u nobody "127.0.0.1:$sink_port" 256 >"$W/sink.log" 2>&1 &
sink=$!; pids+=("$sink")
"$bin" run -c "$W/policy.json" >"$W/gateway.stderr" 2>&1 &
gw=$!; pids+=("$gw")
wait_port "$sink_port"; wait_port "$gw_port"
sleep 0.3

echo "binary: $bin   work: $W   ulimit -n: $(ulimit -n)" >&2
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)   $(nproc) cpus" >&2

# smoke: a banned source gets 554 and EOF, the legitimate sender delivers
smoke=$(timeout 20 python3 "$here/ban_flood.py" --port "$gw_port" --total 4 --concurrency 4 --time-limit 10) ||
  { echo "smoke FAILED: banned connection did not get 554 + close: $smoke" >&2; exit 1; }
timeout 20 smtp-source -d -m 2 -l 100 -f bench@example.com -t sink@example.com "127.0.0.1:$gw_port" ||
  { echo "smoke FAILED: legitimate sender" >&2; exit 1; }
grep -q '"rule":"ban"' "$W/gateway.log" || { echo "smoke: no ban decision in the log" >&2; exit 1; }
echo "smoke OK" >&2
echo "gateway start: VmRSS $(rss_kb "$gw") kB, fds $(nfds "$gw")" >&2

# the probe alone on the idle gateway: the reference for the probe figures under flood
timeout 20 python3 "$here/ban_flood.py" --probe --port "$gw_port" --time-limit 2 >"$W/probe-idle.json" ||
  { echo "idle probe FAILED: $(cat "$W/probe-idle.json")" >&2; exit 1; }
echo "probe on the idle gateway: $(cat "$W/probe-idle.json")" >&2

printf 'rep\tphase\tlegit_msgs\tlegit_wall_s\tlegit_msg_s\tlegit_ok\tflood_ok\tflood_wall_s\trefusals_s\tflood_lat_p50_ms\tflood_lat_p99_ms\tflood_cli_cpu_s\tgw_cpu_s\tgw_rss_kb\tgw_fds\tlog_bytes\toverlap\theld\tprobe_p50_ms\tprobe_p99_ms\tprobe_max_ms\n' >"$W/runs.tsv"

legit_run() {   # sets L_WALL L_OK; args: output-prefix
  local t0 t1 rc
  t0=$(now)
  set +e
  timeout -k 5 120 smtp-source -s 5 -d -l 1024 -m "$legit_msgs" \
    -f bench@example.com -t sink@example.com "127.0.0.1:$gw_port" >/dev/null 2>"$W/$1.legit.err"
  rc=$?
  set -e
  t1=$(now)
  L_WALL=$(calc %.3f "$t1 - $t0"); L_T0=$t0; L_T1=$t1
  L_OK=1; { [ "$rc" -ne 0 ] || grep -q . "$W/$1.legit.err"; } && L_OK=0
  [ "$L_OK" = 1 ] || FAILED=$((FAILED + 1))
  [ "$L_OK" = 1 ] || echo "  legit sender FAILED rc=$rc: $(head -c 300 "$W/$1.legit.err")" >&2
  return 0
}
flood_start() {   # tag [stop-file]: runs the flood in the background, JSON to $W/$1.flood.json
  local total=$flood_total extra=()
  if [ -n "${2:-}" ]; then total=$mixed_max; extra=(--stop-file "$2"); fi
  timeout -k 5 150 python3 "$here/ban_flood.py" --port "$gw_port" --sources "$sources" \
    --total "$total" --concurrency "$flood_conc" --time-limit 100 "${extra[@]}" \
    >"$W/$1.flood.json" 2>"$W/$1.flood.err" &
  FLOOD_PID=$!; pids+=("$FLOOD_PID")
}
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }

probe_start() {   # tag idle-sessions: the NOOP probe in the background until $W/pstop exists
  local fd0 i
  rm -f "$W/pstop"; fd0=$(nfds "$gw")
  timeout -k 5 150 python3 "$here/ban_flood.py" --probe --hold "$2" --port "$gw_port" \
    --time-limit 120 --stop-file "$W/pstop" >"$W/$1.probe.json" 2>"$W/$1.probe.err" &
  PROBE_PID=$!; pids+=("$PROBE_PID")
  for i in $(seq 600); do   # until the idle sessions and the probe session are up (max 60 s)
    [ "$(nfds "$gw")" -ge $((fd0 + $2 + 1)) ] && break; sleep 0.1
  done
  sleep 0.3
}
probe_stop() {
  touch "$W/pstop"; wait "$PROBE_PID" || true; forget_pid "$PROBE_PID"
}

phase() {   # rep name
  local rep=$1 ph=$2 tag="r$1-$2" c0 c1 lb0 lb1 lw=NA lms=NA lok=NA fok=NA fw=NA frate=NA
  local fp50=NA fp99=NA fcpu=NA overlap=NA held=0 pp50=NA pp99=NA pmax=NA
  case $ph in
    flood) probe_start "$tag" 0 ;;
    hold) probe_start "$tag" "$hold" ;;
  esac
  c0=$(ticks "$gw"); lb0=$(stat -c %s "$W/gateway.log")
  case $ph in
    legit) legit_run "$tag"; lw=$L_WALL; lok=$L_OK ;;
    flood|hold) flood_start "$tag"; wait "$FLOOD_PID" || true; forget_pid "$FLOOD_PID" ;;
    mixed)
      rm -f "$W/stop"
      flood_start "$tag" "$W/stop"; sleep 0.5
      legit_run "$tag"; lw=$L_WALL; lok=$L_OK
      touch "$W/stop"
      wait "$FLOOD_PID" || true; forget_pid "$FLOOD_PID" ;;
  esac
  c1=$(ticks "$gw"); lb1=$(stat -c %s "$W/gateway.log")
  local rss fds; rss=$(rss_kb "$gw"); fds=$(nfds "$gw")
  if [ "$ph" = flood ] || [ "$ph" = hold ]; then
    probe_stop
    if [ -s "$W/$tag.probe.json" ]; then
      held=$(jget "$W/$tag.probe.json" held); pp50=$(jget "$W/$tag.probe.json" rtt_ms.p50)
      pp99=$(jget "$W/$tag.probe.json" rtt_ms.p99); pmax=$(jget "$W/$tag.probe.json" rtt_ms.max)
      grep -q '"errors": {}' "$W/$tag.probe.json" ||
        { echo "  probe FAILED: $(cat "$W/$tag.probe.json")" >&2; FAILED=$((FAILED + 1)); }
    else
      echo "  probe produced no result: $(head -c 300 "$W/$tag.probe.err")" >&2; FAILED=$((FAILED + 1))
    fi
  else
    lms=$(calc %.0f "$legit_msgs / $lw")
  fi
  if [ "$ph" != legit ]; then
    [ -s "$W/$tag.flood.json" ] || { echo "  flood produced no result: $(head -c 300 "$W/$tag.flood.err")" >&2; return 1; }
    local fstarted; fstarted=$(jget "$W/$tag.flood.json" started)
    fok=$(jget "$W/$tag.flood.json" ok); fw=$(jget "$W/$tag.flood.json" wall_s)
    frate=$(jget "$W/$tag.flood.json" rate_per_s); fcpu=$(jget "$W/$tag.flood.json" client_cpu_s)
    fp50=$(jget "$W/$tag.flood.json" lat_ms.p50); fp99=$(jget "$W/$tag.flood.json" lat_ms.p99)
    if [ "$fok" != "$fstarted" ] || { [ "$ph" != mixed ] && [ "$fok" != "$flood_total" ]; }; then
      echo "  flood: only $fok of $fstarted got 554+close: $(cat "$W/$tag.flood.json")" >&2
      FAILED=$((FAILED + 1))
    fi
  fi
  if [ "$ph" = mixed ]; then   # did the flood outlast the legitimate sender?
    local fe; fe=$(jget "$W/$tag.flood.json" t_end)
    overlap=$(awk -v fe="$fe" -v l1="$L_T1" -v l0="$L_T0" \
      'BEGIN{o=(fe<l1?fe:l1)-l0; if(o<0)o=0; printf "%.2f", o/(l1-l0)}')
  fi
  local gcpu; gcpu=$(calc %.2f "($c1 - $c0) / $CLK_TCK")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$ph" \
    "$([ "$lms" = NA ] && echo 0 || echo "$legit_msgs")" "$lw" "$lms" "$lok" "$fok" "$fw" \
    "$frate" "$fp50" "$fp99" "$fcpu" "$gcpu" "$rss" "$fds" \
    "$((lb1 - lb0))" "$overlap" "$held" "$pp50" "$pp99" "$pmax" >>"$W/runs.tsv"
  printf '  r%s %-5s legit %5s msg/s (%ss) | flood %6s refusals/s (%s ok, %ss, p99 %s ms) | probe p99 %s max %s ms (%s idle) | gw cpu %ss rss %s kB fds %s | overlap %s load %s\n' \
    "$rep" "$ph" "$lms" "$lw" "$frate" "$fok" "$fw" "$fp99" "$pp99" "$pmax" "$held" "$gcpu" \
    "$rss" "$fds" "$overlap" "$(cut -d' ' -f1 /proc/loadavg)" >&2
  [ "${KEEP_LOG:-0}" = 1 ] || : >"$W/gateway.log"
  sleep 1
}

for rep in $(seq "$reps"); do
  if [ $((rep % 2)) = 1 ]; then phase "$rep" legit; phase "$rep" mixed
  else phase "$rep" mixed; phase "$rep" legit; fi
  phase "$rep" flood
  [ "$hold" = 0 ] || phase "$rep" hold
done
if [ "${STRACE:-0}" = 1 ]; then
  strace -c -f -o "$W/strace.txt" -p "$gw" 2>"$W/strace.err" &
  st=$!; pids+=("$st"); sleep 1
  timeout -k 5 150 python3 "$here/ban_flood.py" --port "$gw_port" --sources "$sources" \
    --total "$flood_total" --concurrency "$flood_conc" --time-limit 100 >"$W/strace.flood.json" || true
  kill -INT "$st"; wait "$st" || true; forget_pid "$st"
  echo "strace -c over $flood_total refusals ($W/strace.txt), calls per refusal:" >&2
  awk -v n="$flood_total" '$1 ~ /^[0-9.]+$/ && NF>=5 {c=$4; name=$NF; printf "  %-16s %6.2f\n", name, c/n}' \
    "$W/strace.txt" | sort -k2 -nr | head -14 >&2
  : >"$W/gateway.log"
fi
kill -0 "$gw" || { echo "gateway died" >&2; exit 1; }
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "gateway end: VmRSS $(rss_kb "$gw") kB, fds $(nfds "$gw"), stderr: $(wc -c <"$W/gateway.stderr") bytes" >&2

# ---------------------------------------------------------------- summary (medians)
python3 - "$W/runs.tsv" "$legit_msgs" "$flood_total" "$W/probe-idle.json" "$hold" <<'EOF'
import csv, json, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
legit_msgs, flood_total, hold = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
idle = json.load(open(sys.argv[4]))["rtt_ms"]
def f(r, k):
    try: return float(r[k])
    except (ValueError, KeyError): return None
def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else float("nan")
by = {}
for r in rows: by.setdefault(r["rep"], {})[r["phase"]] = r
ratios, per_ref, per_ref_mixed, per_msg = [], [], [], []
for rep, ph in sorted(by.items()):
    L, M, F = ph.get("legit"), ph.get("mixed"), ph.get("flood")
    if L and M: ratios.append(f(M, "legit_msg_s") / f(L, "legit_msg_s"))
    if F: per_ref.append(f(F, "gw_cpu_s") / max(1, f(F, "flood_ok")) * 1e6)
    if L: per_msg.append(f(L, "gw_cpu_s") / legit_msgs * 1e6)
    if L and M: per_ref_mixed.append((f(M, "gw_cpu_s") - f(L, "gw_cpu_s")) / max(1, f(M, "flood_ok")) * 1e6)
P = lambda name: [r for r in rows if r["phase"] == name]
print()
print("## ban_flood summary (medians over %d reps; ratio = paired per rep)" % len(by))
print()
print("| figure | value |")
print("|---|---:|")
print("| legit msg/s alone | %.0f |" % med(f(r, "legit_msg_s") for r in P("legit")))
print("| legit msg/s during flood | %.0f |" % med(f(r, "legit_msg_s") for r in P("mixed")))
print("| ratio flood/alone (paired) | %.2f (%s) |" % (med(ratios), ", ".join("%.2f" % x for x in ratios)))
print("| refusals/s, flood alone | %.0f |" % med(f(r, "refusals_s") for r in P("flood")))
print("| refusals/s, flood + legit (flood size: median %.0f connections) | %.0f |" % (med(f(r, "flood_ok") for r in P("mixed")), med(f(r, "refusals_s") for r in P("mixed"))))
print("| gateway CPU µs/refusal (flood alone) | %.1f |" % med(per_ref))
print("| gateway CPU µs/refusal (mixed − legit) | %.1f |" % med(per_ref_mixed))
print("| gateway CPU s, flood alone (%d refusals) | %.2f |" % (flood_total, med(f(r, "gw_cpu_s") for r in P("flood"))))
print("| gateway CPU s, mixed | %.2f |" % med(f(r, "gw_cpu_s") for r in P("mixed")))
print("| gateway CPU µs/msg, legit alone | %.1f |" % med(per_msg))
print("| flood client CPU µs/connection | %.1f |" % med(f(r, "flood_cli_cpu_s") / max(1, f(r, "flood_ok")) * 1e6 for r in P("flood")))
print("| refusal latency p50 / p99 ms (flood alone) | %.2f / %.2f |" % (med(f(r, "flood_lat_p50_ms") for r in P("flood")), med(f(r, "flood_lat_p99_ms") for r in P("flood"))))
print("| probe NOOP reply ms p50 / p99 / max, idle gateway | %s / %s / %s |" % (idle["p50"], idle["p99"], idle["max"]))
print("| probe NOOP reply ms p50 / p99 / max, during flood | %.2f / %.1f / %.1f |" % tuple(med(f(r, k) for r in P("flood")) for k in ("probe_p50_ms", "probe_p99_ms", "probe_max_ms")))
if P("hold"):
    hr = [f(r, "gw_cpu_s") / max(1, f(r, "flood_ok")) * 1e6 for r in P("hold")]
    pair = []
    for ph in by.values():
        if "hold" in ph and "flood" in ph:
            pair.append((f(ph["hold"], "gw_cpu_s") / f(ph["hold"], "flood_ok")) / (f(ph["flood"], "gw_cpu_s") / f(ph["flood"], "flood_ok")))
    print("| gateway CPU µs/refusal with %d idle sessions open | %.1f (×%.2f paired: %s) |" % (hold, med(hr), med(pair), ", ".join("%.2f" % x for x in pair)))
    print("| refusals/s with %d idle sessions open | %.0f |" % (hold, med(f(r, "refusals_s") for r in P("hold"))))
    print("| probe NOOP reply ms p50 / p99 / max, flood + %d idle | %.2f / %.1f / %.1f |" % ((hold,) + tuple(med(f(r, k) for r in P("hold")) for k in ("probe_p50_ms", "probe_p99_ms", "probe_max_ms"))))
print("| log bytes per refusal | %.0f |" % med(f(r, "log_bytes") / max(1, f(r, "flood_ok")) for r in P("flood")))
print("| flood overlapped legit run (fraction, min) | %s |" % min((r["overlap"] for r in P("mixed")), default="NA"))
bad = [r for r in rows if r["legit_ok"] == "0" or (r["phase"] in ("flood", "hold") and r["flood_ok"] != str(flood_total))]
print("| failed phases | %d |" % len(bad))
EOF
echo "per-phase table: $W/runs.tsv" >&2
[ "$FAILED" = 0 ] || { echo "$FAILED phase(s) FAILED" >&2; exit 1; }
