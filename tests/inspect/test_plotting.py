"""keras_sge.plotting writes real, non-blank figures."""

import sys

import numpy as np
import pytest

from keras_sge import inspect
from keras_sge import plotting
from tests.inspect.helpers import assert_png_not_blank
from tests.inspect.helpers import random_images
from tests.inspect.helpers import tiny_sge_model


@pytest.fixture(scope="module")
def images_and_maps():
    images = random_images(2)
    return images, inspect.inspect_sge(
        tiny_sge_model(), images / 255.0, layers="all"
    )


@pytest.mark.timeout(60)
def test_sge_maps_grid(images_and_maps, tmp_path):
    images, maps = images_and_maps
    figure = plotting.plot_sge_maps(
        images[1], maps["block1_sge"], index=1, groups=3
    )
    # One image column spanning the rows, then 3 groups x (before, gate, after).
    assert len(figure.axes) == 1 + 3 * 3
    chosen = inspect.most_selective_groups(maps["block1_sge"], index=1, count=3)
    assert (
        figure.axes[1]
        .get_title()
        .startswith(f"group {chosen[0]}: norm before SGE")
    )
    path = tmp_path / "maps.png"
    figure.savefig(path, dpi=60)
    assert_png_not_blank(path)


@pytest.mark.timeout(60)
def test_sge_maps_overlays_match_the_image_and_maps(images_and_maps):
    images, maps = images_and_maps
    # A channels-first image is accepted; explicit groups are kept in order.
    figure = plotting.plot_sge_maps(
        np.transpose(images[0], (2, 0, 1)), maps["stem_sge"], groups=[3, 0]
    )
    gate_axes = figure.axes[2]  # row 0 (group 3), gate column
    background, overlay = gate_axes.get_images()
    assert background.get_array().shape == (16, 16, 3)
    np.testing.assert_array_equal(
        overlay.get_array(), maps["stem_sge"].spatial("gate", 0, 3)
    )
    # The overlay is stretched over the image's pixels.
    assert overlay.get_extent() == [-0.5, 15.5, 15.5, -0.5]
    assert figure.axes[4].get_title().startswith("group 0:")


@pytest.mark.timeout(60)
def test_activation_histograms(images_and_maps, tmp_path):
    _, maps = images_and_maps
    figure = plotting.plot_activation_histograms(maps, bins=20)
    assert [axes.get_title() for axes in figure.axes] == list(maps)
    first = maps["stem_sge"]
    legend = [
        text.get_text() for text in figure.axes[0].get_legend().get_texts()
    ]
    assert legend == [
        f"before SGE (std {first.inputs.std():.3g})",
        f"after SGE (std {first.outputs.std():.3g})",
    ]
    assert len(figure.axes[0].patches) == 2  # the two step histograms
    path = tmp_path / "histograms.png"
    figure.savefig(path, dpi=60)
    assert_png_not_blank(path)


def test_bad_image_is_a_clear_error(images_and_maps):
    _, maps = images_and_maps
    with pytest.raises(ValueError, match="must be one RGB image"):
        plotting.plot_sge_maps(np.zeros((16, 16)), maps["stem_sge"])


def test_missing_matplotlib_is_a_clear_error(images_and_maps, monkeypatch):
    _, maps = images_and_maps
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="keras-sge\\[examples\\]"):
        plotting.plot_activation_histograms(maps)


@pytest.mark.timeout(60)
def test_module_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = plotting.__doc__.split("```python\n")[1].split("```")[0]
    exec(compile(code, "plotting.py", "exec"), {})
    for name in ("sge_maps.png", "sge_histograms.png"):
        assert_png_not_blank(tmp_path / name)
