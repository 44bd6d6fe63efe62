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
# The Python client's stubs, when protoc 3.21 and gRPC's Python plugin are here to make them
# (Debian: protobuf-compiler protobuf-compiler-grpc; clients/python/generate.sh says why that one).
status=0
sh clients/python/generate.sh "$tmp/python" || status=$?
case $status in
  0)
    if ! diff -r clients/python/plinth "$tmp/python/plinth" >/dev/null; then
      diff -r clients/python/plinth "$tmp/python/plinth" | head -20
      echo "the Python stubs in clients/python/plinth are stale: run npm run generate and commit the result" >&2
      exit 1
    fi
    ;;
  3) echo "the Python stubs were not checked" ;;
  *) exit "$status" ;;
esac
echo "generated code is up to date"
