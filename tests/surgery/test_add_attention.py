"""`add_attention` on the keras.applications families: same network at insertion.

Every family is built with `weights=None` at 32x32, its normalisations,
biases and layer scales set to random non-default values, and gets SGE on
every residual branch; the new model's outputs must equal the original's
to 1e-5 of the largest output, with one SGE per residual `Add`.
"""

import keras
import numpy as np
import pytest

from keras_sge import add_attention
from keras_sge import applications
from tests.surgery import common

TOLERANCE = 1e-5


def _app(builder, **kwargs):
    return lambda: builder(
        weights=None,
        input_shape=(common.SIZE, common.SIZE, 3),
        include_top=False,
        pooling="avg",
        **kwargs,
    )


def _hub_resnet(block_type, use_pre_activation):
    def build():
        keras_hub = pytest.importorskip("keras_hub")
        return keras_hub.models.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[3],
            stackwise_num_filters=[64, 32],
            stackwise_num_blocks=[2, 2],
            stackwise_num_strides=[1, 2],
            block_type=block_type,
            use_pre_activation=use_pre_activation,
            image_shape=(common.SIZE, common.SIZE, 3),
        )

    return build


# (family, builder, the layer each attention follows in the first block)
FAMILIES = [
    ("resnet50", _app(keras.applications.ResNet50), "conv2_block1_3_bn"),
    ("resnet50v2", _app(keras.applications.ResNet50V2), "conv2_block1_3_conv"),
    ("mobilenetv2", _app(keras.applications.MobileNetV2), "block_2_project_BN"),
    (
        "efficientnetb0",
        _app(keras.applications.EfficientNetB0),
        "block2b_project_bn",
    ),
    # B1 has expand-ratio-1 residual blocks: BN -> swish -> dropout -> add.
    (
        "efficientnetv2b1",
        _app(keras.applications.EfficientNetV2B1),
        "block1b_project_bn",
    ),
    ("convnexttiny", _app(keras.applications.ConvNeXtTiny), "layer_scale"),
    # Its hard sigmoid adds a constant (x + 3): not a residual addition.
    (
        "mobilenetv3small",
        _app(keras.applications.MobileNetV3Small),
        "expanded_conv_2_project_bn",
    ),
    (
        "sge_resnet18_plain",
        _app(applications.SGEResNet18, groups=None),
        "conv2_block1_2_bn",
    ),
    (
        "hub_resnet_v1",
        _hub_resnet("bottleneck_block", False),
        "stack0_block0_3_bn",
    ),
    ("hub_resnet_v2", _hub_resnet("basic_block", True), "stack0_block0_2_conv"),
]


@pytest.mark.parametrize(
    "build, first_anchor",
    [pytest.param(b, a, id=name) for name, b, a in FAMILIES],
)
def test_same_network_at_insertion_with_one_sge_per_residual_add(
    build, first_anchor
):
    keras.utils.set_random_seed(0)
    original = common.randomize(build())
    x = common.images()
    expected = common.outputs(original, x)
    before = common.weights_snapshot(original)
    names_before = [layer.name for layer in original.layers]

    model = add_attention(original, "sge", groups=64)

    sge = common.sge_layers(model)
    assert len(sge) == common.count_adds(original) > 0
    assert first_anchor in sge[0].name
    error = common.relative_error(common.outputs(model, x), expected)
    assert error < TOLERANCE, error
    # The original is untouched: same layers, same weights, same outputs.
    assert [layer.name for layer in original.layers] == names_before
    for old, new in zip(before, common.weights_snapshot(original)):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(common.outputs(original, x), expected)
    assert not common.sge_layers(original)


def test_each_attention_sits_between_the_branch_and_the_add():
    original = keras.applications.ResNet50(
        weights=None, input_shape=(32, 32, 3), include_top=False
    )
    model = add_attention(original)
    sge = model.get_layer("conv3_block1_3_bn_sge")
    assert sge._inbound_nodes[0].parent_nodes[0].operation.name == (
        "conv3_block1_3_bn"
    )
    add_inputs = {
        node.operation.name
        for node in model.get_layer("conv3_block1_add")
        ._inbound_nodes[0]
        .parent_nodes
    }
    # The projection shortcut (conv + BN) is left alone.
    assert add_inputs == {
        "conv3_block1_sge" if False else sge.name,
        "conv3_block1_0_bn",
    }
