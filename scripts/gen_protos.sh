#!/usr/bin/env bash
# Regenerate the committed protobuf code (and mypy stubs) from protos/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PATH="$(dirname "$(command -v "$PY")"):$PATH" "$PY" -m grpc_tools.protoc -Iprotos \
  --python_out=. --mypy_out=. --grpc_python_out=. --mypy_grpc_out=. $(find protos -name '*.proto' | sort)
