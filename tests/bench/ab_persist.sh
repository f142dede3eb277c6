#!/bin/bash
# Side-by-side CPU per message on persistent sessions (the harness's persist-1k load):
# the gateway logging to a file, the same binary logging to /dev/null, and nginx's mail
# proxy, all in front of one smtp-sink, runs interleaved. The file-vs-/dev/null pair is
# the price of the log line the spec wants written as it happens.
#
#   tests/bench/ab_persist.sh [reps]        (default 5; ~20 s per rep)
#
# Ports (127.0.0.1 only): sink 2546, gateway 2623 (file log), 2625 (/dev/null), nginx 2624
# with its auth_http on 2681. Everything is stopped by PID at exit. Needs smtp-sink,
# smtp-source, nginx with libnginx-mod-mail, and a Release build in build-bench/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BINARY:-$root/build-bench/smtpgate}
reps=${1:-5}
msgs=${MSGS:-20000}
W=$(mktemp -d /tmp/smtpgate-ab.XXXXXX)
work=$W
[ -x "$bin" ] || { echo "build first: no $bin (cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release)" >&2; exit 1; }
# shellcheck source=tests/bench/lib.sh
. "$root/tests/bench/lib.sh"
require_free_ports 2546 2623 2624 2625 2681

policy() {  # port log-path
  sed -e "s#127.0.0.1:2603#127.0.0.1:$1#" -e "s#127.0.0.1:2526#127.0.0.1:2546#" \
      -e "s#/tmp/smtpgate-bench.log#$2#" "$root/tests/bench/gateway-bench.json"
}
policy 2623 "$work/gateway.log" >"$work/file.json"
policy 2625 /dev/null >"$work/null.json"
mkdir -p "$work/nginx/tmp"
cat >"$work/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_mail_module.so;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work/nginx/tmp/b; proxy_temp_path $work/nginx/tmp/p;
  fastcgi_temp_path $work/nginx/tmp/f; uwsgi_temp_path $work/nginx/tmp/u; scgi_temp_path $work/nginx/tmp/s;
  server { listen 127.0.0.1:2681; location = /auth { add_header Auth-Status OK;
    add_header Auth-Server 127.0.0.1; add_header Auth-Port 2546; return 204; } } }
mail { server_name nginx-bench; auth_http 127.0.0.1:2681/auth;
  server { listen 127.0.0.1:2624; protocol smtp; smtp_auth none; xclient off;
    smtp_capabilities PIPELINING 8BITMIME "SIZE 104857600"; } }
EOF

smtp-sink -u nobody -m 512 127.0.0.1:2546 1024 >"$work/sink.log" 2>&1 & pids+=($!)
"$bin" run -c "$work/file.json" >"$work/gw-file.out" 2>&1 & gw_file=$!; pids+=($gw_file)
"$bin" run -c "$work/null.json" >"$work/gw-null.out" 2>&1 & gw_null=$!; pids+=($gw_null)
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" -g 'daemon off;' \
  >"$work/nginx.out" 2>&1 & ngx=$!; pids+=($ngx)
for p in 2546 2623 2624 2625; do wait_port "$p"; done

hz=$(getconf CLK_TCK)
declare -A res
for r in $(seq "$reps"); do
  for t in gw-file gw-null nginx; do
    case $t in
      gw-file) port=2623; procs=$gw_file ;;
      gw-null) port=2625; procs=$gw_null ;;
      nginx) port=2624; procs="$ngx $(pgrep -P "$ngx" | tr '\n' ' ')" ;;
    esac
    # shellcheck disable=SC2086
    before=$(ticks $procs)
    timeout -k 5 120 smtp-source -s 20 -d -l 1024 -m "$msgs" -f bench@example.com \
      -t sink@example.com "127.0.0.1:$port"
    # shellcheck disable=SC2086
    after=$(ticks $procs)
    us=$(( (after - before) * 1000000 / hz * 10 / msgs ))  # tenths of a µs
    res[$t]+="$us "
    printf 'rep %d %-8s %d.%d us/msg\n' "$r" "$t" $((us / 10)) $((us % 10))
  done
done
for t in gw-file gw-null nginx; do
  m=$(echo "${res[$t]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf 'median %-8s %d.%d us/msg\n' "$t" $((m / 10)) $((m % 10))
done
