#!/bin/bash
# The login defences through the real binary: gateway CPU per AUTH with
# brute_force.per_login + distinct_passwords (+ submission.breaker) on vs off, and the
# gateway's memory after 1,000,000 distinct (login, address) failures.
#
#   tests/bench/auth_defence_bench.sh [BIN]      # 5 reps x 200,000 AUTH on each of A/B/C,
#                                                # callgrind, memory run; 4-5 min
#   MEM=0 CALLGRIND=0 tests/bench/auth_defence_bench.sh   # CPU runs only, ~2.5 min
#   REPS=1 AUTHS=20000 CG_AUTHS=1000 MEM_AUTHS=40000 tests/bench/auth_defence_bench.sh   # smoke, ~20 s
#
# BIN defaults to <repo>/build-bench/smtpgate (Release, as the other bench scripts):
#   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DSMTPGATE_WERROR=OFF && make -C build-bench -j2 smtpgate
#
# Starts (127.0.0.1 only, all stopped by PID):
#   tests/bench/auth_backend.py 127.0.0.1:$BACKEND_PORT   backend: EHLO with AUTH PLAIN, AUTH
#       answered at once (235 if the password is "right:" + the login, else 535), XSTATS
#   per repetition, one fresh gateway per variant, all running at once, each with one
#       submission listener (127.0.0.1:$GW_PORT, +1, +2 in that rep's order; require_tls
#       false, access default allow), "workers" $GW_WORKERS (1: the default "auto" is 2 loops
#       on this VM; pinned so the figures stay comparable with those before the worker
#       loops), backend.client_ip "none", connections max_total 9000 /
#       max_per_ip 20000, JSON log to $W/r<rep>-<variant>/gateway.log (/dev/null in the
#       memory run). Variants (thresholds far above the load: nobody is banned, locked or
#       suspended):
#     A  brute_force {max_failures 1000000, window 10m, distinct_passwords false}
#     B  A with distinct_passwords true + per_login {max_failures 1000000, window 1h,
#        lock 1h, known_good 30d}
#     C  B + submission.breaker {max_ips_per_hour, max_rcpt_domains_per_hour,
#        max_rejected_rcpts_per_hour: 1000000 each}
#   tests/bench/auth_load.py   the load, the same for every gateway and interleaved across
#       them (connection i to gateway i % 3): $AUTHS AUTH exchanges per gateway, $PER_CONN per
#       connection, $CONC connections in flight in all; a gateway's connection k from the
#       127.2.x.y address k % $ADDRESSES, attempt g for login g % $LOGINS with a wrong
#       password, the last one of every $SUCCESS_EVERY-th connection right (235), of the
#       others a repeat of the first (see auth_load.py). With the defaults, per gateway:
#       40,000 connections, 160,000 fresh failures, 20,000 repeated ones, 20,000 successes.
# Side by side because the machine is shared (2 noisy vCPUs, other jobs' compilers): run one
# after the other, a gateway's CPU per AUTH moved by +-2 us with the load around it (the
# busier the machine, the more events per wakeup), as much as the effect measured.
# The order of the variants (which port, who gets connection 0) rotates every rep.
# Measured per gateway: CPU = utime+stime (/proc/PID/stat, all threads; and the sum of
# /proc/PID/task/*/schedstat in ns as a cross-check) from just before the first connection
# to 0.3 s after the last one closed, divided by its AUTH exchanges; VmRSS after start and at
# the end. Checked: every AUTH got the reply its password deserves, every AUTH reached the
# backend (XSTATS), and no gateway log has a ban, would_ban, login_lock, suspend or error
# line or an AUTH refused by the gateway.
# callgrind (CALLGRIND=1, if valgrind is installed): the same load, $CG_AUTHS AUTH per gateway,
# on the variants side by side under valgrind --tool=callgrind (counting from the first
# connection to the exit): user-space instructions per AUTH, whole gateway and the defences'
# functions (inclusive). Repeatable to the instruction, where the CPU figures move by
# +-1 us; user space only (a syscall counts as one instruction), and valgrind hides SHA-NI
# from OpenSSL, so its SHA-256 runs the generic code there (more instructions than natively).
# Memory run (MEM=1): one fresh gateway per variant in $MEM_VARIANTS, side by side, each
# takes $MEM_AUTHS failures, each for its own login, $MEM_PER_CONN per connection, each
# connection from its own address (127.3.0.1 up): 1,000,000 logins, 250,000 addresses and
# 1,000,000 distinct keyed passwords, all past the bounds (per_login 100,000 logins,
# distinct_passwords 200,000 keys, failures of 200,000 addresses). VmRSS every $MEM_BUCKET
# AUTHs (all gateways together) and at the end.
# Then, if it exists, $LOGIN_BENCH 1000000 (the in-process figure, bench_login_defence.cpp).
# Environment (defaults): BIN (or $1), REPS (5), AUTHS (200000), PER_CONN (5), ADDRESSES
# (20000), LOGINS (10000), SUCCESS_EVERY (2), CONC (48), GW_WORKERS (1), VARIANTS ("A B C"), CALLGRIND (1),
# CG_AUTHS (10000), MEM (1), MEM_AUTHS (1000000), MEM_PER_CONN (4), MEM_VARIANTS ("A C"),
# MEM_BUCKET (100000), GW_PORT (2751; the gateways take GW_PORT..GW_PORT+2), BACKEND_PORT (2755), LOGIN_BENCH
# (<repo>/build/tests/bench_login_defence), WORK (a new /tmp/smtpgate-authbench.XXXXXX),
# KEEP_LOG=1 keeps the gateways' logs (otherwise removed once checked).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/bench
py=/usr/bin/python3
bin=${1:-${BIN:-$root/build-bench/smtpgate}}
reps=${REPS:-5}
auths=${AUTHS:-200000}
per_conn=${PER_CONN:-5}
addresses=${ADDRESSES:-20000}
logins=${LOGINS:-10000}
success_every=${SUCCESS_EVERY:-2}
conc=${CONC:-48}
read -r -a variants <<<"${VARIANTS:-A B C}"
cg=${CALLGRIND:-1}
cg_auths=${CG_AUTHS:-10000}
mem=${MEM:-1}
mem_auths=${MEM_AUTHS:-1000000}
mem_per_conn=${MEM_PER_CONN:-4}
read -r -a mem_variants <<<"${MEM_VARIANTS:-A C}"
mem_bucket=${MEM_BUCKET:-100000}
gw_port=${GW_PORT:-2751}
backend_port=${BACKEND_PORT:-2755}
login_bench=${LOGIN_BENCH:-$root/build/tests/bench_login_defence}
keep_log=${KEEP_LOG:-0}
gw_workers=${GW_WORKERS:-1}   # pinned: the default "auto" is 2 loops here; 1 keeps the figures comparable
W=${WORK:-$(mktemp -d /tmp/smtpgate-authbench.XXXXXX)}
mkdir -p "$W"
[ -x "$bin" ] || { echo "no binary at $bin (build first, see the top of this file)" >&2; exit 1; }
[[ $reps =~ ^[0-9]+$ && $reps -ge 1 && $reps -le 20 ]] || { echo "REPS 1..20" >&2; exit 2; }
[[ $auths =~ ^[0-9]+$ && $auths -ge 1000 && $auths -le 1000000 ]] || { echo "AUTHS 1000..1000000" >&2; exit 2; }
[[ $mem_auths =~ ^[0-9]+$ && $mem_auths -ge 1000 && $mem_auths -le 2000000 ]] || { echo "MEM_AUTHS 1000..2000000" >&2; exit 2; }
[[ $addresses =~ ^[0-9]+$ && $addresses -ge 1 && $addresses -le 62500 ]] || { echo "ADDRESSES 1..62500" >&2; exit 2; }
[[ $cg_auths =~ ^[0-9]+$ && $cg_auths -ge 100 && $cg_auths -le 50000 ]] || { echo "CG_AUTHS 100..50000" >&2; exit 2; }
[[ $conc =~ ^[0-9]+$ && $conc -ge 1 && $conc -le 512 ]] || { echo "CONC 1..512" >&2; exit 2; }
[[ $gw_workers =~ ^([1-8]|\"auto\")$ ]] || { echo "GW_WORKERS 1..8 or \"auto\" (with the quotes)" >&2; exit 2; }
for v in "${variants[@]}" "${mem_variants[@]}"; do
  case $v in A|B|C) ;; *) echo "variants are A, B, C" >&2; exit 2 ;; esac
done
[ ${#variants[@]} -ge 1 ] && [ ${#variants[@]} -le 3 ] && [ ${#mem_variants[@]} -le 3 ] || { echo "1..3 variants" >&2; exit 2; }
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"
PORT_HINT="set GW_PORT/BACKEND_PORT" require_free_ports "$gw_port" $((gw_port + 1)) $((gw_port + 2)) "$backend_port"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)
FAILED=0

echo "binary: $bin ($(sha1sum <"$bin" | cut -c1-12)); $(file -b "$bin" | grep -o 'with debug_info' || echo 'no debug info')" >&2
echo "work: $W   load before: $(cut -d' ' -f1-3 /proc/loadavg)   $(nproc) cpus" >&2
echo "$0 $*  (BIN=$bin REPS=$reps AUTHS=$auths PER_CONN=$per_conn ADDRESSES=$addresses LOGINS=$logins SUCCESS_EVERY=$success_every CONC=$conc GW_WORKERS=$gw_workers VARIANTS=\"${variants[*]}\" CALLGRIND=$cg CG_AUTHS=$cg_auths MEM=$mem MEM_AUTHS=$mem_auths MEM_PER_CONN=$mem_per_conn MEM_VARIANTS=\"${mem_variants[*]}\")" >"$W/command.txt"

$py "$here/auth_backend.py" --port "$backend_port" >"$W/backend.log" 2>&1 &
backend=$!; pids+=("$backend")
wait_port "$backend_port"

write_policy() {   # variant dir log_path port
  local v=$1 d=$2 log=$3 port=$4 bf sub
  bf='"max_failures": 1000000, "window": "10m", "ban": "1h", "distinct_passwords": false'
  sub='"require_tls": false, "access": { "default": "allow" }'
  if [ "$v" != A ]; then
    bf='"max_failures": 1000000, "window": "10m", "ban": "1h", "distinct_passwords": true,
    "per_login": { "max_failures": 1000000, "window": "1h", "lock": "1h", "known_good": "30d" }'
  fi
  if [ "$v" = C ]; then
    sub="$sub,
    \"breaker\": { \"max_ips_per_hour\": 1000000, \"max_rcpt_domains_per_hour\": 1000000,
                   \"max_rejected_rcpts_per_hour\": 1000000 }"
  fi
  cat >"$d/policy.json" <<EOF
// generated by tests/bench/auth_defence_bench.sh, variant $v
{
  "version": 1,
  "hostname": "smtpgate-authbench.localhost",
  "workers": $gw_workers,
  "local_domains": ["example.com"],
  "listeners": [ { "name": "sub", "listen": "127.0.0.1:$port", "class": "submission" } ],
  "backend": { "address": "127.0.0.1:$backend_port", "client_ip": "none" },
  "submission": { $sub },
  "brute_force": { $bf },
  "connections": { "max_total": 9000, "max_per_ip": 20000 },
  "log": { "format": "json", "path": "$log" }
}
EOF
  "$bin" check -c "$d/policy.json" >/dev/null
}

GWS=()
start_gws() {   # dir... (each with its policy.json; the i-th on port gw_port + i) -> GWS
  local d i
  GWS=()
  for d in "$@"; do
    "$bin" run -c "$d/policy.json" >>"$d/gateway.stderr" 2>&1 &
    GWS+=("$!"); pids+=("$!")
  done
  for i in $(seq 0 $(($# - 1))); do
    wait_port $((gw_port + i)) || { FAILED=$((FAILED + 1)); stop_gws; return 1; }
  done
  sleep 0.3
}
stop_gws() { local p; for p in "${GWS[@]}"; do stop_pid "$p"; forget_pid "$p"; done; GWS=(); }

drive() {   # out-prefix ports driver-args... -> the driver's rc in RC
  local out=$1 ports=$2
  shift 2
  RC=0
  # in the background + wait: a TERM to this script then stops at once
  timeout -k 5 800 $py "$here/auth_load.py" --port "$ports" --backend-port "$backend_port" \
    --gw-pid "$(IFS=,; echo "${GWS[*]}")" "$@" >"$out.json" 2>"$out.err" &
  local drv=$!; pids+=("$drv")
  wait "$drv" || RC=$?; forget_pid "$drv"
}

check_target() {   # tag dir load.json target-index want_auths -> FAILED += problems
  local tag=$1 d=$2 j=$3 ti=$4 n=$5 bad
  bad=$($py - "$j" "$ti" "$n" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); t = d["targets"][int(sys.argv[2])]; n = int(sys.argv[3]); out = []
if t["auths"] != n: out.append("%d AUTH exchanges, wanted %d" % (t["auths"], n))
for k in ("unexpected", "errors"):
    if t[k]: out.append("%s: %s" % (k, json.dumps(t[k])[:300]))
print("; ".join(out))
EOF
)
  if [ -n "$bad" ]; then echo "  $tag: FAILED: $bad" >&2; FAILED=$((FAILED + 1)); fi
  if [ -s "$d/gateway.stderr" ]; then echo "  $tag: gateway stderr: $(head -c 300 "$d/gateway.stderr")" >&2; fi
}

check_backend() {   # tag load.json -> FAILED += 1 unless the backend saw every AUTH
  local bad
  bad=$($py - "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); b = d.get("backend")
if not b: print("no XSTATS from the backend")
elif b["auth_ok"] + b["auth_failed"] != d["auths"]:
    print("the backend saw %d AUTH, the clients sent %d" % (b["auth_ok"] + b["auth_failed"], d["auths"]))
EOF
)
  if [ -n "$bad" ]; then echo "  $1: FAILED: $bad" >&2; FAILED=$((FAILED + 1)); fi
}

bad_lines='"event":"(ban|would_ban|login_lock|suspend|error)"|"result":"refused"'

printf 'rep\tvariant\tslot\tauths\tconns\twall_s\tlast_reply_s\tauth_s_all\tgw_ticks\tgw_cpu_ns\tus_per_auth\tus_per_auth_ns\trss_start_kb\trss_end_kb\tcli_cpu_s\tlog_bytes\tlog_lines\tbad_lines\tload1\n' >"$W/runs.tsv"

run_rep() {   # rep variant... (in port order)
  local rep=$1 v d tag lb ll nbad ti=0 ports="" dirs=()
  shift
  for v in "$@"; do
    d=$W/r$rep-$v; mkdir -p "$d"; dirs+=("$d")
    write_policy "$v" "$d" "$d/gateway.log" $((gw_port + ti))
    ports+=${ports:+,}$((gw_port + ti)); ti=$((ti + 1))
  done
  start_gws "${dirs[@]}" || return 0
  drive "$W/r$rep.load" "$ports" --auths "$auths" --per-conn "$per_conn" \
    --addresses "$addresses" --logins "$logins" --success-every "$success_every" \
    --concurrency "$conc" --time-limit 600 --bucket "$auths"
  stop_gws
  [ -s "$W/r$rep.load.json" ] || { echo "  r$rep: driver produced nothing (rc $RC): $(head -c 300 "$W/r$rep.load.err")" >&2; FAILED=$((FAILED + 1)); return 0; }
  check_backend "r$rep" "$W/r$rep.load.json"
  ti=0
  for v in "$@"; do
    tag=r$rep-$v; d=$W/$tag
    check_target "$tag" "$d" "$W/r$rep.load.json" "$ti" "$auths"
    lb=$(stat -c %s "$d/gateway.log" 2>/dev/null || echo 0)
    ll=$(wc -l <"$d/gateway.log" 2>/dev/null || echo 0)
    nbad=$(grep -cE "$bad_lines" "$d/gateway.log" || true)
    if [ "$nbad" != 0 ]; then
      echo "  $tag: FAILED: $nbad ban/lock/suspend/error/refused lines in the log, e.g. $(grep -m1 -E "$bad_lines" "$d/gateway.log" | head -c 300)" >&2
      FAILED=$((FAILED + 1))
    fi
    [ "$keep_log" = 1 ] || rm -f "$d/gateway.log"
    $py - "$W/r$rep.load.json" "$ti" "$rep" "$v" "$lb" "$ll" "$nbad" "$CLK_TCK" "$(cut -d' ' -f1 /proc/loadavg)" >>"$W/runs.tsv" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); ti, rep, v, lb, ll, bad, tck, load = sys.argv[2:]
t = d["targets"][int(ti)]; g = t["gw"]; n = t["auths"]
print("\t".join(str(x) for x in (
    rep, v, ti, n, t["conns"], d["wall_s"], round(t["last_reply"], 2), d["auth_s"], g["ticks"],
    g["cpu_ns"], "%.2f" % (g["ticks"] / int(tck) / n * 1e6), "%.2f" % (g["cpu_ns"] / 1000 / n),
    g["start"]["rss_kb"], g["end"]["rss_kb"], d["client_cpu_s"], lb, ll, bad, load)))
EOF
    tail -n1 "$W/runs.tsv" | awk -F'\t' '{printf "  r%s %s (port +%s) %7d AUTH, done at %6.2f of %6.2f s (%6.0f AUTH/s in all) | gw %5.2f us/AUTH (ticks), %5.2f (schedstat) | RSS %5.1f -> %5.1f MB | log %d B/AUTH | load %s\n", $1, $2, $3, $4, $7, $6, $8, $11, $12, $13/1024, $14/1024, $16/$4, $19}' >&2
    ti=$((ti + 1))
  done
  sleep 1
}

for rep in $(seq "$reps"); do
  n=${#variants[@]} order=()
  for i in $(seq 0 $((n - 1))); do order+=("${variants[$(((i + rep - 1) % n))]}"); done
  run_rep "$rep" "${order[@]}"
done

# ---------------------------------------------------------------- callgrind (user-space instructions)
if [ "$cg" = 1 ] && ! command -v valgrind >/dev/null; then
  echo "no valgrind: the callgrind stage is skipped" >&2; cg=0
fi
if [ "$cg" = 1 ]; then
  ti=0 ports="" dirs=() GWS=()
  for v in "${variants[@]}"; do
    d=$W/cg-$v; mkdir -p "$d"; dirs+=("$d")
    write_policy "$v" "$d" /dev/null $((gw_port + ti))
    ports+=${ports:+,}$((gw_port + ti)); ti=$((ti + 1))
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$d/callgrind.out" \
      "$bin" run -c "$d/policy.json" >"$d/valgrind.log" 2>&1 &
    GWS+=("$!"); pids+=("$!")
  done
  cg_ok=1
  for i in $(seq 0 $((ti - 1))); do wait_port $((gw_port + i)) 600 || cg_ok=0; done   # valgrind starts slowly
  if [ "$cg_ok" = 1 ]; then
    for p in "${GWS[@]}"; do callgrind_control -i on "$p" >/dev/null 2>&1; done
    drive "$W/cg.load" "$ports" --auths "$cg_auths" --per-conn "$per_conn" \
      --addresses "$addresses" --logins "$logins" --success-every "$success_every" \
      --concurrency "$conc" --time-limit 600 --conn-timeout 60
  fi
  for p in "${GWS[@]}"; do   # TERM: callgrind writes its file at exit; give it 60 s
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$p"; forget_pid "$p"
  done
  GWS=()
  if [ "$cg_ok" = 1 ] && [ -s "$W/cg.load.json" ]; then
    check_backend cg "$W/cg.load.json"
    ti=0
    for v in "${variants[@]}"; do
      check_target "cg-$v" "$W/cg-$v" "$W/cg.load.json" "$ti" "$cg_auths"
      callgrind_annotate --inclusive=yes --threshold=100 "$W/cg-$v/callgrind.out" >"$W/cg-$v/inclusive.txt" 2>/dev/null || true
      ti=$((ti + 1))
    done
  else
    echo "  callgrind: no load run (rc ${RC:-?}): $(head -c 300 "$W/cg.load.err" 2>/dev/null)" >&2
    FAILED=$((FAILED + 1))
  fi
fi

# ---------------------------------------------------------------- memory run
printf 'variant\tslot\tauths\tconns\twall_s\tauth_s_all\tus_per_auth_ns\trss_start_kb\trss_end_kb\tload1\n' >"$W/mem.tsv"
if [ "$mem" = 1 ] && [ ${#mem_variants[@]} -ge 1 ]; then
  ti=0 ports="" dirs=()
  for v in "${mem_variants[@]}"; do
    d=$W/mem-$v; mkdir -p "$d"; dirs+=("$d")
    write_policy "$v" "$d" /dev/null $((gw_port + ti))
    ports+=${ports:+,}$((gw_port + ti)); ti=$((ti + 1))
  done
  if start_gws "${dirs[@]}"; then
    drive "$W/mem.load" "$ports" --auths "$mem_auths" --per-conn "$mem_per_conn" --distinct \
      --addr-octet 3 --concurrency "$conc" --time-limit 700 --bucket "$mem_bucket"
    stop_gws
    if [ -s "$W/mem.load.json" ]; then
      check_backend mem "$W/mem.load.json"
      ti=0
      for v in "${mem_variants[@]}"; do
        check_target "mem-$v" "$W/mem-$v" "$W/mem.load.json" "$ti" "$mem_auths"
        $py - "$W/mem.load.json" "$ti" "$v" "$(cut -d' ' -f1 /proc/loadavg)" >>"$W/mem.tsv" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); ti = int(sys.argv[2]); t = d["targets"][ti]; g = t["gw"]; n = t["auths"]
print("\t".join(str(x) for x in (sys.argv[3], ti, n, t["conns"], d["wall_s"], d["auth_s"],
      "%.2f" % (g["cpu_ns"] / 1000 / n), g["start"]["rss_kb"], g["end"]["rss_kb"], sys.argv[4])))
EOF
        tail -n1 "$W/mem.tsv" | awk -F'\t' '{printf "  mem %s %7d AUTH (%d connections) in %6.1f s (%6.0f AUTH/s in all) | gw %5.2f us/AUTH | RSS %6.1f -> %6.1f MB | load %s\n", $1, $3, $4, $5, $6, $7, $8/1024, $9/1024, $10}' >&2
        ti=$((ti + 1))
      done
    else
      echo "  mem: driver produced nothing (rc $RC): $(head -c 300 "$W/mem.load.err")" >&2
      FAILED=$((FAILED + 1))
    fi
  fi
fi
if [ -x "$login_bench" ]; then
  echo "in-process: $login_bench 1000000" >&2
  "$login_bench" 1000000 >"$W/login_bench.txt" 2>&1 || { echo "  $login_bench failed" >&2; FAILED=$((FAILED + 1)); }
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# ---------------------------------------------------------------- summary
$py - "$W" <<'EOF'
import csv, json, os, statistics as st, sys
W = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(W, "runs.tsv")), delimiter="\t"))
def mr(xs, fmt="%.2f"):
    xs = [float(x) for x in xs]
    if not xs: return "–"
    return (fmt + " (" + fmt + "–" + fmt + ")") % (st.median(xs), min(xs), max(xs))
vs = [v for v in "ABC" if any(r["variant"] == v for r in rows)]
R = {v: {r["rep"]: r for r in rows if r["variant"] == v} for v in vs}
print()
print("## auth_defence_bench summary: medians over reps (min–max)")
print()
print("| figure | " + " | ".join(vs) + " |")
print("|---|" + "---:|" * len(vs))
def line(name, key, fmt="%.2f", f=float):
    print("| %s | %s |" % (name, " | ".join(mr([f(r[key]) for r in R[v].values()], fmt) for v in vs)))
line("gateway CPU µs per AUTH (utime+stime ticks)", "us_per_auth")
line("gateway CPU µs per AUTH (schedstat ns)", "us_per_auth_ns")
line("seconds to its last reply", "last_reply_s", "%.2f")
line("gateway VmRSS MB after start", "rss_start_kb", "%.1f", lambda x: float(x) / 1024)
line("gateway VmRSS MB at the end", "rss_end_kb", "%.1f", lambda x: float(x) / 1024)
print("| log bytes per AUTH | %s |" % " | ".join(
    mr([float(r["log_bytes"]) / float(r["auths"]) for r in R[v].values()], "%.0f") for v in vs))
if rows:
    first = {}
    for r in rows: first.setdefault(r["rep"], r)
    print()
    print("Per repetition, all gateways together: %s AUTH/s; load average (1 min) at the end: %s"
          % (", ".join("%.0f" % float(r["auth_s_all"]) for r in first.values()),
             ", ".join(r["load1"] for r in first.values())))
if "A" in vs:
    print()
    print("Paired per repetition, against A (µs per AUTH; median (min–max), then each rep):")
    print()
    print("| difference | ticks | schedstat | per rep (schedstat) |")
    print("|---|---:|---:|---|")
    for v in vs:
        if v == "A": continue
        reps = sorted(set(R[v]) & set(R["A"]), key=int)
        dt = [float(R[v][k]["us_per_auth"]) - float(R["A"][k]["us_per_auth"]) for k in reps]
        dn = [float(R[v][k]["us_per_auth_ns"]) - float(R["A"][k]["us_per_auth_ns"]) for k in reps]
        print("| %s − A | %s | %s | %s |" % (v, mr(dt, "%+.2f"), mr(dn, "%+.2f"),
                                           ", ".join("%+.2f" % x for x in dn)))
import re
cgv = [v for v in "ABC" if os.path.exists(os.path.join(W, "cg-" + v, "inclusive.txt"))]
if cgv:
    d = json.load(open(os.path.join(W, "cg.load.json")))
    fns = [("smtpgate::PasswordKeyer::key", "keyed hash of the attempt (distinct_passwords, every AUTH)"),
           ("smtpgate::BanList::repeated_failure", "repeat lookup (distinct_passwords, per failure)"),
           ("smtpgate::LoginGuard::locked_for", "lock check (per_login, every AUTH)"),
           ("smtpgate::LoginGuard::record_failure", "login failure record (per_login, per failure)"),
           ("smtpgate::LoginGuard::record_success", "known-good address (per_login, per success)"),
           ("smtpgate::LoginBreaker::login", "addresses per login (breaker, per success)"),
           ("smtpgate::BanList::record_failure", "address failure count (all, per counted failure)")]
    pat = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(/[^\s:]+|\?\?\?):(smtpgate::[\w:]+)\(")
    tot, inc = {}, {}
    for ti, v in enumerate(cgv):
        n = d["targets"][ti]["auths"]
        inc[v] = {}
        for l in open(os.path.join(W, "cg-" + v, "inclusive.txt")):
            if "PROGRAM TOTALS" in l:
                tot[v] = int(l.split()[0].replace(",", "")) / n
            m = pat.match(l)
            if m:
                inc[v][m.group(3)] = inc[v].get(m.group(3), 0) + int(m.group(1).replace(",", "")) / n
    print()
    print("callgrind, user-space instructions per AUTH (%d AUTH per gateway, side by side; inclusive):"
          % d["targets"][0]["auths"])
    print()
    print("| | " + " | ".join(cgv) + " |")
    print("|---|" + "---:|" * len(cgv))
    print("| whole gateway | %s |" % " | ".join("{:,.0f}".format(tot.get(v, 0)) +
          ("" if v == "A" or "A" not in tot else " ({:+,.0f})".format(tot.get(v, 0) - tot["A"])) for v in cgv))
    for f, what in fns:
        print("| %s: `%s` | %s |" % (what, f.split("::", 1)[1], " | ".join(
            "{:,.0f}".format(inc[v].get(f, 0)) for v in cgv)))
mem = list(csv.DictReader(open(os.path.join(W, "mem.tsv")), delimiter="\t"))
if mem:
    d = json.load(open(os.path.join(W, "mem.load.json")))
    print()
    print("Memory run: distinct logins, one address per connection, all failures; "
          "%d AUTH in all in %.1f s (%.0f/s), side by side:" % (d["auths"], d["wall_s"], d["auth_s"]))
    print()
    print("| variant | AUTH | connections (= addresses) | gateway CPU µs/AUTH | VmRSS MB after start → end | VmRSS MB after every %s AUTH in all |"
          % ("{:,}".format(d["buckets"][0]["auths"]) if d["buckets"] else "–"))
    print("|---|---:|---:|---:|---|---|")
    for m in mem:
        ti = int(m["slot"])
        print("| %s | %s | %s | %s | %.1f → %.1f | %s |" % (
            m["variant"], m["auths"], m["conns"], m["us_per_auth_ns"],
            float(m["rss_start_kb"]) / 1024, float(m["rss_end_kb"]) / 1024,
            " ".join("%.0f" % (b["gw_rss_kb"][ti] / 1024) for b in d["buckets"])))
lb = os.path.join(W, "login_bench.txt")
if os.path.exists(lb):
    print()
    print("In-process (bench_login_defence 1000000):")
    print()
    for l in open(lb):
        print("    " + l.rstrip())
EOF
echo "tables: $W/runs.tsv, $W/mem.tsv; driver output: $W/r*.load.json, $W/mem.load.json; command: $W/command.txt" >&2
[ "$FAILED" = 0 ] || { echo "$FAILED check(s) FAILED" >&2; exit 1; }
