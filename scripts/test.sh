#!/usr/bin/env bash
# Sets up (if needed) and runs every check: lint, format, unit, end-to-end and compatibility tests,
# then the Docker Swarm test (the stack deployed on a real local swarm, see scripts/swarm.sh).
#
#   bash scripts/test.sh              everything (the swarm part needs root: it installs and starts its own dockerd)
#   bash scripts/test.sh ARGS...      only `pytest ARGS` after lint and format (e.g. tests/test_cli.py, -m "not swarm")
#   GNES_SKIP_SWARM=1 bash scripts/test.sh   everything but the swarm part (said so at the end, never silently)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
if [ $# -gt 0 ]; then
  exec bash scripts/check.sh "$@"
fi
# The swarm part runs even when the rest fails (one CI run then reports both); the exit code covers both.
suite=0
bash scripts/check.sh -m "not swarm" || suite=$?

if [ "${GNES_SKIP_SWARM:-0}" = 1 ]; then
  echo "test.sh | the Docker Swarm test was NOT run (GNES_SKIP_SWARM=1)" >&2
  exit $suite
fi
# Engine and image first (scripts/swarm.sh fails with a clear message when the engine cannot start);
# the engine is stopped at the end only if this run started it.
engine_was_up=0
DOCKER_HOST=unix://${GNES_DOCKER_RUN:-/run/gnes-docker}/docker.sock docker info >/dev/null 2>&1 && engine_was_up=1
[ $engine_was_up = 1 ] || trap 'bash scripts/swarm.sh stop' EXIT
started=$SECONDS
# Bounded: a fresh machine needs about 2 minutes here (apt, debootstrap, wheels, image).
timeout 1800 bash scripts/swarm.sh prepare
echo "test.sh | swarm engine and gnes:slim image ready in $((SECONDS - started)) s" >&2
swarm=0
timeout 2400 python -m pytest -q -m swarm tests/test_swarm.py tests/test_swarm_text.py || swarm=$?
[ $suite -eq 0 ] || echo "test.sh | the main suite FAILED (exit $suite)" >&2
[ $swarm -eq 0 ] || echo "test.sh | the Docker Swarm test FAILED (exit $swarm)" >&2
[ $suite -eq 0 ] && [ $swarm -eq 0 ]
