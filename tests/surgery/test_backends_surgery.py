"""`add_attention` under JAX and PyTorch: insertion, `.keras` files, `fit`.

Keras picks its backend once per process, so each backend gets a child
pytest run (see tests/test_backends.py).
"""

import pytest

from tests.test_backends import run_tests_on_backend

SURGERY_TESTS = [
    "tests/surgery/test_add_attention_model.py",
    "tests/surgery/test_add_attention.py::"
    "test_same_network_at_insertion_with_one_sge_per_residual_add[mobilenetv2]",
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_add_attention_tests_pass_on_backend(backend):
    run_tests_on_backend(backend, SURGERY_TESTS)
