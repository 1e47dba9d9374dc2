#!/usr/bin/env bash
# Regenerates gnes/proto/gnes_pb2*.py from proto/gnes.proto. The generated code is
# committed so that `pip install` needs no protoc; tests/test_proto.py checks it is current.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/gnes/proto}
python -m grpc_tools.protoc -I"$here/proto" --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" "$here/proto/gnes.proto"
# protoc writes a top-level import; inside the package it must be relative.
sed -i 's/^import gnes_pb2 as gnes__pb2/from . import gnes_pb2 as gnes__pb2/' "$out/gnes_pb2_grpc.py"
