#!/usr/bin/env bash
# The main job: set up, start gnes locally, index 300 news documents with the real model,
# and print ranked answers to a few queries. Everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
python scripts/demo.py "$@"
