#!/bin/bash
# The GPU benchmarks on a machine with an NVIDIA GPU, JAX and no TensorFlow
# (the Keras JAX backend, mixed precision). Keras and its two dependencies
# that such a machine may lack travel as wheels in .whl/:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform any -d .whl \
#     keras==3.15.1 namex optree
# Results go to $OUT (JSON), copied into benchmarks/results/ afterwards.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import keras, jax; print('keras', keras.__version__, 'jax', jax.__version__, jax.devices())" || exit 1
timeout 75 python3 -m benchmarks.bench_layer --dtype mixed_bfloat16 --rounds 7 --reps 50 --out-dir "$OUT" --no-report
timeout 60 python3 -m benchmarks.bench_layer --dtype mixed_float16 --rounds 7 --reps 50 --out-dir "$OUT" --no-report
timeout 210 python3 -m benchmarks.bench_resnet --dtype mixed_bfloat16 --no-before --batches 1,8,32 --train-batch 32 \
  --rounds 5 --reps 1:20,8:20,32:10 --out-dir "$OUT" --no-report
ls -la "$OUT"
