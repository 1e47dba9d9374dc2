#!/usr/bin/env bash
# The one check script, run the same way locally and in CI: lint, format, then the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check gnes tests bench scripts
ruff format --check gnes tests bench scripts
python -m pytest -q "$@"
