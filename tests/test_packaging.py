"""The installed distribution carries every module and data file.

The tests import keras_sge from the source tree, so a file that the wheel
forgets (package data above all) would go unnoticed; this test compares the
installed distribution's file list with the source tree instead.
"""

import importlib.metadata
import os
import sysconfig

import pytest

import keras_sge
from tests.harness import REPO_ROOT

SOURCE_DIR = os.path.join(REPO_ROOT, "keras_sge")


def source_files():
    for root, dirs, files in os.walk(SOURCE_DIR):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".pyc"):
                yield os.path.relpath(
                    os.path.join(root, name), REPO_ROOT
                ).replace(os.sep, "/")


def installed_distribution():
    """keras-sge as installed in site-packages; skips for editable installs."""
    # Look in site-packages only: a build leaves keras_sge.egg-info in the
    # source tree, which would otherwise answer for the installed wheel.
    site_packages = sysconfig.get_paths()["purelib"]
    found = list(
        importlib.metadata.distributions(name="keras-sge", path=[site_packages])
    )
    if not found:
        pytest.skip("keras-sge is not installed (run scripts/bootstrap.sh)")
    if not any(str(f).startswith("keras_sge/") for f in found[0].files or ()):
        pytest.skip(
            "keras-sge is installed in editable mode: no file list to check"
        )
    return found[0]


def test_installed_wheel_carries_every_module_and_data_file():
    installed = {str(f) for f in installed_distribution().files}
    missing = sorted(set(source_files()) - installed)
    assert not missing, f"files missing from the installed wheel: {missing}"


def test_version_matches_the_distribution_metadata():
    assert installed_distribution().version == keras_sge.__version__
