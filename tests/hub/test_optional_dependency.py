"""KerasHub stays optional: only keras_sge.hub imports it.

That the rest of the package does not import it is checked in a fresh
process in tests/test_architecture.py, with PyTorch.
"""

import importlib
import sys

import pytest


def test_hub_without_keras_hub_says_what_to_install(monkeypatch):
    monkeypatch.setitem(
        sys.modules, "keras_hub", None
    )  # what a missing package looks like to import
    for name in [
        name
        for name in sys.modules
        if name.split(".")[:2] == ["keras_sge", "hub"]
    ]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r'pip install "keras-sge\[hub\]"'):
        importlib.import_module("keras_sge.hub")
