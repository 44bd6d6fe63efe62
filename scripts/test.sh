#!/bin/sh
# `npm test`: the checks (scripts/check.sh: proto lint, breaking changes, generated code, biome,
# types) and the test suite at once, the checks' output printed after the suite's; fails if
# either fails. Arguments go to vitest (`npm test -- test/cli.test.ts`).
set -u
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
sh scripts/check.sh >"$out" 2>&1 &
check=$!
npx vitest run "$@"
tests=$?
wait "$check"
checks=$?
if [ "$checks" -ne 0 ] || [ -s "$out" ]; then
  echo "> npm run check"
  cat "$out"
fi
if [ "$checks" -ne 0 ]; then
  echo "npm run check failed" >&2
  exit 1
fi
exit "$tests"
