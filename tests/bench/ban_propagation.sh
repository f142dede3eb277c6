#!/bin/bash
# Ban propagation delay between two gateway instances sharing Redis (SPEC §8; goal: median
# < 100 ms, worst < 1 s): a ban issued on instance A, how long until instance B refuses the
# address.
#
#   tests/bench/ban_propagation.sh [BIN]                 # 200 + 200 addresses, ~10 s
#   RESTART=1 tests/bench/ban_propagation.sh BIN         # + Redis killed and started again, ~16 s
#   GW_WORKERS=1 tests/bench/ban_propagation.sh BIN      # one loop per gateway
#   VIA=guess N=50 tests/bench/ban_propagation.sh BIN    # bans by 5 failed AUTHs, not the admin POST
#
# BIN defaults to <repo>/build-bench/smtpgate (Release, as the other bench scripts):
#   cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DSMTPGATE_WERROR=OFF && make -C build-bench -j2 smtpgate
#
# Starts (127.0.0.1 only, all stopped by PID):
#   redis-server on a free port (REDIS_PORT, else the first free one from 2770 up),
#       --save "" --appendonly no, its own dir $W/redis
#   tests/bench/auth_backend.py 127.0.0.1:$BACKEND_PORT   backend (AUTH PLAIN: 535 for the
#       wrong passwords of VIA=guess; the probes never reach it)
#   two gateways, A and B, from examples/behind-haproxy/gw1.json / gw2.json: one listener
#       (class auto, proxy_protocol true) on $GW_PORT / +1, trusted_proxies ["127.0.0.1"],
#       brute_force {max_failures 5, window 10m, ban 1h, state_file $W/<A|B>/state},
#       shared {redis 127.0.0.1:<redis port>, prefix "bench<pid>:", instance gwA / gwB},
#       admin 127.0.0.1:$ADMIN_PORT / +1, "workers" $GW_WORKERS (default "auto": 2 loops on
#       this 2-vCPU VM), backend.client_ip "none" (auth_backend.py has no XCLIENT),
#       JSON log to $W/<A|B>/gateway.log
#   tests/bench/ban_propagation.py   the driver (see its header): N addresses (198.18.x.y,
#       each named by a PROXY v2 header from 127.0.0.1), one at a time, GAP_MS apart: checked
#       not refused by B, banned on A (VIA=admin: POST /bans/<ip> on A's admin endpoint;
#       VIA=guess: 5 connections to A each failing one AUTH PLAIN), then B polled every
#       INTERVAL_MS (at most BOUND_S) until it refuses the address; the probe alternates per
#       address over PROBE ("greeting": a connection to B with the PROXY v2 header, refused =
#       554 at greeting; "bans": GET /bans on B lists it). delay = A's answer -> the end of
#       B's first refusing probe (upper bound; "lower" = -> the start of the last non-refusing
#       one).
# RESTART=1: then Redis is killed (SIGKILL), A logs the error; RESTART_N addresses are banned
#   on A while it is down (B must still greet them 220); after DOWN_S seconds Redis starts
#   again on the same port (empty: no save); greeting probes on B round robin, one every
#   INTERVAL_MS, at most RECOVER_BOUND_S, until B refuses all of them: delay from Redis
#   answering again and from the ban; both instances' "shared up" log lines give their
#   reconnect times; then AFTER_N more addresses per probe kind as in the first phase.
# Checked: every address refused by B within BOUND_S; B's GET /bans lists every ban at the
# end; no gateway log has an error line (but the shared ones while Redis is down); empty
# gateway stderr. Exit 1 otherwise.
# Environment (defaults): BIN (or $1), N (200 per probe kind), PROBE ("greeting,bans"),
# VIA (admin), INTERVAL_MS (2), BOUND_S (2), GAP_MS (20), GW_WORKERS ("auto"; or 1..8),
# RESTART (0), RESTART_N (20), DOWN_S (2), RECOVER_BOUND_S (60), AFTER_N (50),
# GW_PORT (2761; A, B on +0, +1), ADMIN_PORT (2763; +0, +1), BACKEND_PORT (2765), REDIS_PORT,
# WORK (a new /tmp/smtpgate-banprop.XXXXXX).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/bench
py=/usr/bin/python3
bin=${1:-${BIN:-$root/build-bench/smtpgate}}
n=${N:-200}
probe=${PROBE:-greeting,bans}
via=${VIA:-admin}
interval_ms=${INTERVAL_MS:-2}
bound_s=${BOUND_S:-2}
gap_ms=${GAP_MS:-20}
workers=${GW_WORKERS:-auto}
restart=${RESTART:-0}
restart_n=${RESTART_N:-20}
down_s=${DOWN_S:-2}
recover_bound=${RECOVER_BOUND_S:-60}
after_n=${AFTER_N:-50}
gw_port=${GW_PORT:-2761}
admin_port=${ADMIN_PORT:-2763}
backend_port=${BACKEND_PORT:-2765}
redis_bin=$(command -v redis-server || echo /usr/bin/redis-server)
W=${WORK:-$(mktemp -d /tmp/smtpgate-banprop.XXXXXX)}
mkdir -p "$W"
[ -x "$bin" ] || { echo "no binary at $bin (build first, see the top of this file)" >&2; exit 1; }
[ -x "$redis_bin" ] || { echo "no redis-server" >&2; exit 1; }
[[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 2000 ]] || { echo "N 1..2000" >&2; exit 2; }
[[ $restart_n =~ ^[0-9]+$ && $restart_n -ge 1 && $restart_n -le 500 ]] || { echo "RESTART_N 1..500" >&2; exit 2; }
[[ $after_n =~ ^[0-9]+$ && $after_n -le 2000 ]] || { echo "AFTER_N 0..2000" >&2; exit 2; }
[[ $down_s =~ ^[0-9]+$ && $down_s -le 60 ]] || { echo "DOWN_S 0..60" >&2; exit 2; }
[[ $recover_bound =~ ^[0-9]+$ && $recover_bound -ge 1 && $recover_bound -le 120 ]] || { echo "RECOVER_BOUND_S 1..120" >&2; exit 2; }
[[ $workers =~ ^[1-8]$ || $workers == auto ]] || { echo "GW_WORKERS 1..8 or auto" >&2; exit 2; }
case $via in admin|guess) ;; *) echo "VIA admin or guess" >&2; exit 2 ;; esac
[ "$workers" = auto ] && workers_json='"auto"' || workers_json=$workers
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"
PORT_HINT="set GW_PORT/ADMIN_PORT/BACKEND_PORT" require_free_ports "$gw_port" $((gw_port + 1)) \
  "$admin_port" $((admin_port + 1)) "$backend_port"
if [ -z "${REDIS_PORT:-}" ]; then
  for p in $(seq 2770 2799); do
    ss -Hltn "sport = :$p" | grep -q . || { REDIS_PORT=$p; break; }
  done
  [ -n "${REDIS_PORT:-}" ] || { echo "no free port in 2770..2799 for redis (set REDIS_PORT)" >&2; exit 1; }
fi
redis_port=$REDIS_PORT
require_free_ports "$redis_port"
FAILED=0
T_START=$(date +%s.%N)

echo "binary: $bin ($(sha1sum <"$bin" | cut -c1-12)); $("$redis_bin" --version | grep -o 'v=[^ ]*')" >&2
echo "work: $W   load before: $(cut -d' ' -f1-3 /proc/loadavg)   $(nproc) cpus" >&2
echo "$0 $*  (BIN=$bin N=$n PROBE=$probe VIA=$via INTERVAL_MS=$interval_ms BOUND_S=$bound_s GAP_MS=$gap_ms GW_WORKERS=$workers RESTART=$restart RESTART_N=$restart_n DOWN_S=$down_s AFTER_N=$after_n REDIS_PORT=$redis_port)" >"$W/command.txt"

redis_ping() {   # bash's /dev/tcp: no process started, so "Redis answers again" is timed to a few ms
  local r=""
  { exec 3<>"/dev/tcp/127.0.0.1/$redis_port"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  read -r -t 1 r <&3 || true
  exec 3<&- 3>&-
  [[ $r == +PONG* ]]
}
REDIS=""
start_redis() {   # -> REDIS (pid), REDIS_UP (wall time it answered PING)
  mkdir -p "$W/redis"
  "$redis_bin" --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$W/redis" --protected-mode no >>"$W/redis/redis.log" 2>&1 &
  REDIS=$!; pids+=("$REDIS")
  for _ in $(seq 1000); do redis_ping && break; sleep 0.005; done
  redis_ping || { echo "redis-server did not answer" >&2; exit 1; }
  REDIS_UP=$(date +%s.%N)
}
start_redis

$py "$here/auth_backend.py" --port "$backend_port" >"$W/backend.log" 2>&1 &
pids+=("$!")
wait_port "$backend_port"

prefix="bench$$:"
write_policy() {   # name dir port admin-port
  cat >"$2/policy.json" <<EOF
// generated by tests/bench/ban_propagation.sh from examples/behind-haproxy/gw1.json
{
  "version": 1,
  "hostname": "smtpgate-banprop-$1.localhost",
  "workers": $workers_json,
  "local_domains": ["example.com"],
  "listeners": [
    { "name": "mx", "listen": "127.0.0.1:$3", "class": "auto", "proxy_protocol": true }
  ],
  "trusted_proxies": ["127.0.0.1"],
  "mx": { "access": { "default": "allow" }, "auth": "ban" },
  "submission": { "require_tls": false, "access": { "default": "allow" } },
  "brute_force": { "max_failures": 5, "window": "10m", "ban": "1h",
                   "state_file": "$2/state" },
  "shared": { "redis": "127.0.0.1:$redis_port", "prefix": "$prefix", "instance": "gw$1" },
  "connections": { "max_total": 9000, "max_per_ip": 20000 },
  "backend": { "address": "127.0.0.1:$backend_port", "client_ip": "none" },
  "admin": { "listen": "127.0.0.1:$4" },
  "log": { "format": "json", "path": "$2/gateway.log" }
}
EOF
  "$bin" check -c "$2/policy.json" >/dev/null
}

GWS=()
for i in 0 1; do
  name=$([ $i = 0 ] && echo A || echo B)
  d=$W/$name; mkdir -p "$d"
  write_policy "$name" "$d" $((gw_port + i)) $((admin_port + i))
  "$bin" run -c "$d/policy.json" >>"$d/gateway.stderr" 2>&1 &
  GWS+=("$!"); pids+=("$!")
done
for i in 0 1; do wait_port $((gw_port + i)); wait_port $((admin_port + i)); done

shared_up_count() { grep -c '"event":"shared".*"state":"up"' "$1" 2>/dev/null || true; }
wait_shared_up() {   # log count [tenths, default 100]
  local i
  for i in $(seq "${3:-100}"); do
    [ "$(shared_up_count "$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "no shared up line #$2 in $1" >&2
  return 1
}
if ! wait_shared_up "$W/A/gateway.log" 1 || ! wait_shared_up "$W/B/gateway.log" 1; then exit 1; fi

drive() {   # out phase args...
  local out=$1 rc=0
  shift
  timeout -k 5 600 $py "$here/ban_propagation.py" --a-admin "127.0.0.1:$admin_port" \
    --b-admin 127.0.0.1:$((admin_port + 1)) --a-mx "127.0.0.1:$gw_port" --b-mx 127.0.0.1:$((gw_port + 1)) \
    --via "$via" --interval-ms "$interval_ms" --gap-ms "$gap_ms" "$@" >"$out.json" 2>"$out.err" &
  local drv=$!; pids+=("$drv")
  wait "$drv" || rc=$?; forget_pid "$drv"
  [ "$rc" = 0 ] || { echo "  driver $out: rc $rc: $(head -c 300 "$out.err")" >&2; FAILED=$((FAILED + 1)); }
}

nkinds=$(($(tr -cd , <<<"$probe" | wc -c) + 1))
total=$((n * nkinds))
echo "phase normal: $total addresses ($n per probe kind: $probe), via $via, poll every ${interval_ms} ms, bound ${bound_s} s" >&2
t=$(date +%s.%N)
drive "$W/normal" --phase normal --probe "$probe" --n "$total" --first 1 --bound-s "$bound_s"
echo "  $(printf '%.1f' "$(echo "$(date +%s.%N) - $t" | bc)") s" >&2
next=$((total + 1))
banned=$total

if [ "$restart" = 1 ]; then
  echo "phase restart: Redis killed, $restart_n bans on A while down, Redis back after ${down_s} s" >&2
  kill -KILL "$REDIS"; wait "$REDIS" 2>/dev/null || true; forget_pid "$REDIS"
  REDIS_DOWN=$(date +%s.%N)
  for _ in $(seq 150); do grep -q '"event":"error".*"component":"shared"' "$W/A/gateway.log" && break; sleep 0.1; done
  upA=$(shared_up_count "$W/A/gateway.log"); upB=$(shared_up_count "$W/B/gateway.log")
  drive "$W/down" --phase down --n "$restart_n" --first "$next" --gap-ms 0
  next=$((next + restart_n)); banned=$((banned + restart_n))
  sleep "$down_s"
  start_redis
  echo "  Redis down $(echo "$REDIS_UP - $REDIS_DOWN" | bc) s" >&2
  drive "$W/recover" --phase recover --down-json "$W/down.json" --since-wall "$REDIS_UP" \
    --bound-s "$recover_bound"
  wait_shared_up "$W/A/gateway.log" $((upA + 1)) 300 || FAILED=$((FAILED + 1))
  wait_shared_up "$W/B/gateway.log" $((upB + 1)) 300 || FAILED=$((FAILED + 1))
  for g in A B; do   # wall time of the instance's first "shared up" after the restart
    grep '"event":"shared".*"state":"up"' "$W/$g/gateway.log" | tail -n1 >"$W/$g.up.line"
  done
  echo "$REDIS_DOWN $REDIS_UP" >"$W/redis_times"
  if [ "$after_n" -gt 0 ]; then
    drive "$W/after" --phase normal --probe "$probe" --n $((after_n * nkinds)) --first "$next" --bound-s "$bound_s"
    next=$((next + after_n * nkinds)); banned=$((banned + after_n * nkinds))
  fi
fi

# B lists every ban; no error lines (but the shared ones of the restart); empty stderr
nb=$(curl -s --max-time 5 "http://127.0.0.1:$((admin_port + 1))/bans" | grep -c '"ip": "198\.18\.' || true)
[ "$nb" = "$banned" ] || { echo "  B lists $nb bans of 198.18.x.y, wanted $banned" >&2; FAILED=$((FAILED + 1)); }
for g in A B; do
  ne=$(grep '"event":"error"' "$W/$g/gateway.log" | grep -vc '"component":"shared"' || true)
  ns=$(grep -c '"event":"error".*"component":"shared"' "$W/$g/gateway.log" || true)
  [ "$ne" = 0 ] || { echo "  $g: $ne error lines, e.g. $(grep '"event":"error"' "$W/$g/gateway.log" | grep -v '"component":"shared"' | head -n1 | head -c 300)" >&2; FAILED=$((FAILED + 1)); }
  if [ "$restart" = 0 ] && [ "$ns" != 0 ]; then echo "  $g: $ns shared error lines" >&2; FAILED=$((FAILED + 1)); fi
  [ -s "$W/$g/gateway.stderr" ] && { echo "  $g stderr: $(head -c 300 "$W/$g/gateway.stderr")" >&2; FAILED=$((FAILED + 1)); }
done
for p in "${GWS[@]}"; do stop_pid "$p"; forget_pid "$p"; done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); $(printf '%.1f' "$(echo "$(date +%s.%N) - $T_START" | bc)") s in all" >&2

# ---------------------------------------------------------------- summary
$py - "$W" "$bound_s" <<'EOF' | tee "$W/summary.md"
import json, os, statistics as st, sys, datetime
W, bound = sys.argv[1], float(sys.argv[2])
def pct(xs, p):   # nearest rank
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))]
def row(name, xs):
    if not xs: return "| %s | 0 | – | – | – | – | – |" % name
    return "| %s | %d | %.1f | %.1f | %.1f | %.1f | %.1f |" % (
        name, len(xs), min(xs), st.median(xs), pct(xs, 90), pct(xs, 99), max(xs))
def table(title, recs):
    print(); print("### " + title); print()
    print("| ms | n | min | median | p90 | p99 | max |"); print("|---|---:|---:|---:|---:|---:|---:|")
    for k in sorted({r["probe"] for r in recs if "probe" in r}, reverse=True):
        rs = [r for r in recs if r.get("probe") == k]
        ok = [r for r in rs if r.get("delay_ms") is not None]
        print(row("%s: A's answer → B refuses (upper bound)" % k, [r["delay_ms"] for r in ok]))
        print(row("%s: lower bound (last probe not refused)" % k, [r["lower_ms"] for r in ok]))
        print(row("%s: from the ban request sent" % k, [r["from_send_ms"] for r in ok]))
        print(row("%s: one probe's round trip (the refusing one)" % k, [r["probe_ms"] for r in ok]))
        print(row("%s: probes until refused (count)" % k, [r["probes"] for r in ok]))
        bad = [r for r in rs if r.get("delay_ms") is None]
        if bad: print("| %s: NOT refused within %.1f s or failed | %d | %s |" % (
            k, bound, len(bad), json.dumps(bad[:2])[:200]))
    print(row("ban on A: request → answer", [r["ban_ms"] for r in recs if "ban_ms" in r]))
    errs = [r for r in recs if "error" in r]
    if errs: print("\nerrors: %d, e.g. %s" % (len(errs), errs[0]))
print("## ban_propagation summary (%s)" % open(os.path.join(W, "command.txt")).read().strip())
for name, title in (("normal", "Redis up: ban on A → B refuses"),
                    ("after", "after the Redis restart: ban on A → B refuses")):
    p = os.path.join(W, name + ".json")
    if os.path.exists(p) and os.path.getsize(p):
        d = json.load(open(p)); table(title + " (%.1f s)" % d["wall_s"], d["records"])
p = os.path.join(W, "recover.json")
if os.path.exists(p) and os.path.getsize(p):
    down = json.load(open(os.path.join(W, "down.json")))
    rd, ru = (float(x) for x in open(os.path.join(W, "redis_times")).read().split())
    d = json.load(open(p)); recs = d["records"]
    print(); print("### Redis killed, bans on A while down, Redis started again (down %.2f s)" % (ru - rd)); print()
    codes = [r.get("b_code_after_50ms") for r in down["records"]]
    print("B's greeting 50 ms after each ban while Redis was down: %s" % {c: codes.count(c) for c in set(codes)})
    for g in "AB":
        try:
            l = json.loads(open(os.path.join(W, g + ".up.line")).read())
            ts = l.get("ts") or l.get("time")
            t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
            print("%s: shared up again %.0f ms after Redis answered" % (g, (t - ru) * 1e3))
        except Exception as e:
            print("%s: shared up line unreadable: %s" % (g, e))
    print(); print("| ms | n | min | median | p90 | p99 | max |"); print("|---|---:|---:|---:|---:|---:|---:|")
    ok = [r for r in recs if "from_redis_up_ms" in r]
    print(row("Redis answering → B refuses", [r["from_redis_up_ms"] for r in ok]))
    print(row("ban on A (Redis down) → B refuses", [r["from_ban_ms"] for r in ok]))
    bad = [r for r in recs if "from_redis_up_ms" not in r]
    print("\nrefused by B: %d of %d (%d greeting probes)%s" % (len(ok), len(recs), d["probes"],
          "; NOT: %s" % [r["ip"] for r in bad] if bad else ""))
EOF
$py - "$W" "$bound_s" <<'EOF' || FAILED=$((FAILED + 1))
import json, os, sys
W = sys.argv[1]; bad = 0
for name in ("normal", "after"):
    p = os.path.join(W, name + ".json")
    if os.path.exists(p) and os.path.getsize(p):
        bad += sum(1 for r in json.load(open(p))["records"] if r.get("delay_ms") is None)
    elif name == "normal": bad += 1
p = os.path.join(W, "recover.json")
if os.path.exists(p):
    bad += sum(1 for r in json.load(open(p))["records"] if "from_redis_up_ms" not in r) if os.path.getsize(p) else 1
if bad: print("  %d addresses not refused by B in time (or a phase failed)" % bad, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
[ "$FAILED" = 0 ] || { echo "FAILED: $FAILED problems (see above); work dir $W" >&2; exit 1; }
echo "ok; work dir $W" >&2
