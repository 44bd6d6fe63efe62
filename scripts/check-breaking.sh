#!/bin/sh
# Fails when proto/ breaks the public contract of the main branch (buf breaking, FILE
# rules): a field renumbered, retyped or removed, a service or message renamed.
set -eu
cd "$(dirname "$0")/.."
if ! git rev-parse --verify --quiet main >/dev/null 2>&1; then
  echo "no main branch to compare the proto files with (not a git clone?): skipping buf breaking"
  exit 0
fi
npx buf breaking --against '.git#branch=main'
echo "proto files keep main's contract"
