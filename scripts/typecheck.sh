#!/bin/sh
# Type-checks the server and tests, the SDK (as Deno sees it), the dashboard and the browser
# tests: the four projects at once (each tsc is one thread), failing if any fails.
set -u
cd "$(dirname "$0")/.."
pids=""
for project in tsconfig.json sdk/tsconfig.json dashboard/tsconfig.json test/tsconfig.browser.json; do
  npx tsc -p "$project" &
  pids="$pids $!"
done
status=0
for pid in $pids; do
  wait "$pid" || status=1
done
exit $status
