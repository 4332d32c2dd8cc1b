"""KerasHub stays optional: only keras_sge.hub imports it."""

import importlib
import sys

import pytest

from tests import harness


def test_core_package_does_not_import_keras_hub():
    harness.run_in_fresh_process(
        """
        import sys
        import keras_sge, keras_sge.applications, keras_sge.convert
        loaded = sorted(name for name in sys.modules if name.startswith("keras_hub"))
        assert not loaded, loaded
        """
    )


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
