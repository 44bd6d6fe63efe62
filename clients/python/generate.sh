#!/bin/sh
# Generates the Python stubs of proto/plinth/v1 into plinth/v1 (this package's `plinth`
# namespace) with protoc 3.21 and gRPC's Python plugin: Debian 12's and 13's `apt-get install
# protobuf-compiler protobuf-compiler-grpc` (PROTOC and GRPC_PYTHON_PLUGIN name others).
# protoc 3.21's stubs load the serialized file into the descriptor pool and build their
# classes with google.protobuf.internal.builder, which every protobuf from 3.20 to 7.x
# accepts. A newer protoc's stubs refuse a runtime older than itself; an older one's (like
# Debian's grpcio-tools 1.14) fail on protobuf 4.21+: "Descriptors cannot be created directly".
# Exits 3, saying what to install, when the tools are missing.
# `npm test` checks that the committed stubs are what this makes (scripts/check-generated.sh).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
protoc=${PROTOC:-protoc}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || true)}
version=$("$protoc" --version 2>/dev/null || true)
case "$version" in
  "libprotoc 3.21."*) ;;
  *)
    echo "the Python stubs need protoc 3.21 (found: ${version:-none}): apt-get install protobuf-compiler, or set PROTOC" >&2
    exit 3
    ;;
esac
if [ -z "$plugin" ]; then
  echo "the Python stubs need grpc_python_plugin: apt-get install protobuf-compiler-grpc, or set GRPC_PYTHON_PLUGIN" >&2
  exit 3
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/plinth"
cd "$here/../.."
"$protoc" -I proto --python_out="$out" --plugin=protoc-gen-grpc_python="$plugin" --grpc_python_out="$out" proto/plinth/v1/*.proto
