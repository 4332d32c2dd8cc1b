"""keras_sge.inspect returns what the SGE layers compute in the forward pass."""

import doctest
import re

import keras
import numpy as np
import pytest

import keras_sge
from keras_sge import inspect
from tests import harness
from tests.inspect.helpers import random_images
from tests.inspect.helpers import tiny_sge_model


@pytest.fixture(scope="module")
def model_and_maps():
    model = tiny_sge_model()
    images = random_images(5) / 255.0
    return (
        model,
        images,
        inspect.inspect_sge(model, images, layers="all", batch_size=2),
    )


@pytest.mark.timeout(60)
def test_gate_is_the_forward_output_over_the_input(model_and_maps):
    _, _, all_maps = model_and_maps
    for maps in all_maps.values():
        per_group = maps.inputs.shape[-1] // maps.groups
        gate = np.repeat(maps.gate, per_group, axis=-1)
        nonzero = np.abs(maps.inputs) > 1e-3
        assert nonzero.mean() > 0.5, maps.name
        ratio = maps.outputs / np.where(nonzero, maps.inputs, 1.0)
        np.testing.assert_allclose(ratio[nonzero], gate[nonzero], rtol=1e-5)
        # Trained-like (random gamma) gates vary over the positions.
        assert maps.gate.std() > 0.01, maps.name


@pytest.mark.timeout(60)
def test_outputs_are_the_models_forward_pass(model_and_maps):
    model, images, all_maps = model_and_maps
    # The tiny model ends with block2_sge, so its prediction is that output.
    harness.assert_all_close(
        all_maps["block2_sge"].outputs, model.predict(images, verbose=0)
    )


@pytest.mark.timeout(60)
def test_norms_are_per_group_l2_norms(model_and_maps):
    _, _, all_maps = model_and_maps
    maps = all_maps["block1_sge"]
    per_group = maps.inputs.shape[-1] // maps.groups
    for group in (0, maps.groups - 1):
        channels = slice(group * per_group, (group + 1) * per_group)
        expected = np.sqrt(
            np.sum(np.square(maps.inputs[..., channels]), axis=-1)
        )
        harness.assert_all_close(
            maps.norm_before[..., group], expected, rtol=1e-5
        )
    # The gate is shared by a group's channels, so it scales the norm.
    harness.assert_all_close(
        maps.norm_after, maps.norm_before * maps.gate, rtol=1e-5, atol=1e-6
    )


@pytest.mark.timeout(60)
def test_shapes_and_dtypes(model_and_maps):
    _, _, all_maps = model_and_maps
    assert list(all_maps) == ["stem_sge", "block1_sge", "block2_sge"]
    expected = {
        "stem_sge": (5, 16, 16, 4),
        "block1_sge": (5, 8, 8, 8),
        "block2_sge": (5, 8, 8, 8),
    }
    for name, maps in all_maps.items():
        assert maps.name == name and maps.data_format == "channels_last"
        for array in (maps.gate, maps.norm_before, maps.norm_after):
            assert array.shape == expected[name] and array.dtype == np.float32
        assert maps.spatial("gate", 4, 1).shape == expected[name][1:3]


@pytest.mark.timeout(60)
def test_batching_does_not_change_the_values(model_and_maps):
    model, images, all_maps = model_and_maps
    whole = inspect.inspect_sge(
        model, images, layers="block2_sge", batch_size=64
    )["block2_sge"]
    harness.assert_all_close(whole.gate, all_maps["block2_sge"].gate)


@pytest.mark.timeout(60)
def test_layer_selection():
    model = tiny_sge_model()
    names = lambda layers: [layer.name for layer in layers]  # noqa: E731
    assert names(inspect.sge_layers(model)) == ["block1_sge", "block2_sge"]
    assert names(inspect.sge_layers(model, "all")) == [
        "stem_sge",
        "block1_sge",
        "block2_sge",
    ]
    assert names(inspect.sge_layers(model, "stem_sge")) == ["stem_sge"]
    assert names(inspect.sge_layers(model, ["block2_sge", "stem_sge"])) == [
        "block2_sge",
        "stem_sge",
    ]
    with pytest.raises(
        ValueError,
        match="No SGE layer named 'conv2d'.*Its SGE layers: stem_sge, block1_sge",
    ):
        inspect.sge_layers(model, ["conv2d", "stem_sge"])


@pytest.mark.timeout(60)
def test_models_without_direct_sge_layers_are_clear_errors():
    plain = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)], name="plain"
    )
    with pytest.raises(
        ValueError, match="Model 'plain' has no SGE layer among its layers\\.$"
    ):
        inspect.sge_layers(plain)
    nested = keras.Sequential(
        [keras.Input((16, 16, 3)), tiny_sge_model()], name="outer"
    )
    with pytest.raises(ValueError, match="nests the model\\(s\\) 'tiny_sge'"):
        inspect.sge_layers(nested)


@pytest.mark.timeout(60)
def test_most_selective_groups(model_and_maps):
    _, _, all_maps = model_and_maps
    maps = all_maps["block1_sge"]
    chosen = inspect.most_selective_groups(maps, index=2, count=3)
    spread = [
        maps.spatial("gate", 2, group).std() for group in range(maps.groups)
    ]
    assert len(chosen) == 3 and spread[chosen[0]] == max(spread)
    assert spread[chosen[0]] >= spread[chosen[1]] >= spread[chosen[2]]
    assert len(inspect.most_selective_groups(maps, count=100)) == maps.groups


@pytest.mark.timeout(60)
def test_docstring_examples():
    assert doctest.testmod(inspect).failed == 0
    exec(compile(python_block(inspect.__doc__), "inspect.py", "exec"), {})


def python_block(docstring):
    return docstring.split("```python\n")[1].split("```")[0]


@pytest.mark.timeout(120)
@harness.needs_channels_first_convolutions
def test_channels_first_maps_have_the_channels_first_layout():
    model = tiny_sge_model("channels_first")
    images = np.transpose(random_images(2) / 255.0, (0, 3, 1, 2))
    expected = {
        "stem_sge": [2, 4, 16, 16],
        "block1_sge": [2, 8, 8, 8],
        "block2_sge": [2, 8, 8, 8],
    }
    all_maps = inspect.inspect_sge(model, images, layers="all")
    assert set(all_maps) == set(expected)
    for name, maps in all_maps.items():
        assert maps.data_format == "channels_first"
        for array in (maps.gate, maps.norm_before, maps.norm_after):
            assert list(array.shape) == expected[name]
        assert maps.spatial("norm_after", 1, 0).shape == tuple(
            expected[name][2:]
        )
        per_group = maps.inputs.shape[1] // maps.groups
        gate = np.repeat(maps.gate, per_group, axis=1)
        nonzero = np.abs(maps.inputs) > 1e-3
        ratio = (maps.outputs / np.where(nonzero, maps.inputs, 1.0))[nonzero]
        assert np.max(np.abs(ratio - gate[nonzero])) < 1e-5, name


@pytest.mark.timeout(120)
def test_sge_residual_layer_reports_sge_not_the_block_output():
    # As in keras_sge.applications' blocks: SGEResidual()(x, shortcut)
    # outputs relu(shortcut + x * gate); "after SGE" is still x * gate.
    inputs = keras.Input((16, 16, 3))
    shortcut = keras.layers.Conv2D(16, 1, name="shortcut")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", name="branch")(inputs)
    sge = keras_sge.layers.SGEResidual(
        4,
        gamma_initializer=keras.initializers.RandomNormal(0.0, 2.0, seed=1),
        name="block_sge",
    )
    model = keras.Model(inputs, sge(x, shortcut))
    images = random_images(3) / 255.0
    assert [layer.name for layer in inspect.sge_layers(model)] == ["block_sge"]
    maps = inspect.inspect_sge(model, images)["block_sge"]
    branch = keras.Model(inputs, [x, shortcut]).predict(images, verbose=0)
    harness.assert_all_close(maps.inputs, branch[0], rtol=1e-5, atol=1e-6)
    gate = np.repeat(maps.gate, 4, axis=-1)
    harness.assert_all_close(
        maps.outputs, maps.inputs * gate, rtol=1e-5, atol=1e-6
    )
    harness.assert_all_close(
        maps.norm_after, maps.norm_before * maps.gate, rtol=1e-5, atol=1e-6
    )
    assert maps.gate.std() > 0.01
    # The block output is the fused relu(shortcut + outputs).
    harness.assert_all_close(
        model.predict(images, verbose=0),
        np.maximum(branch[1] + maps.outputs, 0.0),
        rtol=1e-5,
        atol=1e-5,
    )


# ---------------------------------------------------------------------------
# Mistakes a user makes, as clear errors
# ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_an_empty_batch_is_a_clear_error():
    # E.g. a filter that kept no image: a traceback from np.concatenate before.
    images = random_images(3)[:0]
    with pytest.raises(
        ValueError, match=r"empty batch.*images\.shape=\(0, 16, 16, 3\)"
    ):
        inspect.inspect_sge(tiny_sge_model(), images)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("batch_size", [0, -4, 2.5, None])
def test_batch_size_must_be_a_positive_integer(batch_size):
    with pytest.raises(
        ValueError,
        match=rf"`batch_size` must be a positive integer.*batch_size={batch_size}",
    ):
        inspect.inspect_sge(
            tiny_sge_model(), random_images(2), batch_size=batch_size
        )


@pytest.mark.timeout(60)
def test_a_numpy_integer_batch_size_is_an_integer(model_and_maps):
    model, images, all_maps = model_and_maps
    maps = inspect.inspect_sge(model, images, batch_size=np.int64(3))
    harness.assert_all_close(
        maps["block2_sge"].gate, all_maps["block2_sge"].gate
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "shape, hint",
    [
        ((16, 16, 3), r"one image\? pass images\[None\]"),
        ((2, 20, 20, 3), ""),  # another image size
        ((2, 16, 16, 1), ""),  # grayscale into an RGB model
        ((1, 2, 16, 16, 3), ""),
    ],
)
def test_images_not_of_the_models_input_shape_name_both_shapes(shape, hint):
    images = np.zeros(shape, "float32")
    with pytest.raises(
        ValueError,
        match=rf"input shape \(None, 16, 16, 3\).*{hint}.*"
        + re.escape(f"images.shape={shape}"),
    ):
        inspect.inspect_sge(tiny_sge_model(), images)


@pytest.mark.timeout(60)
def test_images_that_are_not_a_numeric_batch_are_a_clear_error():
    with pytest.raises(ValueError, match="numeric NumPy batch.*dtype <U5"):
        inspect.inspect_sge(tiny_sge_model(), ["a.png", "b.png"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("layers", [[], None, "layer object"])
def test_layers_must_be_names(layers):
    model = tiny_sge_model()
    if layers == "layer object":
        layers = [model.get_layer("stem_sge")]
    with pytest.raises(
        ValueError, match=r"`layers` must be 'last_stage', 'all'.*Received"
    ):
        inspect.sge_layers(model, layers)


@pytest.mark.timeout(60)
def test_a_model_file_path_or_a_subclassed_model_is_a_clear_error():
    with pytest.raises(ValueError, match="must be a keras.Model.*type str"):
        inspect.inspect_sge("model.keras", random_images(1))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.sge = keras_sge.SGE(1)

        def call(self, x):
            return self.sge(x)

    model = Subclassed()
    model(random_images(1))
    with pytest.raises(ValueError, match="'subclassed' has no graph of layers"):
        inspect.inspect_sge(model, random_images(1))


@pytest.mark.timeout(60)
def test_map_kind_and_group_count_mistakes(model_and_maps):
    maps = model_and_maps[2]["block1_sge"]
    # `inputs` has C channels, not G groups: it is not a per-group map.
    for kind in ("gates", "inputs"):
        with pytest.raises(ValueError, match=f"`kind` must be.*kind='{kind}'"):
            maps.spatial(kind, 0, 0)
    for count in (0, -1):
        with pytest.raises(ValueError, match=f"count={count}"):
            inspect.most_selective_groups(maps, count=count)


@pytest.mark.parametrize(
    "shape, groups, data_format, match",
    [
        ((1, 2, 2, 6), 4, "channels_last", r"channels \(6\).*groups \(4\)"),
        ((2, 2, 6), 2, "channels_last", r"rank-4.*shape=\(2, 2, 6\)"),
        ((1, 2, 2, 6), 2, "NHWC", "data_format='NHWC'"),
        ((1, 2, 2, 6), 0, "channels_last", "groups=0"),
    ],
)
def test_group_norms_argument_mistakes(shape, groups, data_format, match):
    with pytest.raises(ValueError, match=match):
        inspect.group_norms(np.ones(shape), groups, data_format)
