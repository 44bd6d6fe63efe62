#!/bin/sh
# The Python client's stubs, when grpcio-tools is here to make them (Debian: python3-grpc-tools).
set -eu
cd "$(dirname "$0")/.."
if PATH="/usr/bin:$PATH" python3 -c "import grpc_tools" 2>/dev/null; then
  PATH="/usr/bin:$PATH" sh clients/python/generate.sh
  find clients/python -name __pycache__ -exec rm -rf {} +
else
  echo "the Python stubs were not made: python3 has no grpc_tools (apt-get install python3-grpc-tools)" >&2
fi
