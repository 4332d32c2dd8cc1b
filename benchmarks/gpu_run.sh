#!/bin/bash
# SGE's cost on a machine with an NVIDIA GPU, JAX and no TensorFlow: the
# Keras JAX backend's predict and fit steps (benchmarks/bench_runtimes.py),
# in mixed precision and float32. Keras and its two dependencies that such
# a machine may lack travel as wheels in .whl/:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform any -d .whl \
#     keras==3.15.1 namex optree
# Results go to $OUT (JSON), copied into benchmarks/results/ afterwards.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import keras, jax; print('keras', keras.__version__, 'jax', jax.__version__, jax.devices())" || exit 1
run() { timeout "$1" python3 -m benchmarks.bench_runtimes --runtimes jax_predict,jax_fit \
  --rounds 10 --reps 10 --threads 16 --out-dir "$OUT" "${@:2}"; }
run 280 --dtype mixed_bfloat16 --batch 32 --tag jax_gpu_mixed_bfloat16_b32
run 250 --dtype mixed_bfloat16 --batch 8 --tag jax_gpu_mixed_bfloat16_b8
# float32: run 280 --dtype float32 --batch 32 --tag jax_gpu_float32_b32
ls -la "$OUT"
