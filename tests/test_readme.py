"""The README's and docs/'s Python examples run as written.

Each document's ```python blocks run in order, in one namespace per block,
in a folder holding the files the documents name: the converted weights,
an image, the main job's model and a KerasHub preset converted from a
checkpoint in the official layout.
"""

import os
import re

import numpy as np
import pytest

from tests.harness import REPO_ROOT


def python_blocks(document):
    with open(os.path.join(REPO_ROOT, document), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


# The README and every docs/ page that has Python examples.
DOCUMENTS = [
    document
    for document in ["README.md"]
    + sorted(
        os.path.join("docs", name)
        for name in os.listdir(os.path.join(REPO_ROOT, "docs"))
        if name.endswith(".md")
    )
    if python_blocks(document)
]


def test_the_readme_front_page_is_short():
    # A newcomer reads it in minutes; the rest lives in docs/.
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines"


def test_the_readme_and_the_docs_pages_have_examples():
    assert "README.md" in DOCUMENTS
    assert len(DOCUMENTS) >= 6, DOCUMENTS


@pytest.fixture(scope="module")
def named_files(tmp_path_factory):
    """A folder with every file the documents' examples read."""
    folder = tmp_path_factory.mktemp("readme")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        _make_named_files()
    finally:
        os.chdir(cwd)
    return folder


@pytest.mark.parametrize("document", DOCUMENTS)
def test_python_examples_run(document, named_files, monkeypatch):
    blocks = python_blocks(document)
    assert blocks, f"{document} has no python example"
    monkeypatch.chdir(named_files)
    for block in blocks:
        exec(compile(block, document, "exec"), {})


def _make_named_files():
    import keras

    from keras_sge.applications import SGEResNet18
    from keras_sge.applications import SGEResNet50

    # The converted SGE-ResNet-50 weights the applications examples load.
    SGEResNet50().save_weights("sge_resnet50.weights.h5")
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3))
    keras.utils.save_img("dog.jpg", image.astype("uint8"))
    # The main job's model: the same network, untrained.
    os.makedirs(os.path.join("runs", "sge_resnet18-digits"))
    SGEResNet18(input_shape=(32, 32, 3), classes=10).save(
        os.path.join("runs", "sge_resnet18-digits", "model.keras")
    )
    _make_preset("sge_resnet50_imagenet")


def _make_preset(directory):
    """What `python -m keras_sge.convert ... --preset` writes, from SGE-ResNet-50."""
    pytest.importorskip("keras_hub")
    pytest.importorskip("torch")
    from keras_sge.hub import convert_to_preset
    from tests.applications import parity

    model = parity.torch_model(
        50, 64, 1000, parity.random_state_dict(50, seed=11)
    )
    parity.save_official_checkpoint(model, "sge_resnet50.pth.tar")
    convert_to_preset("sge_resnet50.pth.tar", directory, verbose=False)
