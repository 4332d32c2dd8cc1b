"""The blocks' attention as an argument: SGE (default), SE, none, a callable."""

import keras
import numpy as np
import pytest

from keras_sge import applications
from keras_sge.applications.architectures import PARAMETER_COUNTS
from keras_sge.layers import SGE
from keras_sge.layers import SGEResidual
from keras_sge.layers import SqueezeExcite
from tests import harness


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def layers_of(model, cls):
    return [layer for layer in model.layers if type(layer) is cls]


def test_se_resnet50_and_101_have_the_papers_parameter_counts():
    # The SGE paper's table: SE-ResNet-50 28.09M, SE-ResNet-101 49.33M.
    for builder, depth, paper in (
        (applications.SGEResNet50, 50, 28.09e6),
        (applications.SGEResNet101, 101, 49.33e6),
    ):
        model = builder(attention="se")
        assert model.name == f"se_resnet{depth}"
        assert trainable_count(model) == PARAMETER_COUNTS[(depth, "se")]
        assert abs(PARAMETER_COUNTS[(depth, "se")] - paper) < 0.005e6
        assert len(layers_of(model, SqueezeExcite)) == sum(
            (3, 4, 6, 3) if depth == 50 else (3, 4, 23, 3)
        )
        assert not layers_of(model, SGEResidual)


def test_se_block_applies_se_to_the_branch_before_the_add():
    model = applications.SGEResNet18(
        attention="se", input_shape=(32, 32, 3), classes=4
    )
    se = model.get_layer("conv2_block1_se")
    assert se.reduction == 16
    assert (
        se._inbound_nodes[0].parent_nodes[0].operation.name
        == "conv2_block1_2_bn"
    )
    add_inputs = {
        n.operation.name
        for n in model.get_layer("conv2_block1_add")
        ._inbound_nodes[0]
        .parent_nodes
    }
    assert add_inputs == {"conv2_block1_se", "pool1_pool"}
    assert isinstance(model.get_layer("conv2_block1_out"), keras.layers.ReLU)


@pytest.mark.parametrize("attention, groups", [(None, 64), ("sge", None)])
def test_no_attention_and_groups_none_both_build_the_plain_resnet(
    attention, groups
):
    model = applications.SGEResNet18(
        attention=attention, groups=groups, input_shape=(32, 32, 3)
    )
    assert model.name == "resnet18"
    assert trainable_count(model) == PARAMETER_COUNTS[(18, None)]
    assert not layers_of(model, SGEResidual) and not layers_of(
        model, SqueezeExcite
    )


def test_a_callable_attention_is_called_with_channels_and_a_name():
    calls = []

    def attention(channels, name):
        calls.append((channels, name))
        return SGE(groups=channels // 16, name=name)

    model = applications.SGEResNet18(
        attention=attention, input_shape=(32, 32, 3)
    )
    assert calls[0] == (64, "conv2_block1_attention") and calls[-1] == (
        512,
        "conv5_block2_attention",
    )
    assert [layer.groups for layer in layers_of(model, SGE)][::2] == [
        4,
        8,
        16,
        32,
    ]
    assert model.name == "custom_resnet18"


@pytest.mark.parametrize("attention", ["cbam", 3, "SGE"])
def test_unknown_attention_is_named(attention):
    with pytest.raises(
        ValueError,
        match=r"`attention` must be 'sge', 'se', None or a callable.*Received: attention=",
    ):
        applications.SGEResNet18(attention=attention)


def test_se_resnet_trains_saves_and_runs_mixed_precision(tmp_path):
    images = (
        np.random.default_rng(0)
        .uniform(-1, 1, (2, 32, 32, 3))
        .astype("float32")
    )
    harness.run_model_test(
        lambda: applications.SGEResNet18(
            attention="se", input_shape=(32, 32, 3), classes=3
        ),
        images,
        expected_output_shape=(2, 3),
        tmp_path=tmp_path,
    )


def test_se_model_has_no_reference_checkpoint_mapping():
    from keras_sge.applications import torch_mapping

    model = applications.SGEResNet18(
        attention="se", input_shape=(32, 32, 3), include_top=False
    )
    with pytest.raises(
        ValueError, match=r"'conv2_block1_se' \(SqueezeExcite\).*no counterpart"
    ):
        list(torch_mapping.weight_mapping(model))
