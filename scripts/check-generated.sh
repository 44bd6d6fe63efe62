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
# The Python client's stubs, when grpcio-tools is here to make them (Debian: python3-grpc-tools).
if PATH="/usr/bin:$PATH" python3 -c "import grpc_tools" 2>/dev/null; then
  PATH="/usr/bin:$PATH" sh clients/python/generate.sh "$tmp/python"
  if ! diff -r clients/python/plinth "$tmp/python/plinth" >/dev/null; then
    diff -r clients/python/plinth "$tmp/python/plinth" | head -20
    echo "the Python stubs in clients/python/plinth are stale: run clients/python/generate.sh and commit the result" >&2
    exit 1
  fi
else
  echo "the Python stubs were not checked: python3 has no grpc_tools (apt-get install python3-grpc-tools)"
fi
echo "generated code is up to date"
