"""The localisation measures: known answers, and exactly "no preference" at init."""

import keras
import numpy as np
import pytest

from examples.study import localisation
from keras_sge import SGE
from keras_sge import inspect
from keras_sge.inspect import SGEMaps


def hand_made_maps(gate, norm=None, data_format="channels_last"):
    """An `SGEMaps` from a `(N, h, w, G)` gate; the norm before SGE is `norm` (default 1)."""
    norm = np.ones_like(gate) if norm is None else norm
    arrays = (gate, norm, norm * gate)
    if data_format == "channels_first":
        arrays = tuple(np.transpose(a, (0, 3, 1, 2)) for a in arrays)
    gate, before, after = arrays
    return SGEMaps(
        "hand_made",
        gate.shape[-1],
        data_format,
        None,
        None,
        gate,
        before,
        after,
    )


def test_pixels_take_the_cell_centred_nearest():
    # Cells centred on pixels 0, 2, 4, 6 (the ResNets' geometry); a tie goes up.
    np.testing.assert_array_equal(
        localisation.pixel_cells(8, 4), [0, 1, 1, 2, 2, 3, 3, 3]
    )
    # Cells centred on 0.5, 2.5, ...: each covers two pixels.
    np.testing.assert_array_equal(
        localisation.pixel_cells(8, 4, first_centre=0.5),
        [0, 0, 1, 1, 2, 2, 3, 3],
    )
    # A stride that is not size / cells: 48 pixels, 2 cells of stride 32.
    cells = localisation.pixel_cells(48, 2, stride=32)
    assert (cells[:16] == 0).all() and (cells[16:] == 1).all()


@pytest.mark.parametrize(
    "size, cells, stride, first_centre",
    [(8, 4, None, 0.0), (8, 4, None, 0.5), (48, 2, 32, 0.0), (32, 1, 32, 0.0)],
)
def test_cell_edges_bound_the_pixels_each_cell_takes(
    size, cells, stride, first_centre
):
    edges = localisation.cell_edges(size, cells, stride, first_centre)
    assigned = localisation.pixel_cells(size, cells, stride, first_centre)
    assert edges.shape == (cells + 1,)
    assert edges[0] == -0.5 and edges[-1] == size - 0.5
    pixels = np.arange(size)
    for cell in range(cells):
        inside = (pixels > edges[cell]) & (pixels < edges[cell + 1])
        np.testing.assert_array_equal(inside, assigned == cell)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_a_hand_made_gate_on_the_box_gives_the_known_ratios_and_auc(
    data_format,
):
    # 8x8 images, 4x4 maps whose cells cover 2x2 pixels; the box is the
    # top-left 4x4 pixels, i.e. the top-left 2x2 cells.
    gate = np.full((2, 4, 4, 3), 0.3, "float32")
    gate[:, :2, :2] = 0.9
    norm = np.full_like(gate, 2.0)
    boxes = np.array([[0, 0, 4, 4], [0, 0, 4, 4]])
    clutter = np.array([[[6, 6, 8, 8]], [[4, 6, 6, 8]]])
    result = localisation.measure_layer(
        hand_made_maps(gate, norm, data_format),
        boxes,
        8,
        clutter_boxes=clutter,
        first_centre=0.5,
    )
    assert result["map_shape"] == [4, 4]
    assert result["gate_ratio"] == pytest.approx(3.0)
    assert result["gate_ratio_vs_clutter"] == pytest.approx(3.0)
    assert result["gate_auc"] == pytest.approx(1.0)
    assert result["norm_ratio_before"] == pytest.approx(1.0)
    assert result["norm_ratio_after"] == pytest.approx(3.0)
    assert result["gate_spread"] == pytest.approx(
        0.6 * np.sqrt(0.25 * 0.75)
    )  # 0.9 on 4 of 16 cells, else 0.3
    # The opposite preference: the gate is low on the box.
    result = localisation.measure_layer(
        hand_made_maps(1.2 - gate, data_format=data_format),
        boxes,
        8,
        first_centre=0.5,
    )
    assert result["gate_ratio"] == pytest.approx(0.3 / 0.9)
    assert result["gate_auc"] == pytest.approx(0.0)


def test_a_box_straddling_cells_weighs_each_cell_by_its_pixels():
    # One 4x4 image, a 2x2 map (cells of 2x2 pixels), the box the left 3
    # columns: 4 box pixels in each left cell, 2 in each right cell, 2 off
    # the box in each right cell.
    gate = np.array([1.0, 0.5, 1.0, 0.5], "float32").reshape(1, 2, 2, 1)
    result = localisation.measure_layer(
        hand_made_maps(gate), np.array([[0, 0, 4, 3]]), 4, first_centre=0.5
    )
    on_box = (8 * 1.0 + 4 * 0.5) / 12
    assert result["gate_ratio"] == pytest.approx(on_box / 0.5)
    # Of the 12 x 4 (box, off-box) pixel pairs, 8 x 4 are won, 4 x 4 tied.
    assert result["gate_auc"] == pytest.approx((8 * 4 + 0.5 * 4 * 4) / 48)


def test_weighted_auc_counts_ties_half():
    values = np.array([0.2, 0.2, 0.1, 0.3], "float32").reshape(1, 2, 2, 1)
    positive = np.array([1, 1, 0, 0], "float32").reshape(1, 2, 2)
    negative = 1 - positive
    # Positives {0.2, 0.2} vs negatives {0.1, 0.3}: each wins one, loses one.
    assert localisation.weighted_auc(values, positive, negative)[
        0, 0
    ] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both regions"):
        localisation.weighted_auc(values, positive, np.zeros_like(negative))


def test_box_masks_of_boxes_and_of_their_union():
    masks = localisation.box_masks(np.array([[1, 2, 3, 5]]), 6)
    assert (
        masks.shape == (1, 6, 6)
        and masks.sum() == 6
        and masks[0, 1:3, 2:5].all()
    )
    union = localisation.box_masks(np.array([[[0, 0, 2, 2], [1, 1, 3, 3]]]), 4)
    assert union.sum() == 7
    with pytest.raises(ValueError, match=r"Received: shape=\(3,\)"):
        localisation.box_masks(np.array([1, 2, 3]), 4)


def _sge_model(gamma_initializer="zeros"):
    """The raw image through SGE (1 group), then a conv and SGE at stride 2."""
    inputs = keras.Input((16, 16, 3))
    x = SGE(1, gamma_initializer=gamma_initializer, name="image_sge")(inputs)
    x = keras.layers.Conv2D(
        8,
        3,
        strides=2,
        padding="same",
        kernel_initializer=keras.initializers.GlorotUniform(0),
    )(x)
    x = SGE(4, gamma_initializer=gamma_initializer, name="conv_sge")(x)
    return keras.Model(inputs, x)


def _images_with_a_bright_square():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.1, (3, 16, 16, 3)).astype("float32")
    boxes = np.array([[2, 3, 8, 9], [6, 6, 12, 12], [8, 1, 14, 7]])
    for image, (top, left, bottom, right) in zip(images, boxes):
        image[top:bottom, left:right] += 1.0
    return images, boxes


def test_at_initialisation_the_measures_from_inspect_say_no_preference():
    images, boxes = _images_with_a_bright_square()
    maps = inspect.inspect_sge(_sge_model(), images, layers="all")
    for name, stride in (("image_sge", 1), ("conv_sge", 2)):
        result = localisation.measure_layer(
            maps[name], boxes, 16, stride=stride
        )
        assert result["gate_ratio"] == pytest.approx(1.0, abs=1e-12)
        assert result["gate_auc"] == pytest.approx(0.5, abs=1e-12)
        assert result["gate_spread"] == 0.0
        assert result["norm_ratio_after"] == pytest.approx(
            result["norm_ratio_before"], rel=1e-6
        )
    # The bright square has the larger features: no preference is not no contrast.
    assert (
        localisation.measure_layer(maps["image_sge"], boxes, 16)[
            "norm_ratio_before"
        ]
        > 5
    )


def test_an_sge_gate_that_favours_strong_features_points_at_the_bright_square():
    # gamma > 0: positions whose features align with the group's mean
    # feature (here: the bright pixels) get the larger gates.
    images, boxes = _images_with_a_bright_square()
    maps = inspect.inspect_sge(
        _sge_model(gamma_initializer=keras.initializers.Constant(3.0)),
        images,
        layers=["image_sge"],
    )
    result = localisation.measure_layer(maps["image_sge"], boxes, 16, stride=1)
    assert result["gate_ratio"] > 1.5
    assert result["gate_auc"] == pytest.approx(1.0)
    assert result["norm_ratio_after"] > result["norm_ratio_before"]
