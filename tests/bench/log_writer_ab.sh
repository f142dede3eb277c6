#!/bin/bash
# Logger cost, NEW vs OLD: the same persist-1k load on two gateways that differ only in how a
# log line reaches the file (NEW: queued for the writer thread, proxy/log_writer.cpp; OLD,
# commit 72d45e5: one write(2) per line on the event loop). Per message: CPU of every
# thread (ns, /proc/PID/task/*/schedstat) and context switches, per thread as well, so the
# writer thread's own share and its wake-ups are visible (the shared harness only sees
# utime+stime of the whole process in 10 ms ticks).
#
#   tests/bench/log_writer_ab.sh                 # 5 reps x 100,000 messages each, ~2 min
#   REPS=1 MSGS=20000 tests/bench/log_writer_ab.sh   # smoke, ~10 s
#
# Starts (127.0.0.1 only, all stopped by PID): smtp-sink -u nobody 127.0.0.1:$SINK_PORT 256,
# NEW on 127.0.0.1:$NEW_PORT and OLD on 127.0.0.1:$OLD_PORT, both with
# tests/bench/gateway-bench.json (ports and log path rewritten: JSON log to $W/new.log and
# $W/old.log on the same disk). Load: smtp-source -s 20 -d -l 1024 -m $MSGS (as the
# harness's persist-1k), NEW and OLD alternating, the order flipped every repetition.
# Environment (defaults): REPS (5), MSGS (100000), NEW_PORT (2753), OLD_PORT (2754),
# SINK_PORT (2752), BIN_NEW (<repo>/build-bench/smtpgate), BIN_OLD
# (/tmp/bench-old/build-bench/smtpgate), WORK (a new /tmp/smtpgate-logab.XXXXXX).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/bench
bin_new=${BIN_NEW:-$root/build-bench/smtpgate}
bin_old=${BIN_OLD:-/tmp/bench-old/build-bench/smtpgate}
reps=${REPS:-5}
msgs=${MSGS:-100000}
new_port=${NEW_PORT:-2753}
old_port=${OLD_PORT:-2754}
sink_port=${SINK_PORT:-2752}
W=${WORK:-$(mktemp -d /tmp/smtpgate-logab.XXXXXX)}
mkdir -p "$W"
[ -x "$bin_new" ] && [ -x "$bin_old" ] || { echo "need $bin_new and $bin_old (see ban_journal_bench.sh for the builds)" >&2; exit 1; }
[[ $reps =~ ^[0-9]+$ && $reps -ge 1 && $reps -le 20 ]] || { echo "REPS 1..20" >&2; exit 2; }
[[ $msgs =~ ^[0-9]+$ && $msgs -ge 1000 && $msgs -le 500000 ]] || { echo "MSGS 1000..500000" >&2; exit 2; }
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"
PORT_HINT="set NEW_PORT/OLD_PORT/SINK_PORT" require_free_ports "$new_port" "$old_port" "$sink_port"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

policy() {   # port name
  sed "s/127.0.0.1:2603/127.0.0.1:$1/; s/127.0.0.1:2526/127.0.0.1:$sink_port/; s#/tmp/smtpgate-bench.log#$W/$2.log#" \
    "$here/gateway-bench.json" >"$W/$2.json"
}
policy "$new_port" new
policy "$old_port" old
smtp-sink -u nobody "127.0.0.1:$sink_port" 256 >"$W/sink.log" 2>&1 &
pids+=($!)
"$bin_new" run -c "$W/new.json" >"$W/new.stderr" 2>&1 &
NEW=$!; pids+=("$NEW")
"$bin_old" run -c "$W/old.json" >"$W/old.stderr" 2>&1 &
OLD=$!; pids+=("$OLD")
wait_port "$sink_port"; wait_port "$new_port"; wait_port "$old_port"
sleep 0.3
echo "NEW $bin_new  OLD $bin_old  work $W  load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

threads() {   # pid -> one line per thread: tid cpu_ns voluntary involuntary
  local f
  for f in /proc/"$1"/task/*; do
    echo "${f##*/} $(cut -d' ' -f1 "$f/schedstat") $(awk '/^voluntary_ctxt_switches/{v=$2} /^nonvoluntary_ctxt_switches/{n=$2} END{print v, n}' "$f/status")"
  done
}
printf 'rep\twhich\tmsgs\twall_s\tcpu_us_per_msg\tmain_us_per_msg\tother_threads_us_per_msg\tmain_vol_cs_per_msg\tmain_invol_cs_per_msg\tother_vol_cs_per_msg\tload1\n' >"$W/runs.tsv"
one() {   # rep which pid port
  local before after t0 t1 rc=0
  before=$(threads "$3"); t0=$(date +%s.%N)
  timeout -k 5 120 smtp-source -s 20 -d -l 1024 -m "$msgs" -f bench@example.com -t sink@example.com \
    "127.0.0.1:$4" >/dev/null 2>"$W/source.err" || rc=$?
  t1=$(date +%s.%N); after=$(threads "$3")
  [ "$rc" = 0 ] && [ ! -s "$W/source.err" ] || { echo "  smtp-source FAILED rc=$rc: $(head -c 300 "$W/source.err")" >&2; exit 1; }
  # the main thread's tid is the pid; every other thread is the logger (no state_file here)
  awk -v rep="$1" -v w="$2" -v pid="$3" -v m="$msgs" -v wall="$(awk "BEGIN{print $t1 - $t0}")" \
      -v load="$(cut -d' ' -f1 /proc/loadavg)" '
    FNR == NR { c0[$1] = $2; v0[$1] = $3; n0[$1] = $4; next }
    { dc = $2 - c0[$1]; dv = $3 - v0[$1]; dn = $4 - n0[$1]
      if ($1 == pid) { mc = dc; mv = dv; mn = dn } else { oc += dc; ov += dv } }
    END { printf "%s\t%s\t%d\t%.3f\t%.2f\t%.2f\t%.2f\t%.3f\t%.3f\t%.3f\t%s\n", rep, w, m, wall,
          (mc + oc) / 1000 / m, mc / 1000 / m, oc / 1000 / m, mv / m, mn / m, ov / m, load }' \
    <(echo "$before") <(echo "$after") | tee -a "$W/runs.tsv" >&2
}
for rep in $(seq "$reps"); do
  if [ $((rep % 2)) = 1 ]; then one "$rep" new "$NEW" "$new_port"; one "$rep" old "$OLD" "$old_port"
  else one "$rep" old "$OLD" "$old_port"; one "$rep" new "$NEW" "$new_port"; fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); log lines new $(wc -l <"$W/new.log"), old $(wc -l <"$W/old.log")" >&2
/usr/bin/python3 - "$W/runs.tsv" <<'EOF'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows: by.setdefault(r["rep"], {})[r["which"]] = r
f = lambda r, k: float(r[k])
def mr(xs, fmt="%.1f"):
    return (fmt + " (" + fmt + "–" + fmt + ")") % (st.median(xs), min(xs), max(xs))
print()
print("| per message, medians of %d reps (min–max) | NEW | OLD |" % len(by))
print("|---|---:|---:|")
for k, name in (("cpu_us_per_msg", "gateway CPU µs, all threads"), ("main_us_per_msg", "event-loop thread CPU µs"),
                ("other_threads_us_per_msg", "log writer thread CPU µs"), ("main_vol_cs_per_msg", "event-loop thread voluntary switches"),
                ("main_invol_cs_per_msg", "event-loop thread involuntary switches"), ("other_vol_cs_per_msg", "writer thread wake-ups (voluntary switches)")):
    fmt = "%.1f" if "us" in k else "%.2f"
    print("| %s | %s | %s |" % (name, mr([f(r["new"], k) for r in by.values()], fmt), mr([f(r["old"], k) for r in by.values()], fmt)))
d = [f(r["new"], "cpu_us_per_msg") - f(r["old"], "cpu_us_per_msg") for r in by.values()]
q = [f(r["new"], "cpu_us_per_msg") / f(r["old"], "cpu_us_per_msg") for r in by.values()]
print("| NEW − OLD, paired per rep (µs) | %s | |" % ", ".join("%+.1f" % x for x in d))
print("| NEW ÷ OLD, paired per rep | %s | |" % ", ".join("%.2f" % x for x in q))
print("| msg/s | %s | %s |" % (mr([int(r["new"]["msgs"]) / f(r["new"], "wall_s") for r in by.values()], "%.0f"),
                               mr([int(r["old"]["msgs"]) / f(r["old"], "wall_s") for r in by.values()], "%.0f")))
EOF
echo "per-run table: $W/runs.tsv" >&2
