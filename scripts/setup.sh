#!/usr/bin/env bash
# Sets up gnes on a fresh machine: a virtualenv in .venv with gnes and everything it uses,
# and .venv-gnes047 holding the original GNES 0.0.47 client (for the wire-compatibility test).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch is pinned exactly: this machine serves these wheels from local disk.
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e '.[all,test]'

# tests/test_page.py drives a real browser: Debian's chromium and its driver (root, apt).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q chromium chromium-driver || { apt-get update -q && apt-get install -y -q chromium chromium-driver; }
  else
    echo "setup: chromium and chromium-driver are missing (apt-get install chromium chromium-driver, as root)" >&2
  fi
fi

# Fashion-MNIST (tests/test_image_chain.py, bench/recall.py): Debian's dataset-fashion-mnist (root, apt).
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }
  else
    echo "setup: dataset-fashion-mnist is missing (apt-get install dataset-fashion-mnist, as root)" >&2
  fi
fi

# GNES 0.0.47 needs Cython < 3 to build and protobuf < 3.21 to run; it lives in its own venv.
if [ ! -x .venv-gnes047/bin/gnes ]; then
  "$PY" -m venv .venv-gnes047
  constraint=$(mktemp)
  echo 'cython<3' > "$constraint"
  PIP_CONSTRAINT="$constraint" .venv-gnes047/bin/python -m pip install -q gnes==0.0.47
  .venv-gnes047/bin/python -m pip install -q 'protobuf<3.21'
  rm -f "$constraint"
fi
echo "gnes is set up: . .venv/bin/activate"
