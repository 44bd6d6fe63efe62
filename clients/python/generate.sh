#!/bin/sh
# Generates the Python stubs of proto/plinth/v1 into plinth/v1 (this package's `plinth`
# namespace), with grpcio-tools (pip install grpcio-tools, or Debian's python3-grpc-tools).
# `npm test` checks that the committed stubs are what this makes (scripts/check-generated.sh).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
mkdir -p "$out"
rm -rf "$out/plinth"
python3 -m grpc_tools.protoc -I "$here/../../proto" --python_out="$out" --grpc_python_out="$out" "$here"/../../proto/plinth/v1/*.proto
