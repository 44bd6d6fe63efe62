#!/bin/sh
# `npm run check`: the proto lint, the breaking-change and generated-code checks, biome and the
# type check, all at once (none writes what another reads; the type check alone takes most of
# the time), each one's output printed whole once it ends; fails if any fails.
set -u
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pids=""
for script in lint:proto check:breaking check:generated lint typecheck; do
  (npm run -s "$script" >"$out/$script" 2>&1; echo $? >"$out/$script.status") &
  pids="$pids $!"
done
for pid in $pids; do
  wait "$pid"
done
status=0
for script in lint:proto check:breaking check:generated lint typecheck; do
  code=$(cat "$out/$script.status")
  if [ -s "$out/$script" ] || [ "$code" -ne 0 ]; then
    echo "> npm run $script"
    cat "$out/$script"
  fi
  if [ "$code" -ne 0 ]; then
    echo "npm run $script failed (exit $code)" >&2
    status=1
  fi
done
exit $status
