#!/bin/bash
# Ban persistence: what banning N distinct addresses costs with a state file, for two
# binaries side by side (NEW: the append-only journal written by a thread; OLD: commit
# 72d45e5, which rewrote the whole state file on the event loop for every ban).
#
#   tests/bench/ban_journal_bench.sh          # 3 reps, 10,000 bans each (OLD: at most 120 s); ~7 min
#   REPS=1 N_NEW=2000 N_OLD=500 tests/bench/ban_journal_bench.sh     # smoke, ~20 s
#   OLD=0 tests/bench/ban_journal_bench.sh    # NEW only
#
# Build first (Release, as the other bench scripts):
#   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DSMTPGATE_WERROR=OFF && make -C build-bench -j2 smtpgate
#   git worktree add /tmp/bench-old 72d45e5 && cmake -S /tmp/bench-old -B /tmp/bench-old/build-bench \
#     -DCMAKE_BUILD_TYPE=Release -DSMTPGATE_WERROR=OFF && make -C /tmp/bench-old/build-bench -j2 smtpgate
#
# Starts (127.0.0.1 only, all stopped by PID):
#   smtp-sink -u nobody 127.0.0.1:$SINK_PORT 256      backend (no session here reaches it)
#   per run, a fresh gateway on a fresh state file: mx listener 127.0.0.1:$GW_PORT with
#       "mx": {"auth": "ban"}, brute_force {"state_file": "$W/<run>/bans.state", "ban": "1d"},
#       connections max_total 9000 / max_per_ip 20000, admin 127.0.0.1:$ADMIN_PORT,
#       JSON log to $W/<run>/gateway.log. $W must be on a real disk (not tmpfs): the default
#       /tmp is ext4 on /dev/vda on the bench VM; the script prints the file system.
#   tests/bench/ban_journal_bench.py --probe   one session from 127.0.0.1 (never banned):
#       EHLO, then NOOP every 10 ms (MAIL + RSET every 90th time, untimed: the junk-command
#       limit); reply time p50/p99/max
#   tests/bench/ban_journal_bench.py           the bans: connection i from 127.1.x.y (its
#       own address), EHLO, AUTH PLAIN, read 502 + close; $CONC in flight; latency = AUTH
#       sent -> close seen; per 1,000 bans: bans/s, latency p50/p99, gateway CPU per ban
# Runs alternate OLD/NEW within a repetition and the order flips every repetition.
# After each run: GET /bans must list all N bans; the gateway is stopped (TERM) and started
# again on the same state file, and GET /bans must list N again (the file holds them all);
# the state file's size is taken after the run and after the restart (NEW rewrites the
# journal compacted at start).
# Gateway CPU per ban = utime+stime from /proc/PID/stat (all threads) over the ban phase.
# Environment (defaults): REPS (3), N_NEW (10000), N_OLD (10000), OLD_TIME_LIMIT (120 s: the
# OLD run stops opening connections then; its bans cost more the more it holds), CONC (8), OLD (1; 0 = NEW only), GW_PORT (2741),
# ADMIN_PORT (2742), SINK_PORT (2743), BIN_NEW (<repo>/build-bench/smtpgate), BIN_OLD
# (/tmp/bench-old/build-bench/smtpgate), WORK (a new /tmp/smtpgate-banjournal.XXXXXX).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/bench
py=/usr/bin/python3
bin_new=${BIN_NEW:-$root/build-bench/smtpgate}
bin_old=${BIN_OLD:-/tmp/bench-old/build-bench/smtpgate}
use_old=${OLD:-1}
reps=${REPS:-3}
n_new=${N_NEW:-10000}
n_old=${N_OLD:-10000}
old_limit=${OLD_TIME_LIMIT:-120}
conc=${CONC:-8}
gw_port=${GW_PORT:-2741}
admin_port=${ADMIN_PORT:-2742}
sink_port=${SINK_PORT:-2743}
W=${WORK:-$(mktemp -d /tmp/smtpgate-banjournal.XXXXXX)}
mkdir -p "$W"
[ -x "$bin_new" ] || { echo "no binary at $bin_new (build first, see the top of this file)" >&2; exit 1; }
[ "$use_old" = 0 ] || [ -x "$bin_old" ] || { echo "no binary at $bin_old (OLD=0 to skip)" >&2; exit 1; }
[[ $reps =~ ^[0-9]+$ && $reps -ge 1 && $reps -le 10 ]] || { echo "REPS 1..10" >&2; exit 2; }
[[ $n_new =~ ^[0-9]+$ && $n_new -ge 1000 && $n_new -le 60000 ]] || { echo "N_NEW 1000..60000" >&2; exit 2; }
[[ $n_old =~ ^[0-9]+$ && $n_old -ge 100 && $n_old -le 60000 ]] || { echo "N_OLD 100..60000" >&2; exit 2; }
[[ $old_limit =~ ^[0-9]+$ && $old_limit -le 600 ]] || { echo "OLD_TIME_LIMIT <= 600" >&2; exit 2; }
[[ $conc =~ ^[0-9]+$ && $conc -ge 1 && $conc -le 256 ]] || { echo "CONC 1..256" >&2; exit 2; }
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"
PORT_HINT="set GW_PORT/ADMIN_PORT/SINK_PORT" require_free_ports "$gw_port" "$admin_port" "$sink_port"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)
FAILED=0
fs=$(findmnt -n -o FSTYPE,SOURCE -T "$W" | tr -s ' ')
case $fs in tmpfs*|ramfs*) echo "WARNING: $W is on $fs: fdatasync costs nothing there" >&2 ;; esac

calc() { awk "BEGIN{printf \"$1\", $2}"; }
jget() { $py -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"; }
bans_count() {   # GET /bans -> number of bans, or "ERR"
  $py - "$admin_port" <<'EOF' 2>/dev/null || echo ERR
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=20)
c.request("GET", "/bans")
r = c.getresponse()
body = r.read()
print(len(json.loads(body)["bans"]) if r.status == 200 else "ERR")
EOF
}

smtp-sink -u nobody "127.0.0.1:$sink_port" 256 >"$W/sink.log" 2>&1 &
sink=$!; pids+=("$sink")
wait_port "$sink_port"

start_gw() {   # bin dir -> GW (pid)
  "$1" run -c "$2/policy.json" >>"$2/gateway.stderr" 2>&1 &
  GW=$!; pids+=("$GW")
  wait_port "$gw_port" && wait_port "$admin_port" || { FAILED=$((FAILED + 1)); return 1; }
}
stop_gw() { stop_pid "$GW"; forget_pid "$GW"; }

echo "NEW: $bin_new ($(sha1sum <"$bin_new" | cut -c1-12))" >&2
[ "$use_old" = 0 ] || echo "OLD: $bin_old ($(sha1sum <"$bin_old" | cut -c1-12))" >&2
echo "work: $W on $fs   load before: $(cut -d' ' -f1-3 /proc/loadavg)   $(nproc) cpus" >&2

printf 'rep\twhich\tn\tok\ttime_limit_hit\twall_s\tbans_s\tlat_p50_ms\tlat_p99_ms\tlat_max_ms\tgw_cpu_s\tgw_cpu_us_per_ban\tcli_cpu_s\tprobe_n\tprobe_p50_ms\tprobe_p99_ms\tprobe_max_ms\tprobe_over5\tbans_listed\tbans_after_restart\tstate_bytes\tstate_bytes_restart\tlog_bytes\tload1\n' >"$W/runs.tsv"

run() {   # rep which(new|old)
  local rep=$1 which=$2 bin n limit d tag c0 c1 listed after sb sb2 lb gcpu
  if [ "$which" = new ]; then bin=$bin_new; n=$n_new; limit=300; else bin=$bin_old; n=$n_old; limit=$old_limit; fi
  tag=r$rep-$which; d=$W/$tag; mkdir -p "$d"
  local bucket=$((n < 1000 ? n : 1000))
  cat >"$d/policy.json" <<EOF
// generated by tests/bench/ban_journal_bench.sh
{
  "version": 1,
  "hostname": "smtpgate-banjournal.localhost",
  "local_domains": ["example.com"],
  "listeners": [ { "name": "mx", "listen": "127.0.0.1:$gw_port", "class": "mx" } ],
  "backend": { "address": "127.0.0.1:$sink_port" },
  "mx": { "auth": "ban" },
  "brute_force": { "state_file": "$d/bans.state", "ban": "1d" },
  "connections": { "max_total": 9000, "max_per_ip": 20000 },
  "admin": { "listen": "127.0.0.1:$admin_port" },
  "log": { "format": "json", "path": "$d/gateway.log" }
}
EOF
  "$bin" check -c "$d/policy.json" >/dev/null
  start_gw "$bin" "$d" || return 0
  sleep 0.3
  rm -f "$d/pstop" "$d/pready"
  timeout -k 5 $((limit + 60)) $py "$here/ban_journal_bench.py" --probe --port "$gw_port" \
    --interval 0.01 --time-limit $((limit + 30)) --stop-file "$d/pstop" --ready-file "$d/pready" \
    >"$d/probe.json" 2>"$d/probe.err" &
  local probe=$!; pids+=("$probe")
  for _ in $(seq 100); do [ -e "$d/pready" ] && break; sleep 0.1; done
  sleep 0.2
  c0=$(ticks "$GW")
  # in the background + wait: a TERM to this script then stops at once (bash runs traps
  # only between foreground commands)
  timeout -k 5 $((limit + 40)) $py "$here/ban_journal_bench.py" --port "$gw_port" --total "$n" \
    --concurrency "$conc" --bucket "$bucket" --time-limit "$limit" --gw-pid "$GW" \
    >"$d/bans.json" 2>"$d/bans.err" &
  local drv=$!; pids+=("$drv")
  wait "$drv" || true; forget_pid "$drv"
  c1=$(ticks "$GW")
  touch "$d/pstop"; wait "$probe" || true; forget_pid "$probe"
  listed=$(bans_count)
  sleep 0.5   # NEW: the journal thread may still be compacting
  sb=$(stat -c %s "$d/bans.state" 2>/dev/null || echo 0)
  lb=$(stat -c %s "$d/gateway.log" 2>/dev/null || echo 0)
  stop_gw
  start_gw "$bin" "$d" || return 0
  after=$(bans_count)
  sleep 0.5
  sb2=$(stat -c %s "$d/bans.state" 2>/dev/null || echo 0)
  stop_gw
  [ -s "$d/bans.json" ] || { echo "  $tag: driver produced nothing: $(head -c 300 "$d/bans.err")" >&2; FAILED=$((FAILED + 1)); return 0; }
  local ok; ok=$(jget "$d/bans.json" ok)
  gcpu=$(calc %.3f "($c1 - $c0) / $CLK_TCK")
  if [ "$listed" != "$ok" ] || [ "$after" != "$ok" ]; then
    echo "  $tag: FAILED: $ok bans made, GET /bans lists $listed, after restart $after" >&2
    FAILED=$((FAILED + 1))
  fi
  if [ "$(jget "$d/bans.json" started)" != "$ok" ]; then
    echo "  $tag: FAILED: not every connection got 502 + close: $(jget "$d/bans.json" replies) $(jget "$d/bans.json" errors)" >&2
    FAILED=$((FAILED + 1))
  fi
  grep -q '"errors": {}' "$d/probe.json" || { echo "  $tag: probe FAILED: $(cat "$d/probe.json")" >&2; FAILED=$((FAILED + 1)); }
  [ ! -s "$d/gateway.stderr" ] || echo "  $tag: gateway stderr: $(head -c 300 "$d/gateway.stderr")" >&2
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$rep" "$which" "$n" "$ok" "$(jget "$d/bans.json" time_limit_hit)" "$(jget "$d/bans.json" wall_s)" \
    "$(jget "$d/bans.json" bans_s)" "$(jget "$d/bans.json" lat_ms.p50)" "$(jget "$d/bans.json" lat_ms.p99)" \
    "$(jget "$d/bans.json" lat_ms.max)" "$gcpu" "$(calc %.1f "($c1 - $c0) / $CLK_TCK / ($ok > 0 ? $ok : 1) * 1e6")" \
    "$(jget "$d/bans.json" client_cpu_s)" "$(jget "$d/probe.json" probe)" "$(jget "$d/probe.json" rtt_ms.p50)" \
    "$(jget "$d/probe.json" rtt_ms.p99)" "$(jget "$d/probe.json" rtt_ms.max)" "$(jget "$d/probe.json" over_5ms)" \
    "$listed" "$after" "$sb" "$sb2" "$lb" "$(cut -d' ' -f1 /proc/loadavg)" >>"$W/runs.tsv"
  printf '  r%s %-3s %5s bans in %6ss = %7s/s | lat p50 %s p99 %s max %s ms | gw cpu %ss | probe p99 %s max %s ms | listed %s, after restart %s | state %s B (%s B after restart) | load %s\n' \
    "$rep" "$which" "$ok" "$(jget "$d/bans.json" wall_s)" "$(jget "$d/bans.json" bans_s)" \
    "$(jget "$d/bans.json" lat_ms.p50)" "$(jget "$d/bans.json" lat_ms.p99)" "$(jget "$d/bans.json" lat_ms.max)" \
    "$gcpu" "$(jget "$d/probe.json" rtt_ms.p99)" "$(jget "$d/probe.json" rtt_ms.max)" "$listed" "$after" \
    "$sb" "$sb2" "$(cut -d' ' -f1 /proc/loadavg)" >&2
  sleep 1
}

for rep in $(seq "$reps"); do
  if [ "$use_old" = 0 ]; then run "$rep" new
  elif [ $((rep % 2)) = 1 ]; then run "$rep" old; run "$rep" new
  else run "$rep" new; run "$rep" old; fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# ---------------------------------------------------------------- summary (medians, ranges)
$py - "$W" <<'EOF'
import csv, glob, json, os, statistics as st, sys
W = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(W, "runs.tsv")), delimiter="\t"))
def med_rng(xs, fmt="%.1f"):
    xs = [float(x) for x in xs if x not in ("", "None", None)]
    if not xs: return "–"
    return (fmt + " (" + fmt + "–" + fmt + ")") % (st.median(xs), min(xs), max(xs))
print()
print("## ban_journal_bench summary: medians over reps (min–max)")
print()
whiches = [w for w in ("old", "new") if any(r["which"] == w for r in rows)]
print("| figure | " + " | ".join(w.upper() for w in whiches) + " |")
print("|---|" + "---:|" * len(whiches))
R = {w: [r for r in rows if r["which"] == w] for w in whiches}
def line(name, key, fmt="%.1f"):
    print("| %s | %s |" % (name, " | ".join(med_rng([r[key] for r in R[w]], fmt) for w in whiches)))
line("bans made (N)", "ok", "%.0f")
line("wall s", "wall_s", "%.2f")
line("bans/s, whole run", "bans_s", "%.0f")
line("ban latency p50 ms (AUTH sent → close)", "lat_p50_ms", "%.2f")
line("ban latency p99 ms", "lat_p99_ms", "%.2f")
line("ban latency max ms", "lat_max_ms", "%.1f")
line("gateway CPU µs per ban (/proc/PID/stat, all threads)", "gw_cpu_us_per_ban", "%.0f")
line("driver CPU s", "cli_cpu_s", "%.2f")
line("NOOP probes sent (one each 10 ms + reply time)", "probe_n", "%.0f")
line("NOOP probe p50 ms", "probe_p50_ms", "%.2f")
line("NOOP probe p99 ms", "probe_p99_ms", "%.2f")
line("NOOP probe max ms", "probe_max_ms", "%.1f")
line("NOOP replies > 5 ms", "probe_over5", "%.0f")
line("GET /bans after the run", "bans_listed", "%.0f")
line("GET /bans after a restart", "bans_after_restart", "%.0f")
line("state file bytes after the run", "state_bytes", "%.0f")
line("state file bytes after the restart", "state_bytes_restart", "%.0f")
print("| log bytes per ban | %s |" % " | ".join(
    med_rng([float(r["log_bytes"]) / max(1, float(r["ok"])) for r in R[w]], "%.0f") for w in whiches))
print("| load average (1 min) at the end of each run | %s |" % " | ".join(
    ", ".join(r["load1"] for r in R[w]) for w in whiches))
for w in whiches:
    per = {}
    for r in R[w]:
        d = json.load(open(os.path.join(W, "r%s-%s" % (r["rep"], w), "bans.json")))
        for b in d["buckets"]:
            per.setdefault(b["to"], []).append(b)
    print()
    print("%s, per 1,000 bans (the bucket) in completion order (medians over reps, min–max):" % w.upper())
    print()
    print("| bans | bans/s | latency p50 ms | latency p99 ms | latency max ms | gateway CPU µs/ban |")
    print("|---|---:|---:|---:|---:|---:|")
    for to in sorted(per):
        bs = per[to]
        print("| %d–%d (%d reps) | %s | %s | %s | %s | %s |" % (
            bs[0]["from"] + 1, to, len(bs),
            med_rng([b["bans_s"] for b in bs], "%.0f"),
            med_rng([b["lat_ms"]["p50"] for b in bs], "%.2f"),
            med_rng([b["lat_ms"]["p99"] for b in bs], "%.2f"),
            med_rng([b["lat_ms"]["max"] for b in bs], "%.1f"),
            med_rng([b.get("gw_cpu_us_per_ban") for b in bs], "%.0f")))
EOF
echo "per-run table: $W/runs.tsv; per run: $W/r*-*/{bans,probe}.json" >&2
[ "$FAILED" = 0 ] || { echo "$FAILED check(s) FAILED" >&2; exit 1; }
