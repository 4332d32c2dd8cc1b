"""Runs the multi-backend tests again under JAX and PyTorch.

The layers, the applications and channels_first (which TensorFlow's CPU
convolutions cannot run) on both, ResNet-50's parity on PyTorch only;
`add_attention` on PyTorch.

Keras picks its backend once per process, so each backend gets one child
pytest run with KERAS_BACKEND set. Tests marked `tensorflow_only`
(SavedModel export) skip themselves there.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests import harness

# The applications on another backend: parity with the PyTorch reference
# (committed fixtures), a `fit` step, `.keras` round trip and `.keras` files
# across backends.
PARITY = "tests/applications/test_weights.py::test_parity_with_committed_torch_logits"
ACROSS_BACKENDS = "tests/applications/test_backends_applications.py"
APPLICATION_TESTS = [PARITY, ACROSS_BACKENDS]
# On JAX, whose XLA compiles every new network, parity for ResNet-18 only:
# the bottleneck blocks of ResNet-50 are the same Keras layers, whose
# numerics the layer tests and ResNet-18 check there.
JAX_APPLICATION_TESTS = [f"{PARITY}[18]", ACROSS_BACKENDS]
# `add_attention` on another backend: insertion, `.keras` files, `fit`.
SURGERY_TESTS = [
    "tests/surgery/test_add_attention_model.py",
    "tests/surgery/test_add_attention.py::"
    "test_same_network_at_insertion_with_one_sge_per_residual_add[mobilenetv2]",
]
# What TensorFlow's CPU kernels cannot run (channels_first convolutions).
INSPECT_TESTS = [
    "tests/inspect/test_inspect.py::"
    "test_channels_first_maps_have_the_channels_first_layout",
]


def run_tests_on_backend(backend, paths):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, **harness.backend_env(backend)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *paths,
            "-q",
            "-p",
            "no:cacheprovider",
            "-x",
            # One process: this test already runs in one of the workers.
            "-n",
            "0",
        ],
        cwd=harness.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    summary = (
        result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    )
    assert result.returncode == 0, (
        f"{backend} run failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    )
    assert " passed" in summary and "failed" not in summary, summary


# The layer, application and channels_first tests above run on both
# (ResNet-50's parity on PyTorch only);
# `add_attention`'s, whose graph rewriting is backend-independent Keras
# code, on PyTorch, whose eager ops cost a fraction of JAX's per-model XLA
# compilation on a CPU.
BACKEND_TESTS = {
    "jax": ["tests/layers", *JAX_APPLICATION_TESTS, *INSPECT_TESTS],
    "torch": [
        "tests/layers",
        *APPLICATION_TESTS,
        *SURGERY_TESTS,
        *INSPECT_TESTS,
    ],
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backend", sorted(BACKEND_TESTS))
def test_layer_application_and_surgery_tests_pass_on_backend(backend):
    # One child per backend: one start-up, one collection, and the eager
    # ops the tests share compiled once.
    run_tests_on_backend(backend, BACKEND_TESTS[backend])
