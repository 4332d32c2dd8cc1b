"""Test configuration shared by every test module."""

import atexit
import gc
import os

from examples.training import cli

# The example scripts' TensorFlow settings (quieter logs, oneDNN's CPU
# kernels on every x86 CPU), set before TensorFlow loads: the tests and
# every subprocess they start (inheriting the environment) run the same
# kernels as the scripts, on any CI machine.
cli.tensorflow_defaults()
# The two test workers (setup.cfg's `-n 2`) share the cores: half of them
# each for TensorFlow's and PyTorch's CPU kernels, here and in every
# process the tests start. Threads beyond the cores spin while the other
# worker runs: measured on two cores, the PyTorch backend's tests took 30%
# more CPU with PyTorch's default OpenMP threads, and two TensorFlow test
# modules side by side 1-5% more with TensorFlow's default pool.
THREADS_PER_WORKER = str(max(1, (os.cpu_count() or 2) // 2))
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", THREADS_PER_WORKER)
os.environ.setdefault("OMP_NUM_THREADS", THREADS_PER_WORKER)

import pytest  # noqa: E402

# A test process ends holding the objects of hundreds of models, and
# CPython's last garbage collections over them kept each test worker alive
# for seconds after its last test, the cores idle. At exit, frozen objects
# are left out of those collections (exit handlers still run); the
# process's memory is freed when it ends.
atexit.register(gc.freeze)
# Keras (and with it TensorFlow) is imported inside the hooks below, not
# here: pytest-xdist's controller process loads this file too and runs no
# test, and importing TensorFlow there delayed the workers' start by
# about 5 s.

# The modules that run longest in a full run (half a minute or more),
# longest first; the rest follow in collection order. setup.cfg's
# `--dist loadscope --no-loadscope-reorder` hands whole modules to the two
# workers in this order, so the minutes-long ones start at once and the
# short ones fill in at the end: both workers finish together.
# (pytest-xdist's own order, most tests first, started the two-test
# backend module last and left one worker idle for minutes.)
LONGEST_FIRST = (
    "tests/examples/test_train_distributed.py",
    "tests/export/test_export.py",
    "tests/test_backends.py",
    "tests/examples/test_train_finetune.py",
    "tests/test_readme.py",
    "tests/applications/test_resnet.py",
    "tests/examples/test_train_resume.py",
    "tests/test_docstrings.py",
    "tests/applications/test_weights.py",
    "tests/study/test_ablation.py",
    "tests/surgery/test_add_attention.py",
    "tests/examples/test_train_data_and_export.py",
)


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
        "slow: trains with an example script (tens of seconds)",
    )


def _check_longest_first_exist(root):
    missing = [
        path
        for path in LONGEST_FIRST
        if not os.path.exists(os.path.join(root, path))
    ]
    if missing:
        raise pytest.UsageError(
            f"tests/conftest.py's LONGEST_FIRST names modules that do not "
            f"exist: {missing}"
        )


def _start_order(item):
    module = item.nodeid.split("::")[0]
    if module in LONGEST_FIRST:
        return LONGEST_FIRST.index(module)
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items):
    _check_longest_first_exist(str(config.rootpath))
    items.sort(key=_start_order)  # stable: each module keeps its own order
    import keras

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
    import keras

    yield
    keras.config.set_dtype_policy("float32")
    # Without a forced full garbage collection: with TensorFlow, JAX and
    # PyTorch loaded it costs about half a second per test, and Python's own
    # collector frees the same objects soon after.
    keras.backend.clear_session(free_memory=False)
