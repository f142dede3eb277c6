#!/usr/bin/env bash
# One command to see smtpgate work: installs what is missing, builds the gateway alone
# (build-quickstart/, no tests), starts a real local backend (a private Postfix with Dovecot
# SASL, user demo@example.com with password demo-password) and runs the gateway in the
# foreground with examples/quickstart.json. Ctrl-C stops everything it started.
#
# Ports (all on 127.0.0.1), overridable: MX_PORT=2525 SUBMISSION_PORT=2587
# BACKEND_PORT=10025 ADMIN_PORT=9025, e.g. `MX_PORT=3525 deploy/scripts/quickstart.sh`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MX_PORT=${MX_PORT:-2525}
SUBMISSION_PORT=${SUBMISSION_PORT:-2587}
BACKEND_PORT=${BACKEND_PORT:-10025}
ADMIN_PORT=${ADMIN_PORT:-9025}
START=$SECONDS

"$ROOT/deploy/scripts/install-deps.sh"
BUILD=$ROOT/build-quickstart
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target smtpgate
BUILT=$((SECONDS - START))

POLICY=$(mktemp /tmp/smtpgate-quickstart.XXXXXX.json)
sed -e "s/127.0.0.1:2525/127.0.0.1:$MX_PORT/" -e "s/127.0.0.1:2587/127.0.0.1:$SUBMISSION_PORT/" \
    -e "s/127.0.0.1:10025/127.0.0.1:$BACKEND_PORT/" -e "s/127.0.0.1:9025/127.0.0.1:$ADMIN_PORT/" \
    "$ROOT/examples/quickstart.json" >"$POLICY"
"$BUILD/smtpgate" check -c "$POLICY"

BACKEND_LOG=$(mktemp /tmp/smtpgate-quickstart-backend.XXXXXX)
/usr/bin/python3 "$ROOT/tests/integration/postfix_backend.py" --port "$BACKEND_PORT" \
  --user demo@example.com:demo-password >"$BACKEND_LOG" 2>&1 &
BACKEND_PID=$!
GW_PID=
cleanup() {
  [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
  kill "$BACKEND_PID" 2>/dev/null || true
  wait "$BACKEND_PID" 2>/dev/null || true
  rm -f "$POLICY"
}
trap cleanup EXIT INT TERM
for _ in $(seq 1 300); do
  grep -q '^PORT ' "$BACKEND_LOG" && break
  kill -0 "$BACKEND_PID" 2>/dev/null || { cat "$BACKEND_LOG" >&2; exit 1; }
  sleep 0.1
done
grep -q '^PORT ' "$BACKEND_LOG" || { echo "backend did not start" >&2; cat "$BACKEND_LOG" >&2; exit 1; }

"$BUILD/smtpgate" run -c "$POLICY" &
GW_PID=$!
# The lines below are printed once the gateway accepts connections, not before.
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$MX_PORT") 2>/dev/null && break
  kill -0 "$GW_PID" 2>/dev/null || { echo "the gateway did not start" >&2; exit 1; }
  sleep 0.1
done

cat <<TXT

smtpgate accepts on 127.0.0.1:$MX_PORT (mx) and :$SUBMISSION_PORT (submission), in front of
Postfix on 127.0.0.1:$BACKEND_PORT; built in ${BUILT} s, ready $((SECONDS - START)) s after the start.
Try, in another terminal:

  # the world delivers to a local domain (port 25's job): accepted
  swaks --server 127.0.0.1 --port $MX_PORT --from friend@elsewhere.test --to demo@example.com
  # the world tries to relay: 554 5.7.1 Relay access denied, Postfix never sees it
  swaks --server 127.0.0.1 --port $MX_PORT --from spam@elsewhere.test --to victim@gmail.test
  # submission with a login checked by the backend (port 587's job)
  swaks --server 127.0.0.1 --port $SUBMISSION_PORT --auth PLAIN --auth-user demo@example.com \\
        --auth-password demo-password --from demo@example.com --to someone@elsewhere.test
  # what would the policy do, without any network
  $BUILD/smtpgate explain -c $ROOT/examples/quickstart.json --client 192.0.2.7 --listener mx \\
        --mail-from spam@elsewhere.test --rcpt victim@gmail.test

Metrics: curl http://127.0.0.1:$ADMIN_PORT/metrics    Stop: Ctrl-C

TXT
wait "$GW_PID"
