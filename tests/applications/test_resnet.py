"""SGE-ResNet builders, in the style of keras.applications' own tests.

Most tests use ResNet-18 at 32x32/64x64 with few classes; ResNet-101 and
-152 are built once each, for their parameter counts.
"""

import importlib.util
import re

import keras
import numpy as np
import pytest

from keras_sge import applications
from keras_sge.applications import resnet
from keras_sge.applications.architectures import PARAMETER_COUNTS
from keras_sge.layers.sge import SGE
from keras_sge.layers.sge_residual import SGEResidual
from tests import harness
from tests.applications import parity

BUILDERS = resnet.BUILDERS


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def small_model(**kwargs):
    kwargs.setdefault("input_shape", (32, 32, 3))
    kwargs.setdefault("classes", 5)
    return applications.SGEResNet18(**kwargs)


def images(batch=2, size=32, seed=0):
    return (
        np.random.default_rng(seed)
        .uniform(-1, 1, (batch, size, size, 3))
        .astype("float32")
    )


# --------------------------------------------------------------------------
# Parameter counts (torch counts trainable parameters, no BN statistics)
# --------------------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_trainable_parameter_counts(depth):
    # One shared build per depth (see parity.architecture_facts), with SGE;
    # the plain count is SGE's 2 * 64 per block less.
    facts = parity.architecture_facts(depth)
    assert facts["trainable"] == PARAMETER_COUNTS[(depth, 64)]
    assert (
        PARAMETER_COUNTS[(depth, 64)] - 128 * facts["sge_layers"]
        == PARAMETER_COUNTS[(depth, None)]
    )


def test_builders_build_their_depth():
    # Cheap checks of every public builder, without building 101/152 again.
    for depth, builder in BUILDERS.items():
        assert builder.__name__ == f"SGEResNet{depth}"
        assert f"{PARAMETER_COUNTS[(depth, 64)]:,}" in builder.__doc__
    model = applications.SGEResNet34(include_top=False, input_shape=(32, 32, 3))
    assert applications.stage_output_names(model)[-1] == "conv5_block3_out"


def test_paper_parameter_counts():
    # The numbers, independent of the table in resnet.py.
    assert PARAMETER_COUNTS[(50, 64)] == 25_559_080
    assert PARAMETER_COUNTS[(101, 64)] == 44_553_384
    assert PARAMETER_COUNTS[(50, None)] == 25_557_032


def test_resnet50_without_sge_and_bn_statistics():
    model = applications.SGEResNet50(groups=None, input_shape=(32, 32, 3))
    assert trainable_count(model) == 25_557_032
    assert not any(isinstance(layer, SGE) for layer in model.layers)
    assert model.name == "resnet50"
    # Keras also counts the BN moving mean/variance: 53,120 for ResNet-50.
    assert model.count_params() - trainable_count(model) == 53_120


@pytest.mark.needs_torch
@pytest.mark.parametrize("depth,groups", [(18, 64), (50, 64), (50, None)])
def test_parameter_counts_match_torch_reference(depth, groups):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    from keras_sge.testing import torch_reference

    torch_model = torch_reference.SGE_RESNETS[depth](groups=groups)
    assert (
        torch_reference.trainable_parameter_count(torch_model)
        == PARAMETER_COUNTS[(depth, groups)]
    )


# --------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------


def test_layer_names_and_torch_style_layout():
    model = applications.SGEResNet50(input_shape=(64, 64, 3), classes=3)
    names = [layer.name for layer in model.layers]
    for name in [
        "conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad", "pool1_pool",
        "conv2_block1_1_conv", "conv2_block1_1_bn", "conv2_block1_0_conv", "conv2_block1_0_bn",
        "conv2_block1_3_bn", "conv2_block1_sge", "conv2_block1_out",
        "conv3_block1_2_pad", "conv5_block3_out", "avg_pool", "predictions",
    ]:  # fmt: skip
        assert name in names, name
    # v1.5: the stride sits on the 3x3 conv, behind an explicit symmetric pad.
    assert model.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert model.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert model.get_layer("conv3_block1_2_conv").padding == "valid"
    assert model.get_layer("conv3_block1_2_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("conv1_pad").padding == ((3, 3), (3, 3))
    # Stride-1 3x3 convolutions pad "same", which is symmetric.
    assert model.get_layer("conv3_block2_2_conv").padding == "same"
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert not layer.use_bias, layer.name
        if isinstance(layer, keras.layers.BatchNormalization):
            assert (layer.epsilon, layer.momentum) == (1e-5, 0.9), layer.name
        if isinstance(layer, SGE):
            assert layer.groups == 64
    # SGE after the last BN of the branch, before the add: the block's
    # SGEResidual layer takes the branch's last BN and the shortcut (it
    # computes relu(shortcut + SGE(x)) itself); `_out` follows it.
    sge = model.get_layer("conv2_block1_sge")
    assert isinstance(sge, SGEResidual)
    branch, shortcut = sge._inbound_nodes[0].arguments.args
    assert branch._keras_history.operation.name == "conv2_block1_3_bn"
    assert shortcut._keras_history.operation.name == "conv2_block1_0_bn"
    assert "conv2_block1_add" not in names
    out_inputs = [
        n.operation.name
        for n in model.get_layer("conv2_block1_out")
        ._inbound_nodes[0]
        .parent_nodes
    ]
    assert out_inputs == ["conv2_block1_sge"]
    # Without SGE, the block keeps its Add and ReLU layers.
    plain = applications.SGEResNet50(
        input_shape=(64, 64, 3), classes=3, groups=None
    )
    add_inputs = {
        n.operation.name
        for n in plain.get_layer("conv2_block1_add")
        ._inbound_nodes[0]
        .parent_nodes
    }
    assert add_inputs == {"conv2_block1_3_bn", "conv2_block1_0_bn"}
    assert isinstance(plain.get_layer("conv2_block1_out"), keras.layers.ReLU)


def sge_as_callable(channels, name):
    return SGE(groups=64, name=name)


def test_fused_blocks_equal_separate_sge_add_and_relu():
    fused = small_model(include_top=False)
    # The same SGE as a callable attention: SGE, then Add and ReLU layers.
    separate = small_model(include_top=False, attention=sge_as_callable)
    assert "conv2_block1_add" in [layer.name for layer in separate.layers]
    rng = np.random.default_rng(7)
    # Positive 1D weights (BN variances stay valid; SGE gammas not 0).
    weights = [
        w + rng.uniform(0.1, 0.6, w.shape).astype(w.dtype) if w.ndim == 1 else w
        for w in fused.get_weights()
    ]
    fused.set_weights(weights)
    separate.set_weights(weights)
    x = images(2, 32)
    harness.assert_all_close(
        fused(x, training=False),
        separate(x, training=False),
        rtol=1e-5,
        atol=1e-5,
    )
    # Training mode: batch statistics over 2 samples of a 1x1 map amplify
    # float32 rounding differences, so compare a stage with more positions.
    stage = lambda model: keras.Model(
        model.input, model.get_layer("conv3_block2_out").output
    )  # noqa: E731
    harness.assert_all_close(
        stage(fused)(x, training=True),
        stage(separate)(x, training=True),
        rtol=1e-4,
        atol=1e-4,
    )


def test_basic_block_layout():
    model = small_model()
    names = [layer.name for layer in model.layers]
    # ResNet-18's first stage keeps 64 channels: no projection shortcut.
    assert "conv2_block1_0_conv" not in names
    assert "conv3_block1_0_conv" in names
    assert model.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert "conv3_block1_1_pad" in names
    assert "conv2_block2_sge" in names and "conv5_block2_out" in names


def test_groups_option():
    model = small_model(groups=32)
    assert {
        layer.groups for layer in model.layers if isinstance(layer, SGE)
    } == {32}
    plain = small_model(groups=None)
    assert plain.name == "resnet18"
    assert not any(isinstance(layer, SGE) for layer in plain.layers)
    assert trainable_count(model) - trainable_count(plain) == 8 * 64


def test_default_input_shapes():
    model = applications.SGEResNet18(classes=4)
    assert model.input_shape == (None, 224, 224, 3)
    assert model.name == "sge_resnet18"
    backbone = applications.SGEResNet18(include_top=False)
    assert backbone.input_shape == (None, None, None, 3)
    assert backbone.output_shape == (None, None, None, 512)
    # Dynamic sizes: the same backbone runs on different image sizes.
    assert backbone(images(1, 32)).shape == (1, 1, 1, 512)
    assert backbone(images(1, 70)).shape == (1, 3, 3, 512)


@pytest.mark.parametrize("size,expected", [(32, 1), (64, 2), (97, 4), (224, 7)])
def test_output_stride(size, expected):
    model = applications.SGEResNet18(
        include_top=False, input_shape=(size, size, 3)
    )
    assert model.output_shape == (None, expected, expected, 512)


def test_custom_input_shape_and_classes():
    model = applications.SGEResNet18(input_shape=(48, 80, 3), classes=7)
    out = model(images(2, 48)[:, :, :1].repeat(80, axis=2))
    assert out.shape == (2, 7)
    np.testing.assert_allclose(
        np.sum(keras.ops.convert_to_numpy(out), -1), 1.0, rtol=1e-5
    )


@pytest.mark.parametrize(
    "pooling,shape",
    [(None, (None, 2, 2, 512)), ("avg", (None, 512)), ("max", (None, 512))],
)
def test_pooling(pooling, shape):
    model = applications.SGEResNet18(
        include_top=False, pooling=pooling, input_shape=(64, 64, 3)
    )
    assert model.output_shape == shape
    assert "predictions" not in [layer.name for layer in model.layers]


def test_input_tensor():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    model = applications.SGEResNet18(input_tensor=x, classes=3)
    # Like keras.applications, the model starts at the tensor's source input.
    assert model.inputs[0] is inputs
    assert model(images(1)).shape == (1, 3)


def test_input_tensor_must_be_keras_tensor():
    with pytest.raises(ValueError, match="must be a Keras tensor"):
        applications.SGEResNet18(
            input_tensor=np.zeros((1, 32, 32, 3)), include_top=False
        )


@pytest.mark.parametrize("activation", [None, "softmax", "sigmoid"])
def test_classifier_activation(activation):
    model = small_model(classifier_activation=activation)
    out = keras.ops.convert_to_numpy(model(images()))
    logits_model = small_model(classifier_activation=None)
    logits_model.set_weights(model.get_weights())
    logits = keras.ops.convert_to_numpy(logits_model(images()))
    expected = {
        None: logits,
        "softmax": np.exp(logits) / np.sum(np.exp(logits), -1, keepdims=True),
        "sigmoid": 1 / (1 + np.exp(-logits)),
    }
    np.testing.assert_allclose(out, expected[activation], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_classifier_is_float32(policy):
    with harness.dtype_policy(policy):
        model = small_model()
    assert model.get_layer("conv1_conv").compute_dtype != "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"
    out = model(images())
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    harness.assert_finite(out)


def test_build_time_kwargs():
    regularizer = keras.regularizers.L2(1e-4)
    model = small_model(
        kernel_regularizer=regularizer,
        synchronized_bn=True,
        zero_init_residual=True,
    )
    convs = [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    ]
    assert all(layer.kernel_regularizer is not None for layer in convs)
    model(images())
    assert len(model.losses) == len(convs)
    assert model.get_layer("conv2_block1_1_bn").synchronized
    # zero_init_residual: the branch's last BN starts at gamma 0.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("conv2_block1_2_bn").gamma),
        0.0,
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("conv2_block1_1_bn").gamma),
        1.0,
    )


def test_initializers_follow_torch():
    model = applications.SGEResNet18(input_shape=(32, 32, 3), classes=10)
    kernel = keras.ops.convert_to_numpy(
        model.get_layer("conv5_block1_1_conv").kernel
    )
    # kaiming_normal_(fan_out, relu): std sqrt(2 / (3 * 3 * 512)).
    assert abs(kernel.std() - np.sqrt(2 / (9 * 512))) < 0.05 * np.sqrt(
        2 / (9 * 512)
    )
    dense = model.get_layer("predictions")
    limit = 1 / np.sqrt(512)
    for weight in (dense.kernel, dense.bias):
        values = keras.ops.convert_to_numpy(weight)
        assert (
            np.abs(values).max() <= limit and np.abs(values).max() > 0.5 * limit
        )
    sge = model.get_layer("conv2_block1_sge")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(sge.gamma), 0.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(sge.beta), 1.0)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"weights": "imagenet"}, "python -m keras_sge.convert"),
        ({"weights": "/no/such/file.pth"}, "No such file"),
        ({"weights": 3}, "Received: weights=3"),
        ({"pooling": "mean", "include_top": False}, "Received: pooling='mean'"),
        ({"classes": 0}, "Received: classes=0"),
        ({"classes": "10"}, "Received: classes='10'"),
        ({"groups": 0}, "Received: groups=0"),
        ({"groups": 48}, "narrowest block"),
        ({"input_shape": (16, 16, 3)}, "at least 32x32"),
        ({"input_shape": (32, 32)}, "Received: input_shape=(32, 32)"),
        ({"input_shape": (32, 32, None)}, "channel"),
        ({"stem": "cifar"}, "Received: stem='cifar'"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        applications.SGEResNet18(**kwargs)


def test_bottleneck_groups_can_be_larger():
    # Bottleneck blocks have at least 256 channels.
    model = applications.SGEResNet50(
        groups=128, include_top=False, input_shape=(32, 32, 3)
    )
    assert {
        layer.groups for layer in model.layers if isinstance(layer, SGE)
    } == {128}
    with pytest.raises(
        ValueError, match="narrowest block of a ResNet-50 has 256"
    ):
        applications.SGEResNet50(groups=512)


# --------------------------------------------------------------------------
# C2-C5
# --------------------------------------------------------------------------


def test_stage_outputs():
    backbone = applications.SGEResNet18(
        include_top=False, input_shape=(64, 64, 3)
    )
    assert applications.stage_output_names(backbone) == [
        "conv2_block2_out",
        "conv3_block2_out",
        "conv4_block2_out",
        "conv5_block2_out",
    ]
    features = applications.stage_outputs(backbone)
    out = features(images(2, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "C2": (2, 16, 16, 64),
        "C3": (2, 8, 8, 128),
        "C4": (2, 4, 4, 256),
        "C5": (2, 2, 2, 512),
    }
    # Shared weights: C5 is the backbone's output.
    harness.assert_all_close(out["C5"], backbone(images(2, 64)))


def test_stage_outputs_bottleneck_names_and_errors():
    model = applications.SGEResNet50(input_shape=(32, 32, 3), classes=2)
    assert applications.stage_output_names(model)[2] == "conv4_block6_out"
    with pytest.raises(ValueError, match="keras_sge.applications model"):
        applications.stage_outputs(
            keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        )


# --------------------------------------------------------------------------
# The small-image stem
# --------------------------------------------------------------------------


def test_small_stem_keeps_the_maps_large():
    """3x3 stride-1 stem, no pooling: 32x32 images give 32/16/8/4 maps."""
    backbone = applications.SGEResNet18(
        include_top=False, input_shape=(32, 32, 3), stem="small"
    )
    sizes = [
        backbone.get_layer(name).output.shape[1]
        for name in applications.stage_output_names(backbone)
    ]
    assert sizes == [32, 16, 8, 4]
    conv1 = backbone.get_layer("conv1_conv")
    assert conv1.kernel_size == (3, 3) and conv1.strides == (1, 1)
    names = {layer.name for layer in backbone.layers}
    assert not names & {"pool1_pad", "pool1_pool", "conv1_pad"}
    # Only conv1's kernel differs in size from the ImageNet stem's network.
    imagenet = applications.SGEResNet18(
        include_top=False, input_shape=(32, 32, 3)
    )
    assert (
        imagenet.count_params() - backbone.count_params()
        == (7 * 7 - 3 * 3) * 3 * 64
    )


def test_small_stem_lets_the_last_stage_learn_its_gates():
    """With the ImageNet stem a 32x32 image leaves conv5 1x1: no gamma gradient."""
    x, y = images(4, 32), np.eye(5)[[0, 1, 2, 3]]
    moved = {}
    for stem in ("imagenet", "small"):
        model = small_model(stem=stem)
        model.compile(keras.optimizers.SGD(0.1), "categorical_crossentropy")
        model.fit(x, y, epochs=1, batch_size=4, verbose=0)
        gamma = model.get_layer("conv5_block2_sge").gamma
        moved[stem] = np.abs(keras.ops.convert_to_numpy(gamma)).max()
    assert moved["imagenet"] == 0.0 and moved["small"] > 0.0, moved


def test_small_stem_model_harness(tmp_path):
    harness.run_model_test(
        lambda: small_model(classes=3, stem="small"),
        images(2, 32),
        expected_output_shape=(2, 3),
        run_mixed_precision=False,
        tmp_path=tmp_path,
    )


def test_imagenet_stem_weights_do_not_load_into_the_small_stem(tmp_path):
    path = str(tmp_path / "imagenet_stem.weights.h5")
    small_model().save_weights(path)
    with pytest.raises(
        ValueError, match=re.escape("conv1_conv/kernel has shape (3, 3, 3, 64)")
    ):
        small_model(stem="small", weights=path)


# --------------------------------------------------------------------------
# The shared harness: config round trip, fit, mixed precision, .keras
# --------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_model_harness(tmp_path):
    harness.run_model_test(
        lambda: small_model(classes=3),
        images(2, 32),
        expected_output_shape=(2, 3),
        tmp_path=tmp_path,
    )


@pytest.mark.tensorflow_only
@pytest.mark.timeout(600)
def test_saved_model_served_without_keras_sge(tmp_path):
    model = small_model(classes=3)
    keras_out, served = harness.export_and_serve_in_fresh_process(
        model, images(2, 32), tmp_path
    )
    np.testing.assert_allclose(served, keras_out, rtol=1e-4, atol=1e-5)
