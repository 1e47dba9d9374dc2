#!/usr/bin/env bash
# Sets up (if needed) and runs every check: lint, format, unit, end-to-end and compatibility tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
bash scripts/check.sh "$@"
