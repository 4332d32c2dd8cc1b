"""Runs the layer's and the applications' tests under JAX and PyTorch.

Keras picks its backend once per process, so each backend gets a child
pytest run with KERAS_BACKEND set. Tests marked `tensorflow_only`
(SavedModel export) skip themselves there.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.harness import REPO_ROOT

# The applications on another backend: parity with the PyTorch reference
# (committed fixtures), a `fit` step, `.keras` round trip and `.keras` files
# across backends.
APPLICATION_TESTS = [
    "tests/applications/test_weights.py::test_parity_with_committed_torch_logits",
    "tests/applications/test_backends_applications.py",
]


def run_tests_on_backend(backend, paths):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend}
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
        cwd=REPO_ROOT,
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


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_layer_tests_pass_on_backend(backend):
    run_tests_on_backend(backend, ["tests/layers"])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_application_tests_pass_on_backend(backend):
    run_tests_on_backend(backend, APPLICATION_TESTS)
