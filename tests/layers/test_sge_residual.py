"""Tests for `SGEResidual`, SGE with a residual block's add and ReLU.

`SGEResidual(groups)(x, shortcut)` returns `relu(shortcut + x * gate)`;
SGE-ResNet blocks are built that way. It must equal the composition of an
`SGE` layer, an add and a ReLU in every dtype and data format, on
TensorFlow, JAX and PyTorch (tests/test_backends.py), and its gradient
(through SGE's hand-written VJP) must equal autodiff of that composition.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_sge
from keras_sge.layers import sge_ops
from keras_sge.layers.sge_residual import SGEResidual
from tests import harness
from tests.layers.test_sge_speed_paths import random_case
from tests.layers.test_sge_speed_paths import vjp

DTYPES = ("float32", *harness.PRECISION_POLICIES)


def layer_and_inputs(data_format, dtype, shape=(2, 7, 6, 32), groups=8, seed=0):
    rng = np.random.default_rng(seed)
    x, gamma, beta, _ = random_case(rng, data_format, shape, groups, 2.0)
    shortcut = rng.standard_normal(x.shape).astype("float32")
    layer = SGEResidual(groups, data_format=data_format, dtype=dtype)
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    cast = lambda a: ops.cast(a, layer.compute_dtype)  # noqa: E731
    return layer, cast(x), cast(shortcut)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_output_equals_add_and_relu_of_the_layer(data_format, dtype):
    layer, x, shortcut = layer_and_inputs(data_format, dtype)
    output = layer(x, shortcut)
    composed = ops.relu(ops.add(shortcut, keras_sge.SGE.call(layer, x)))
    assert keras.backend.standardize_dtype(output.dtype) == layer.compute_dtype
    got, want = (
        ops.convert_to_numpy(ops.cast(t, "float32")) for t in (output, composed)
    )
    harness.assert_finite(got)
    # float32: rounding only; mixed: the compute dtype's rounding of x * gate
    # (a fusing compiler may keep it unrounded before the add).
    eps = {
        "float32": 1e-6,
        "mixed_float16": 1e-3,
        "mixed_bfloat16": 8e-3,
        "bfloat16": 8e-3,
    }[dtype]
    np.testing.assert_allclose(
        got, want, rtol=2 * eps, atol=2 * eps * np.abs(want).max()
    )
    # The gate the output used is `SGE.gate`.
    gate = ops.convert_to_numpy(layer.gate(x))
    x32, s32 = (
        ops.convert_to_numpy(ops.cast(t, "float32")) for t in (x, shortcut)
    )
    if data_format == "channels_last":
        gated = x32 * np.repeat(gate, x32.shape[-1] // layer.groups, axis=-1)
    else:
        gated = x32 * np.repeat(gate, x32.shape[1] // layer.groups, axis=1)
    expected = np.maximum(s32 + gated, 0.0)
    np.testing.assert_allclose(
        got, expected, rtol=4 * eps, atol=4 * eps * np.abs(expected).max()
    )


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    "shape, groups", [((2, 7, 5, 16), 4), ((1, 9, 9, 64), 8), ((2, 3, 2, 8), 1)]
)
def test_gradient_equals_autodiff_of_the_composition(
    data_format, shape, groups
):
    rng = np.random.default_rng(sum(shape) + groups)
    x, gamma, beta, upstream = random_case(rng, data_format, shape, groups, 3.0)
    shortcut = rng.standard_normal(x.shape).astype("float32")
    config = {"groups": groups, "epsilon": 1e-5, "data_format": data_format}

    layer = SGEResidual(**config)
    layer.build(x.shape)

    def residual(x, shortcut, gamma, beta):
        # The layer with these gamma and beta in place of its variables, so
        # that their gradients come back from `vjp`.
        output, _ = layer.stateless_call([gamma, beta], [], x, shortcut)
        return output

    def composition(x, shortcut, gamma, beta):
        return ops.relu(
            shortcut + sge_ops.sge_output_autodiff(x, gamma, beta, **config)
        )

    got = vjp(residual, [x, shortcut, gamma, beta], upstream)
    want = vjp(composition, [x, shortcut, gamma, beta], upstream)
    for name, g, w in zip(["x", "shortcut", "gamma", "beta"], got, want):
        np.testing.assert_allclose(
            g,
            w,
            rtol=1e-4,
            atol=1e-5 * max(1.0, np.abs(w).max()),
            err_msg=f"d{name}",
        )
    # The ReLU is active somewhere and not everywhere: both branches tested.
    assert 0 < np.count_nonzero(got[1]) < got[1].size


def test_shortcut_of_another_shape_is_rejected():
    layer = SGEResidual(2, data_format="channels_last")
    with pytest.raises(
        ValueError,
        match=r"`shortcut` must have the shape of the input.*\(1, 4, 4, 4\)",
    ):
        layer(
            np.ones((1, 4, 4, 8), "float32"), np.ones((1, 4, 4, 4), "float32")
        )


def test_integer_inputs_are_taken_as_numbers_in_the_compute_dtype():
    # As SGE: an int32 branch is cast to float32, not gated to 0 in int32.
    rng = np.random.default_rng(3)
    x, shortcut = (rng.integers(-50, 50, (2, 5, 5, 8)) for _ in range(2))
    layer = SGEResidual(2, gamma_initializer="random_normal")
    output = layer(x.astype("int32"), shortcut.astype("int32"))
    assert keras.backend.standardize_dtype(output.dtype) == "float32"
    expected = layer(x.astype("float32"), shortcut.astype("float32"))
    harness.assert_all_close(output, expected)


def test_is_an_sge_layer_with_the_same_config():
    layer = SGEResidual(
        4, epsilon=1e-3, gamma_initializer="ones", name="block_sge"
    )
    assert isinstance(layer, keras_sge.SGE)
    config = layer.get_config()
    assert (
        config
        == keras_sge.SGE(
            4, epsilon=1e-3, gamma_initializer="ones", name="block_sge"
        ).get_config()
    )
    assert (
        keras.saving.get_registered_name(SGEResidual) == "keras_sge>SGEResidual"
    )


def test_called_without_a_shortcut_it_is_sge():
    # Code holding an SGE layer can call an SGEResidual as one: same weights,
    # same output, in a model of its own too.
    x = keras.random.normal((2, 6, 6, 16), seed=3)
    residual = SGEResidual(4, gamma_initializer="random_normal")
    plain = keras_sge.SGE(4)
    plain.build(x.shape)
    residual.build(x.shape)
    plain.set_weights(residual.get_weights())
    np.testing.assert_array_equal(
        ops.convert_to_numpy(residual(x)), ops.convert_to_numpy(plain(x))
    )
    inputs = keras.Input((6, 6, 16))
    model = keras.Model(inputs, residual(inputs))
    np.testing.assert_array_equal(
        ops.convert_to_numpy(model(x)), ops.convert_to_numpy(plain(x))
    )


def residual_model(spatial=(None, None)):
    inputs = keras.Input((*spatial, 16))
    shortcut = keras.layers.Conv2D(16, 1, name="shortcut")(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", name="branch")(inputs)
    sge = SGEResidual(
        4,
        gamma_initializer="random_normal",
        beta_initializer="random_normal",
        name="sge",
    )
    x = sge(x, shortcut)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_functional_model_with_residual_round_trips_config_and_keras_file(
    tmp_path,
):
    model = residual_model()
    x = (
        np.random.default_rng(1)
        .standard_normal((2, 7, 6, 16))
        .astype("float32")
    )
    expected = ops.convert_to_numpy(model(x))
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    harness.assert_all_close(clone(x), expected, rtol=1e-5, atol=1e-6)
    parents = {
        node.operation.name
        for node in clone.get_layer("sge")._inbound_nodes[0].parent_nodes
    }
    assert parents == {"branch", "shortcut"}
    path = harness.run_keras_saving_test(model, x, tmp_path)
    loaded = keras.saving.load_model(path)
    harness.assert_all_close(loaded(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.tensorflow_only
def test_saved_model_with_residual_serves_without_keras_sge(tmp_path):
    model = residual_model()
    x = (
        np.random.default_rng(2)
        .standard_normal((3, 8, 5, 16))
        .astype("float32")
    )
    expected, served = harness.export_and_serve_in_fresh_process(
        model, x, tmp_path
    )
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)


def test_training_step_with_residual_updates_gamma_and_beta():
    model = residual_model((8, 8))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 8, 8, 16)).astype("float32")
    y = rng.standard_normal((4, 16)).astype("float32")
    before = [w.copy() for w in model.get_layer("sge").get_weights()]
    model.fit(x, y, epochs=1, verbose=0)
    after = model.get_layer("sge").get_weights()
    assert all(
        np.all(np.isfinite(a)) and not np.allclose(a, b)
        for a, b in zip(after, before)
    )
