#!/bin/sh
# Builds the AddressSet benchmark in Release (its own build directory) and runs it.
# Usage: tests/bench/run_address_set.sh [entries]   (default 1000000)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build="$root/build-bench"
cmake -S "$root" -B "$build" -G "Unix Makefiles" -DCMAKE_BUILD_TYPE=Release >/dev/null
make -C "$build" -j2 bench_address_set >/dev/null
exec "$build/tests/bench_address_set" "$@"
