"""Runs the layer's tests under the JAX and PyTorch backends.

Keras picks its backend once per process, so each backend gets a child
pytest run of tests/layers with KERAS_BACKEND set. Tests marked
`tensorflow_only` (SavedModel export) skip themselves there.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.harness import REPO_ROOT


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_layer_tests_pass_on_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/layers", "-q", "-p", "no:cacheprovider", "-x"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"{backend} run failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    assert " passed" in summary and "failed" not in summary, summary
