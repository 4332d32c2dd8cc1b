"""Test configuration shared by every test module."""

import os

# Quieter TensorFlow logs in the test output; must be set before TF loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "tensorflow_only: needs the TensorFlow backend (SavedModel, tf.distribute)",
    )
    config.addinivalue_line(
        "markers", "needs_torch: compares with the PyTorch reference"
    )
    config.addinivalue_line(
        "markers",
        "slow: runs examples/train.py in subprocesses (tens of seconds)",
    )


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(
        reason=f"TensorFlow-only feature; backend is {keras.backend.backend()}"
    )
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def reset_keras_state():
    """Each test starts from the default dtype policy and a fresh graph."""
    yield
    keras.config.set_dtype_policy("float32")
    # Without a forced full garbage collection: with TensorFlow, JAX and
    # PyTorch loaded it costs about half a second per test, and Python's own
    # collector frees the same objects soon after.
    keras.backend.clear_session(free_memory=False)
