#!/usr/bin/env bash
# Sets up everything on a fresh machine: a virtual environment in .venv with
# keras_sge built and installed as a wheel (not editable, so missing package
# data shows up), with every extra, and the CPU build of PyTorch.
#
#   bash scripts/bootstrap.sh      # idempotent; re-run after pulling
#
# Environment: PYTHON (default python3), VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip build

# An unpinned torch from PyPI is a multi-GB CUDA build. Prefer the CPU build:
# the local wheel this project's CI machines keep (torch 2.13.0+cpu, found
# through pip's find-links), else PyTorch's CPU index, else PyPI's default.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  pip install -q "torch==2.13.0+cpu" 2>/dev/null \
    || pip install -q --retries 1 --timeout 20 torch --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple \
    || pip install -q "torch>=2.5"
fi

rm -rf dist
"$VENV/bin/python" -m build --wheel --outdir dist . >/dev/null
wheel=$(ls dist/keras_sge-*.whl)
pip install -q --force-reinstall --no-deps "$wheel"
pip install -q "${wheel}[all]"
"$VENV/bin/python" -c "import keras_sge, keras, tensorflow as tf; print('keras_sge', keras_sge.__version__, '| keras', keras.__version__, '| tensorflow', tf.__version__)" 2>/dev/null
