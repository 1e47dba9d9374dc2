#!/usr/bin/env bash
# The one check script, run the same way locally and in CI: lint, format, then the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
paths=()
for p in gnes tests bench scripts; do [ -d "$p" ] && paths+=("$p"); done
ruff check "${paths[@]}"
ruff format --check "${paths[@]}"
python -m pytest -q "$@"
