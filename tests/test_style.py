"""ruff's lint and format checks (configured in pyproject.toml) pass."""

import pathlib
import shutil
import subprocess
import sys

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def ruff(*args):
    executable = shutil.which(
        "ruff", path=str(pathlib.Path(sys.executable).parent)
    ) or shutil.which("ruff")
    if executable is None:
        pytest.skip("ruff is not installed (it comes with the `test` extra)")
    return subprocess.run(
        [executable, *args], cwd=REPOSITORY, capture_output=True, text=True
    )


def test_ruff_check_passes():
    result = ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_check_passes():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
