"""examples/visualize.py: end to end, with each kind of weights, and its errors."""

import importlib.util
import os
import re

import keras
import numpy as np
import pytest
from PIL import Image

from tests import harness
from tests.inspect.helpers import assert_png_not_blank
from tests.inspect.helpers import random_images
from tests.inspect.helpers import tiny_sge_model

SCRIPT = os.path.join(harness.REPO_ROOT, "examples", "visualize.py")


@pytest.fixture(scope="module")
def visualize():
    spec = importlib.util.spec_from_file_location("visualize_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny .keras model (32x32 inputs), a model without SGE, an image."""
    root = tmp_path_factory.mktemp("visualize")
    names = {
        "tiny": "tiny.keras",
        "plain": "plain.keras",
        "photo": "photo.png",
        "not_an_image": "not_an_image.jpg",
    }
    paths = {key: str(root / name) for key, name in names.items()}
    tiny_sge_model(image_size=32).save(paths["tiny"])
    keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3)]
    ).save(paths["plain"])
    Image.fromarray(random_images(1, image_size=40)[0].astype("uint8")).save(
        paths["photo"]
    )
    with open(paths["not_an_image"], "w") as f:
        f.write("text")
    return paths


def assert_figures(out, names):
    assert sorted(os.listdir(out)) == sorted(names)
    for name in names:
        assert_png_not_blank(os.path.join(out, name))


@pytest.mark.timeout(120)
def test_end_to_end_on_a_keras_model_file_in_a_fresh_process(files, tmp_path):
    # No IMAGE: scikit-learn's two sample photos.
    out = str(tmp_path / "figures")
    argv = [
        SCRIPT,
        "--weights",
        files["tiny"],
        "--out",
        out,
        "--groups",
        "2",
        "--dpi",
        "50",
    ]
    stdout = harness.run_in_fresh_process(
        f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path({SCRIPT!r}, run_name='__main__')",
        timeout=110,
    )
    names = [
        f"{photo}_{layer}.png"
        for photo in ("china", "flower")
        for layer in ("block1_sge", "block2_sge")
    ]
    names.append("activation_histograms.png")
    assert_figures(out, names)
    assert f"Wrote 5 figures to {out}:" in stdout
    for name in names:
        assert os.path.join(out, name) in stdout


@pytest.mark.timeout(60)
def test_chosen_images_and_layers(visualize, files, tmp_path, capsys):
    out = str(tmp_path / "figures")
    visualize.main(
        [
            files["photo"],
            "--weights",
            files["tiny"],
            "--out",
            out,
            "--layers",
            "stem_sge",
        ]
    )
    assert_figures(out, ["photo_stem_sge.png", "activation_histograms.png"])
    assert f"Wrote 2 figures to {out}:" in capsys.readouterr().out


@pytest.mark.timeout(120)
@pytest.mark.needs_torch
def test_official_pytorch_checkpoint(
    visualize, files, tmp_path, capsys, monkeypatch
):
    torch = pytest.importorskip("torch")
    from keras_sge.testing import torch_reference

    torch.manual_seed(0)
    reference = torch_reference.sge_resnet18(num_classes=10)
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, torch_reference.SpatialGroupEnhance):
                module.weight.normal_(0.0, 1.0)  # gamma: gates that vary
    # The official layout: a training checkpoint of a DataParallel model.
    state_dict = {
        f"module.{key}": value for key, value in reference.state_dict().items()
    }
    path = str(tmp_path / "sge_resnet18.pth.tar")
    torch.save({"epoch": 1, "state_dict": state_dict, "best_acc": 0.0}, path)

    loaded = []  # the model main() builds, to check its weights
    load_model = visualize.load_model
    monkeypatch.setattr(
        visualize,
        "load_model",
        lambda *args: loaded.append(load_model(*args)) or loaded[0],
    )
    out = str(tmp_path / "figures")
    visualize.main(
        [
            files["photo"],
            "--weights",
            path,
            "--out",
            out,
            "--image-size",
            "64",
            "--dpi",
            "40",
        ]
    )
    assert_figures(
        out,
        [
            "photo_conv5_block1_sge.png",
            "photo_conv5_block2_sge.png",
            "activation_histograms.png",
        ],
    )
    assert (
        "SGE-ResNet-18" in capsys.readouterr().out
    )  # the depth comes from the checkpoint
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(
            loaded[0].get_layer("conv5_block2_sge").gamma
        ),
        state_dict["module.layer4.1.sge.weight"].numpy().ravel(),
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "argv, message",
    [
        (["missing.jpg", "--weights", "{tiny}"], "no such file: missing.jpg"),
        (["--weights", "missing.pth.tar"], "no such file: missing.pth.tar"),
        (
            ["{not_an_image}", "--weights", "{tiny}"],
            "cannot read .*not_an_image.jpg as an image",
        ),
        (
            ["--weights", "{tiny}", "--layers", "block1_sge,nope"],
            "No SGE layer named 'nope'",
        ),
        (
            ["--weights", "{tiny}", "--image-size", "64"],
            "--image-size 64 does not fit the model, which takes 32x32",
        ),
        (["--weights", "{plain}"], "has no SGE layer"),
        (
            ["--weights", "{tiny}", "--groups", "0"],
            "--groups must be at least 1",
        ),
    ],
)
def test_bad_arguments_are_one_line_errors(
    visualize, files, tmp_path, argv, message
):
    argv = [arg.format(**files) for arg in argv] + [
        "--out",
        str(tmp_path / "out"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        visualize.main(argv)
    error = exit_info.value.code
    assert (
        isinstance(error, str)
        and "\n" not in error
        and error.startswith("visualize.py: error: ")
    )
    assert re.search(message, error), error
    assert not os.path.exists(tmp_path / "out")


def test_usage_errors_are_one_line(visualize, capsys):
    with pytest.raises(SystemExit) as exit_info:
        visualize.main(["--out", "out", "--depth", "7"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "visualize.py: error: argument --depth: invalid choice: 7 "
        "(choose from 18, 34, 50, 101, 152)"
    ]
