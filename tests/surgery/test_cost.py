"""`model_cost`: the SGE paper's multiply-adds, and SGE's own work explained."""

import keras
import pytest

import keras_sge
from keras_sge import applications
from keras_sge import model_cost
from keras_sge.applications.architectures import PARAMETER_COUNTS

# SGE-ResNet-50 at 224: the sum over its 16 blocks of C*H*W
# (3 x 256*56*56 + 4 x 512*28*28 + 6 x 1024*14*14 + 3 x 2048*7*7) ...
SGE_MAP_ELEMENTS = 5_519_360
# ... and of H*W (3 x 3136 + 4 x 784 + 6 x 196 + 3 x 49).
SGE_POSITIONS = 13_867


@pytest.fixture(scope="module")
def resnet50_costs():
    """{attention: (standard, paper)} for ResNet-50 at 224x224."""
    costs = {}
    for attention in (None, "sge", "se"):
        model = applications.SGEResNet50(attention=attention)
        costs[attention] = (model_cost(model), model_cost(model, "paper"))
    return costs


def test_paper_convention_reproduces_the_papers_resnet50_table(
    resnet50_costs,
):
    # The paper: ResNet-50 4.122, SGE-ResNet-50 4.127, SE-ResNet-50 4.130 G.
    for attention, paper_gmacs in (
        (None, 4.122),
        ("sge", 4.127),
        ("se", 4.130),
    ):
        gmacs = resnet50_costs[attention][1].gmacs
        assert abs(gmacs - paper_gmacs) / paper_gmacs < 0.005, attention
        assert round(gmacs, 3) == paper_gmacs, (attention, gmacs)
    # What we get, exactly (4.1220 G: conv 4.0871, BN 0.0222, ReLU 0.0096,
    # fc 0.0020, pooling 0.0009).
    assert resnet50_costs[None][1].macs == 4_121_954_024


def test_parameters_are_the_papers(resnet50_costs):
    for attention, key in ((None, None), ("sge", 64), ("se", "se")):
        standard, paper = resnet50_costs[attention]
        assert standard.params == paper.params == PARAMETER_COUNTS[(50, key)]


def test_sge_adds_its_pooling_by_the_paper_and_its_work_by_the_standard_count(
    resnet50_costs,
):
    plain, sge = resnet50_costs[None], resnet50_costs["sge"]
    # The paper's +0.005 G is SGE's global average pool alone, C*H*W.
    assert sge[1].macs - plain[1].macs == SGE_MAP_ELEMENTS
    # The full count: means, similarity and gate (C*H*W each) and ~4 ops
    # per position and group: 0.0201 G, 0.49% of the network.
    work = 3 * SGE_MAP_ELEMENTS + 4 * 64 * SGE_POSITIONS
    assert sge[0].macs - plain[0].macs == work == 20_108_032
    assert sge[0].by_kind()["SGEResidual"] == work
    assert work / plain[0].macs < 0.005


def test_convolutions_and_classifier_alone_fall_short_of_the_paper(
    resnet50_costs,
):
    kinds = resnet50_costs[None][0].by_kind()
    conv_and_fc = kinds["Conv2D"] + kinds["Dense"]
    assert conv_and_fc == 4_089_184_256  # 0.8% under 4.122: not the paper's
    assert resnet50_costs[None][0].gmacs == pytest.approx(4.1003, abs=1e-4)


def test_resnet101_matches_the_paper_too():
    # We get 7.8495 and 7.8585 G; the paper prints 7.849 and 7.858.
    for attention, paper_gmacs in ((None, 7.849), ("sge", 7.858)):
        model = applications.SGEResNet101(attention=attention)
        gmacs = model_cost(model, "paper").gmacs
        assert abs(gmacs - paper_gmacs) < 1e-3, (attention, gmacs)


def test_layer_rows_count_each_kind():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(
        inputs
    )
    x = keras.layers.SeparableConv2D(6, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5)(x)
    model = keras.Model(inputs, outputs)
    standard = [row.macs for row in model_cost(model).rows]
    assert standard == [
        64 * 8 * 9,  # depthwise: 8 channels x 3x3 per position
        64 * 8 * 9 + 64 * 8 * 6,  # separable: depthwise, then 8 -> 6
        64 * 6,  # BN: one per element
        6 * 5,  # dense
    ]
    paper = {row.kind: row.macs for row in model_cost(model, "paper").rows}
    assert paper["DepthwiseConv2D"] == 64 * 8 * 9 + 64 * 8  # + bias
    assert paper["BatchNormalization"] == 2 * 64 * 6
    assert paper["ReLU"] == 64 * 6 and paper["GlobalAveragePooling2D"] == 384
    assert paper["Dense"] == 6 * 5 + 5
    rows = model_cost(model).rows
    assert rows[2].non_trainable_params == 12 and rows[2].params == 12


def test_channels_first_and_nested_models():
    inner = applications.SGEResNet18(
        input_shape=(3, 32, 32),
        data_format="channels_first",
        include_top=False,
        name="backbone",
    )
    inputs = keras.Input((3, 32, 32))
    outputs = keras.layers.Dense(3)(
        keras.layers.GlobalAveragePooling2D(data_format="channels_first")(
            inner(inputs)
        )
    )
    outer = model_cost(keras.Model(inputs, outputs))
    alone = model_cost(inner)
    assert outer.macs == alone.macs + 512 * 3
    assert outer.rows[0].name == "backbone/conv1_conv"
    last = outer.rows[-2]
    assert last.kind == "SGEResidual" and last.output_shape == (512, 1, 1)
    assert last.macs == 3 * 512 + 4 * 64


def test_input_shape_counts_a_model_of_unknown_size():
    model = applications.SGEResNet18(include_top=False)  # (None, None, 3)
    with pytest.raises(ValueError, match="static shapes.*input_shape="):
        model_cost(model)
    at_64 = model_cost(model, input_shape=(64, 64, 3))
    at_32 = model_cost(
        applications.SGEResNet18(include_top=False, input_shape=(32, 32, 3))
    )
    # Convolutions scale with the area: 4x, up to SGE's per-group terms.
    assert at_64.macs == pytest.approx(4 * at_32.macs, rel=1e-3)


def test_bad_arguments_are_named():
    model = applications.SGEResNet18(input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="Received: convention='flops'"):
        model_cost(model, "flops")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed.*Subclassed"):
        model_cost(Subclassed())


def test_table_lists_rows_and_totals():
    model = applications.SGEResNet18(input_shape=(32, 32, 3), classes=10)
    cost = keras_sge.model_cost(model)
    text = str(cost)
    assert "conv2_block1_sge" in text and "SGEResidual" in text
    assert f"{cost.params:,}" in text and f"{cost.macs:,}" in text
    assert text.splitlines()[0].startswith(model.name)


def test_add_attention_costs_exactly_the_sge_work():
    base = keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), include_top=False
    )
    model = keras_sge.add_attention(base)
    extra = model_cost(model).macs - model_cost(base).macs
    sge = [row for row in model_cost(model).rows if row.kind == "SGE"]
    assert len(sge) == 16
    assert extra == sum(row.macs for row in sge) > 0
    assert model_cost(model).params - model_cost(base).params == 16 * 128
