#!/bin/sh
# Fails when gen/ differs from what `npm run generate` produces from proto/.
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npx buf generate -o "$tmp"
if ! diff -r gen "$tmp/gen" >/dev/null; then
  diff -r gen "$tmp/gen" | head -20
  echo "generated code in gen/ is stale: run npm run generate and commit the result" >&2
  exit 1
fi
echo "generated code is up to date"
