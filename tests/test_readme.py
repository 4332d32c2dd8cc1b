"""The README's Python examples run as written."""

import os
import re

from tests.harness import REPO_ROOT


def python_blocks():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    _make_files_the_readme_names()
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def _make_files_the_readme_names():
    """The converted SGE-ResNet-50 weights the fine-tuning example starts from."""
    from keras_sge.applications import SGEResNet50

    SGEResNet50().save_weights("sge_resnet50.weights.h5")
