# Shared by the bench scripts (source it): processes are stopped only by the PIDs the script
# recorded in `pids`, ports are checked before and waited for after a start, and CPU/RSS
# come from /proc. Sourcing sets the EXIT/INT/TERM traps; `W` (the work directory) is named
# in the exit line when set.

pids=()

stop_pid() {  # TERM, wait up to 5 s, then KILL; only PIDs this script started
  local p=$1 i
  kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

forget_pid() {  # a reaped PID must not be signalled later (it may be reused)
  local p keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

bench_cleanup() {
  local rc=$? p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  echo "stopped: ${pids[*]:-none}; work dir: ${W:-none}" >&2
  exit $rc
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

require_free_ports() {  # port... ; PORT_HINT is added to the message
  local p
  for p in "$@"; do
    if ss -Hltn "sport = :$p" | grep -q .; then
      echo "port $p busy${PORT_HINT:+; $PORT_HINT}" >&2
      exit 1
    fi
  done
}

wait_port() {  # port [tenths of a second, default 100]
  local i
  for i in $(seq "${2:-100}"); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  echo "port $1 did not open" >&2
  return 1
}

ticks() {  # utime+stime of the processes named (all their threads), in clock ticks
  local p t=0
  for p in "$@"; do t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12+$13}'))); done
  echo "$t"
}
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
nfds() { ls "/proc/$1/fd" | wc -l; }
