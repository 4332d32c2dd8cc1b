"""`add_attention`'s clear errors, the `branches` override and the groups rule."""

import keras
import numpy as np
import pytest

from keras_sge import add_attention
from keras_sge.surgery import _largest_divisor
from tests.surgery import common


def conv(filters, name, **kwargs):
    return keras.layers.Conv2D(filters, 3, padding="same", name=name, **kwargs)


def two_branch_model():
    """`conv_a(x) + conv_b(x)`: one weighted layer on each side."""
    inputs = keras.Input((8, 8, 4))
    a = conv(8, "conv_a")(inputs)
    b = conv(8, "conv_b")(inputs)
    outputs = keras.layers.Add(name="add")([a, b])
    return keras.Model(inputs, outputs)


def residual_model(last_activation=None):
    """x -> conv -> [conv -> (BN) -> + x]: one residual block."""
    inputs = keras.Input((8, 8, 3))
    x = conv(16, "stem")(inputs)
    y = conv(16, "conv_1", activation="relu")(x)
    y = conv(16, "conv_2", activation=last_activation)(y)
    outputs = keras.layers.Add(name="add")([x, y])
    return keras.Model(inputs, outputs)


def test_subclassed_model_is_refused_with_what_to_do():
    class Residual(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = conv(3, "conv")

        def call(self, x):
            return x + self.conv(x)

    model = Residual()
    model(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="functional Keras model.*Residual"):
        add_attention(model)


def test_model_without_residual_add_is_refused():
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), conv(8, "conv"), keras.layers.ReLU()]
    )
    with pytest.raises(ValueError, match="no residual addition.*Conv2D"):
        add_attention(model)


def test_ambiguous_add_names_both_inputs_and_the_way_out():
    with pytest.raises(ValueError) as error:
        add_attention(two_branch_model())
    message = str(error.value)
    assert "Cannot tell the residual branch of the Add 'add'" in message
    assert "'conv_a'" in message and "'conv_b'" in message
    assert "branches={'add'" in message


def test_branches_resolves_an_ambiguous_add():
    original = common.randomize(two_branch_model())
    model = add_attention(original, branches={"add": "conv_b"})
    (sge,) = common.sge_layers(model)
    assert sge.name == "conv_b_sge" and sge.groups == 8
    x = common.images((2, 8, 8, 4), high=1.0)
    error = common.relative_error(
        common.outputs(model, x), common.outputs(original, x)
    )
    assert error < 1e-6, error


def test_branches_errors_name_the_problem():
    with pytest.raises(ValueError, match="its inputs come from"):
        add_attention(two_branch_model(), branches={"add": "nope"})
    with pytest.raises(ValueError, match="does not have: \\['other'\\]"):
        add_attention(residual_model(), branches={"other": None})
    # Skipping the only Add leaves nothing to do.
    with pytest.raises(ValueError, match="no residual addition"):
        add_attention(residual_model(), branches={"add": None})


def test_rank_2_add_is_not_a_residual_feature_map():
    inputs = keras.Input((16,))
    x = keras.layers.Dense(16, name="dense_0")(inputs)
    y = keras.layers.Dense(16, name="dense_1")(x)
    model = keras.Model(inputs, keras.layers.Add(name="add")([x, y]))
    with pytest.raises(ValueError, match="rank-4 feature maps.*\\(None, 16\\)"):
        add_attention(model)


def test_unknown_attention_is_named():
    with pytest.raises(ValueError, match="Received: attention='cbam'"):
        add_attention(residual_model(), attention="cbam")
    with pytest.raises(ValueError, match="groups"):
        add_attention(residual_model(), groups=0)


def test_branch_ending_in_a_non_homogeneous_activation_cannot_fold():
    model = residual_model(last_activation="swish")
    with pytest.raises(ValueError, match="'conv_2'.*fold=False"):
        add_attention(model)
    # Without the fold it is inserted, and the network changes.
    new = add_attention(model, fold=False)
    x = common.images((2, 8, 8, 3), high=1.0)
    assert (
        common.relative_error(common.outputs(new, x), common.outputs(model, x))
        > 1e-3
    )


def test_relu_after_the_last_conv_folds_exactly():
    original = common.randomize(residual_model(last_activation="relu"))
    model = add_attention(original, groups=4)
    x = common.images((2, 8, 8, 3), high=1.0)
    error = common.relative_error(
        common.outputs(model, x), common.outputs(original, x)
    )
    assert error < 1e-6, error


# (channels, groups, the groups used)
DIVISOR_CASES = [
    (256, 64, 64),
    (24, 64, 24),  # MobileNetV2's narrowest: one channel per group
    (40, 64, 40),
    (80, 64, 40),
    (96, 64, 48),  # ConvNeXt-T's first stage
    (160, 64, 40),
    (7, 4, 1),  # a prime: one group
    (64, 1, 1),
]


def test_groups_is_the_largest_divisor_at_most_groups():
    for channels, groups, expected in DIVISOR_CASES:
        assert _largest_divisor(channels, groups) == expected, channels


def test_each_layer_records_the_groups_it_uses():
    original = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), include_top=False
    )
    model = add_attention(original, groups=64)
    for layer in common.sge_layers(model):
        channels = layer.input.shape[-1]
        assert layer.get_config()["groups"] == _largest_divisor(channels, 64)
        assert channels % layer.groups == 0
    assert {layer.groups for layer in common.sge_layers(model)} == {
        24,
        32,
        64,
        48,
        40,
    }


def test_normalisation_without_scale_gets_one_to_hold_the_fold():
    inputs = keras.Input((8, 8, 3))
    x = conv(16, "stem")(inputs)
    y = conv(16, "conv", use_bias=False)(x)
    y = keras.layers.BatchNormalization(scale=False, name="bn")(y)
    original = common.randomize(
        keras.Model(inputs, keras.layers.Add(name="add")([x, y]))
    )
    model = add_attention(original, groups=4)
    assert model.get_layer("bn").scale and not original.get_layer("bn").scale
    x = common.images((2, 8, 8, 3), high=1.0)
    error = common.relative_error(
        common.outputs(model, x), common.outputs(original, x)
    )
    assert error < 1e-6, error


def test_branch_read_by_another_layer_is_refused():
    inputs = keras.Input((8, 8, 3))
    x = conv(16, "stem")(inputs)
    y = conv(16, "conv_1", activation="relu")(x)
    y = conv(16, "conv_2")(y)
    added = keras.layers.Add(name="add")([x, y])
    model = keras.Model(inputs, [added, y])  # the branch is also an output
    with pytest.raises(ValueError, match="'conv_2'.*feeds other layers"):
        add_attention(model)
