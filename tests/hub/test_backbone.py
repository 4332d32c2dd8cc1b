"""SGEResNetBackbone: config, pyramid, the builders' layers, data formats, precision."""

import json

import pytest

pytest.importorskip("keras_hub")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from keras_sge import applications  # noqa: E402
from keras_sge.hub import SGEResNetBackbone  # noqa: E402
from keras_sge.layers.sge import SGE  # noqa: E402
from tests import harness  # noqa: E402
from tests.hub import helpers  # noqa: E402

# ResNet-18 at 64x64: strides 4, 8, 16, 32.
PYRAMID_SHAPES = {
    "P2": (16, 16, 64),
    "P3": (8, 8, 128),
    "P4": (4, 4, 256),
    "P5": (2, 2, 512),
}
# The plain ResNet-18's trainable parameters without its 1000-class fc
# (11,689,512 with it, as torchvision counts them).
PLAIN_RESNET18_FEATURES = 11_689_512 - (512 * 1000 + 1000)


@pytest.fixture(scope="module")
def backbone():
    """One SGE-ResNet-18 backbone with weights, shared by the read-only tests."""
    return helpers.backbone()


def pyramid(model, inputs):
    features = keras.Model(model.input, model.pyramid_outputs)
    return {
        level: keras.ops.convert_to_numpy(value)
        for level, value in features(inputs).items()
    }


def shapes(outputs):
    return {level: value.shape[1:] for level, value in outputs.items()}


def test_backbone_is_a_registered_feature_pyramid_backbone():
    assert issubclass(
        SGEResNetBackbone, keras_hub.models.FeaturePyramidBackbone
    )
    registered = keras.saving.get_registered_object(
        "keras_sge>SGEResNetBackbone"
    )
    assert registered is SGEResNetBackbone


def test_config_has_every_argument_and_is_json():
    model = SGEResNetBackbone(
        depth=18, groups=32, image_shape=(64, 64, 3), name="sge18"
    )
    config = model.get_config()
    json.dumps(config)
    expected = {
        "depth": 18,
        "groups": 32,
        "image_shape": (64, 64, 3),
        "data_format": "channels_last",
        "name": "sge18",
    }
    assert {key: config[key] for key in expected} == expected
    assert config["dtype"]["config"]["name"] == "float32"
    assert SGEResNetBackbone.from_config(config).get_config() == config


def test_from_config_and_deserialize_give_the_same_network(backbone):
    revived = SGEResNetBackbone.from_config(backbone.get_config())
    revived.set_weights(backbone.get_weights())
    inputs = helpers.images(0)
    harness.assert_all_close(revived(inputs), backbone(inputs), 1e-5, 1e-5)
    serialized = keras.saving.serialize_keras_object(backbone)
    deserialized = keras.saving.deserialize_keras_object(serialized)
    assert type(deserialized) is SGEResNetBackbone
    assert deserialized.get_config() == backbone.get_config()


def test_pyramid_outputs_are_the_stage_outputs_at_strides_4_to_32(backbone):
    outputs = pyramid(backbone, helpers.images(1))
    assert shapes(outputs) == PYRAMID_SHAPES
    names = applications.stage_output_names(backbone)
    stage_outputs = [backbone.get_layer(name).output for name in names]
    assert list(backbone.pyramid_outputs.values()) == stage_outputs
    harness.assert_all_close(outputs["P5"], backbone(helpers.images(1)))


def test_layers_and_weights_are_those_of_the_application_builder(backbone):
    reference = applications.SGEResNet18(
        include_top=False, input_shape=(None, None, 3)
    )
    # Past the input layer, whose name Keras numbers.
    names = [layer.name for layer in backbone.layers[1:]]
    assert names == [layer.name for layer in reference.layers[1:]]
    for layer in reference.layers[1:]:
        layer.set_weights(backbone.get_layer(layer.name).get_weights())
    inputs = helpers.images(2)
    harness.assert_all_close(backbone(inputs), reference(inputs))


def test_groups_none_is_the_plain_resnet():
    model = SGEResNetBackbone(depth=18, groups=None)
    assert not any(isinstance(layer, SGE) for layer in model.layers)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == PLAIN_RESNET18_FEATURES


def test_channels_first_gives_the_same_features_transposed(backbone):
    channels_first = SGEResNetBackbone(depth=18, data_format="channels_first")
    channels_first.set_weights(backbone.get_weights())
    assert channels_first.image_shape == (3, None, None)
    # The global setting is left alone.
    assert keras.config.image_data_format() == "channels_last"
    inputs = helpers.images(3)
    expected = pyramid(backbone, inputs)
    outputs = pyramid(channels_first, np.transpose(inputs, (0, 3, 1, 2)))
    for level, value in outputs.items():
        height, width, channels = PYRAMID_SHAPES[level]
        assert value.shape[1:] == (channels, height, width)
        harness.assert_all_close(
            np.transpose(value, (0, 2, 3, 1)), expected[level], 1e-4, 1e-4
        )


@pytest.mark.parametrize("policy", harness.MIXED_POLICIES)
def test_mixed_precision_forward_pass_and_pyramid(policy):
    model = SGEResNetBackbone(depth=18, dtype=policy)
    # The global policy is left alone.
    assert keras.config.dtype_policy().name == "float32"
    compute_dtype = policy.split("_")[1]
    assert model.compute_dtype == compute_dtype
    outputs = pyramid(model, helpers.images(4))
    assert shapes(outputs) == PYRAMID_SHAPES
    for level, value in outputs.items():
        assert keras.backend.standardize_dtype(value.dtype) == compute_dtype
        harness.assert_finite(value, f"{level} under {policy}")
    sge = model.get_layer("conv5_block2_sge")
    assert (sge.gamma.dtype, sge.beta.dtype) == ("float32", "float32")


def test_global_mixed_policy_is_followed_when_dtype_is_none():
    with harness.dtype_policy("mixed_bfloat16"):
        model = SGEResNetBackbone(depth=18)
    conv = model.get_layer("conv2_block1_1_conv")
    assert conv.compute_dtype == "bfloat16"
    assert model.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"


def test_unknown_depth_and_data_format_are_named_in_the_error():
    with pytest.raises(ValueError, match=r"Received: depth=20"):
        SGEResNetBackbone(depth=20)
    with pytest.raises(ValueError, match=r"Received: data_format='NHWC'"):
        SGEResNetBackbone(depth=18, data_format="NHWC")
