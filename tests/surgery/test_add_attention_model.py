"""The model `add_attention` returns is an ordinary Keras model.

`.keras` round trip, channels_first, mixed precision, training, and the
other attentions (SE, a callable).
"""

import keras
import numpy as np
import pytest

import keras_sge
from keras_sge import add_attention
from keras_sge import applications
from keras_sge.layers import SqueezeExcite
from tests.surgery import common


def small_mobilenet(size=common.SIZE, **kwargs):
    return keras.applications.MobileNetV2(
        weights=None, input_shape=(size, size, 3), alpha=0.35, **kwargs
    )


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    model = add_attention(common.randomize(small_mobilenet(classes=5)))
    path = str(tmp_path / "sge_mobilenet.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = common.images()
    np.testing.assert_array_equal(
        common.outputs(loaded, x), common.outputs(model, x)
    )
    assert [layer.groups for layer in common.sge_layers(loaded)] == [
        layer.groups for layer in common.sge_layers(model)
    ]


def test_keras_file_round_trip_of_a_convnext_keeps_its_layer_scales(tmp_path):
    # LayerScale is keras.applications' own layer, not registered by name.
    original = keras.applications.ConvNeXtTiny(
        weights=None, input_shape=(32, 32, 3), include_top=False
    )
    model = add_attention(common.randomize(original))
    path = str(tmp_path / "sge_convnext.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = common.images()
    np.testing.assert_array_equal(
        common.outputs(loaded, x), common.outputs(model, x)
    )


def test_channels_first_model_gets_channels_first_attention():
    original = common.randomize(
        applications.SGEResNet18(
            groups=None,
            input_shape=(3, 32, 32),
            data_format="channels_first",
            include_top=False,
            pooling="avg",
        )
    )
    model = add_attention(original)
    sge = common.sge_layers(model)
    assert len(sge) == common.count_adds(original) == 8
    assert {layer.data_format for layer in sge} == {"channels_first"}
    x = common.images((2, 3, 32, 32))
    error = common.relative_error(
        common.outputs(model, x), common.outputs(original, x)
    )
    assert error < 1e-5, error


def test_mixed_precision_model_gets_attention_in_its_policy():
    original = common.randomize(
        applications.SGEResNet18(
            groups=None,
            input_shape=(32, 32, 3),
            dtype="mixed_bfloat16",
            include_top=False,
            pooling="avg",
        )
    )
    model = add_attention(original)
    sge = common.sge_layers(model)
    assert {layer.dtype_policy.name for layer in sge} == {"mixed_bfloat16"}
    # Folded gammas stay float32 variables.
    assert model.get_layer("conv2_block1_2_bn").gamma.dtype == "float32"
    x = common.images()
    # bfloat16 keeps 8 bits: each block rounds the folded factor back.
    error = common.relative_error(
        common.outputs(model, x), common.outputs(original, x)
    )
    assert error < 5e-2, error


def test_fit_moves_every_sge_gamma():
    # 64x64 so that the last stage is 2x2: on a 1x1 map the normalised
    # similarity is 0 and gamma gets no gradient.
    model = add_attention(small_mobilenet(size=64, classes=3))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = common.images((4, 64, 64, 3), high=1.0)
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    gammas = [
        keras.ops.convert_to_numpy(layer.gamma)
        for layer in common.sge_layers(model)
    ]
    assert len(gammas) == common.count_adds(model) == 10
    assert all(np.all(gamma != 0) for gamma in gammas)


def test_se_is_inserted_without_fold_and_warns():
    original = common.randomize(small_mobilenet(include_top=False))
    with pytest.warns(UserWarning, match="not a constant.*fold=False"):
        model = add_attention(original, "se")
    se = [layer for layer in model.layers if isinstance(layer, SqueezeExcite)]
    assert len(se) == common.count_adds(original) == 10
    assert not common.sge_layers(model)
    x = common.images()
    assert (
        common.relative_error(
            common.outputs(model, x), common.outputs(original, x)
        )
        > 1e-4
    )


def test_callable_attention_made_of_sge_is_folded():
    original = common.randomize(small_mobilenet(include_top=False))
    model = add_attention(
        original,
        lambda channels, name: keras_sge.SGE(
            groups=channels // 8, beta_initializer="zeros", name=name
        ),
    )
    sge = common.sge_layers(model)
    assert len(sge) == 10 and sge[0].name.endswith("_attention")
    # beta = 0: the fold is 1 / sigmoid(0) = 2 per channel.
    x = common.images()
    error = common.relative_error(
        common.outputs(model, x), common.outputs(original, x)
    )
    assert error < 1e-5, error
