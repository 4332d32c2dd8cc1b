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

# PyPI's torch for Linux is a multi-GB CUDA build. Pin the tested release's
# CPU build (+cpu), which PyTorch's CPU index has (and pip's find-links may);
# that index is only an extra one, and where it is unreachable pip gives up
# on it at once instead of retrying for minutes. Elsewhere PyPI's wheels are
# CPU builds. torch alone (--no-deps): its dependencies come with the extras
# below, with pip's usual retries. An installed torch is kept.
case "$(uname -s)" in
  Linux) torch_req="torch==2.13.0+cpu" ;;
  *) torch_req="torch==2.13.0" ;;
esac
if ! "$VENV/bin/python" -c "import importlib.metadata as m; m.version('torch')" 2>/dev/null; then
  pip install -q --no-deps --retries 0 --timeout 10 \
    --extra-index-url https://download.pytorch.org/whl/cpu "$torch_req" || {
    echo "bootstrap: no $torch_req found; install a CPU build of torch into $VENV first" >&2
    exit 1
  }
fi

rm -rf dist
"$VENV/bin/python" -m build --wheel --outdir dist . >/dev/null
wheel=$(ls dist/keras_sge-*.whl)
pip install -q --force-reinstall --no-deps "$wheel"
pip install -q "${wheel}[all]"
"$VENV/bin/python" -c "import keras_sge, keras, tensorflow as tf; print('keras_sge', keras_sge.__version__, '| keras', keras.__version__, '| tensorflow', tf.__version__)" 2>/dev/null
