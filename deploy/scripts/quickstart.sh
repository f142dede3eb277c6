#!/usr/bin/env bash
# One command to see smtpgate work: installs what is missing, builds, starts a real local
# backend (a private Postfix with Dovecot SASL on 127.0.0.1:10025, user demo@example.com
# with password demo-password) and runs the gateway in the foreground with
# examples/quickstart.json. Ctrl-C stops everything it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
"$ROOT/deploy/scripts/install-deps.sh"
"$ROOT/deploy/scripts/build.sh" "$ROOT/build"

POLICY=$ROOT/examples/quickstart.json
"$ROOT/build/smtpgate" check -c "$POLICY"

BACKEND_LOG=$(mktemp /tmp/smtpgate-quickstart-backend.XXXXXX)
/usr/bin/python3 "$ROOT/tests/integration/postfix_backend.py" --port 10025 \
  --user demo@example.com:demo-password >"$BACKEND_LOG" 2>&1 &
BACKEND_PID=$!
GW_PID=
cleanup() {
  [ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
  kill "$BACKEND_PID" 2>/dev/null || true
  wait "$BACKEND_PID" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do
  grep -q '^PORT ' "$BACKEND_LOG" && break
  kill -0 "$BACKEND_PID" 2>/dev/null || { cat "$BACKEND_LOG" >&2; exit 1; }
  sleep 0.1
done
grep -q '^PORT ' "$BACKEND_LOG" || { echo "backend did not start" >&2; cat "$BACKEND_LOG" >&2; exit 1; }

cat <<TXT

smtpgate is starting in front of Postfix on 127.0.0.1:10025. Try, in another terminal:

  # the world delivers to a local domain (port 25's job): accepted
  swaks --server 127.0.0.1 --port 2525 --from friend@elsewhere.test --to demo@example.com
  # the world tries to relay: 554 5.7.1 Relay access denied, Postfix never sees it
  swaks --server 127.0.0.1 --port 2525 --from spam@elsewhere.test --to victim@gmail.test
  # submission with a login checked by the backend (port 587's job)
  swaks --server 127.0.0.1 --port 2587 --auth PLAIN --auth-user demo@example.com \\
        --auth-password demo-password --from demo@example.com --to someone@elsewhere.test
  # what would the policy do, without any network
  build/smtpgate explain -c examples/quickstart.json --client 192.0.2.7 --listener mx \\
        --mail-from spam@elsewhere.test --rcpt victim@gmail.test

Metrics: curl http://127.0.0.1:9025/metrics    Stop: Ctrl-C

TXT
"$ROOT/build/smtpgate" run -c "$POLICY" &
GW_PID=$!
wait "$GW_PID"
