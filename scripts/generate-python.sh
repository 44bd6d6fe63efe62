#!/bin/sh
# The Python client's stubs, when protoc 3.21 and gRPC's Python plugin are here to make them
# (Debian: protobuf-compiler protobuf-compiler-grpc); clients/python/generate.sh says why that one.
set -eu
cd "$(dirname "$0")/.."
status=0
sh clients/python/generate.sh || status=$?
case $status in
  0) ;;
  3) echo "the Python stubs were not made" >&2 ;;
  *) exit "$status" ;;
esac
