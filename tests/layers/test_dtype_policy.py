"""Keras's dtype-policy contract for every keras_sge layer.

Variables are created in the policy's variable dtype (float32 under
float32 and the mixed policies, bfloat16 under the full "bfloat16" policy,
as KerasHub's `run_precision_test` checks), the statistics are float32
whatever the policy, the output is in the compute dtype, gradients reach
each variable in its own dtype, and weights saved under one policy load
under another. Runs on TensorFlow, JAX and PyTorch.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_sge
from keras_sge.layers import SGEResidual
from keras_sge.layers import SqueezeExcite
from tests import harness

POLICIES = ("float32", *harness.PRECISION_POLICIES)
SHAPE = (2, 6, 5, 16)

# (class, constructor arguments, number of call inputs)
LAYERS = {
    "SGE": (keras_sge.SGE, {"groups": 4}, 1),
    "SGEResidual": (SGEResidual, {"groups": 4}, 2),
    "SqueezeExcite": (SqueezeExcite, {"reduction": 4}, 1),
}


def make_layer(name, policy):
    cls, kwargs, _ = LAYERS[name]
    layer = cls(
        **kwargs,
        data_format="channels_last",
        dtype=policy,
    )
    layer.build(SHAPE)
    # Non-trivial weights (SGE's init has gamma = 0, which hides gamma).
    rng = np.random.default_rng(0)
    layer.set_weights(
        [rng.normal(0.5, 0.5, tuple(w.shape)) for w in layer.weights]
    )
    return layer


def inputs_for(name, dtype="float32", seed=1):
    rng = np.random.default_rng(seed)
    count = LAYERS[name][2]
    return [
        rng.standard_normal(SHAPE).astype(dtype) * 3.0 for _ in range(count)
    ]


def as_float32(x):
    return ops.convert_to_numpy(ops.cast(x, "float32"))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_variables_follow_the_variable_dtype_output_the_compute_dtype(
    name, policy
):
    layer = make_layer(name, policy)
    policy = keras.dtype_policies.get(policy)
    for weight in layer.weights:
        assert weight.dtype == policy.variable_dtype, weight.path
    output = layer(*inputs_for(name))
    assert keras.backend.standardize_dtype(output.dtype) == (
        policy.compute_dtype
    )
    harness.assert_finite(output, f"{name} under {policy.name}")


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_bfloat16_output_is_the_float32_one_to_bfloat16_rounding(name):
    # The statistics stay float32 under "bfloat16": the error is only the
    # rounding of the inputs, the weights and the output to bfloat16.
    low = make_layer(name, "bfloat16")
    full = make_layer(name, "float32")
    full.set_weights([as_float32(w) for w in low.weights])
    inputs = [as_float32(ops.cast(x, "bfloat16")) for x in inputs_for(name)]
    got, want = as_float32(low(*inputs)), as_float32(full(*inputs))
    np.testing.assert_allclose(
        got, want, rtol=1e-2, atol=1e-2 * np.abs(want).max()
    )


def gradient_dtypes(layer, inputs):
    """The dtypes of d(sum of the output) / d(each trainable variable)."""
    backend = keras.backend.backend()
    inputs = [ops.cast(x, layer.compute_dtype) for x in inputs]
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = ops.sum(ops.cast(layer(*inputs), "float32"))
        grads = tape.gradient(loss, layer.trainable_variables)
    elif backend == "jax":
        import jax

        def loss(values):
            output, _ = layer.stateless_call(values, [], *inputs)
            return ops.sum(ops.cast(output, "float32"))

        grads = jax.grad(loss)([v.value for v in layer.trainable_variables])
    elif backend == "torch":
        loss = ops.sum(ops.cast(layer(*inputs), "float32"))
        loss.backward()
        grads = [v.value.grad for v in layer.trainable_variables]
    else:
        pytest.skip(f"no gradients on backend {backend}")
    assert all(g is not None for g in grads)
    for grad in grads:
        harness.assert_finite(grad)
    return [keras.backend.standardize_dtype(g.dtype) for g in grads]


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradients_have_each_variables_dtype(name, policy):
    # SGE's hand-written VJP works in float32: the variables' gradients
    # must come back in their own dtype all the same (bfloat16 under
    # "bfloat16"), or the optimizer would mix dtypes.
    layer = make_layer(name, policy)
    dtypes = gradient_dtypes(layer, inputs_for(name))
    assert dtypes == [v.dtype for v in layer.trainable_variables]


def model_under(policy):
    """Every layer in one model, built under `policy`."""
    with harness.dtype_policy(policy):
        inputs = keras.Input(SHAPE[1:])
        x = keras_sge.SGE(4, beta_initializer="random_normal")(inputs)
        x = SqueezeExcite(4)(x)
        outputs = SGEResidual(4, gamma_initializer="random_normal")(x, inputs)
        model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(0.5, 0.5, w.shape) for w in model.weights])
    return model


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
@pytest.mark.parametrize(
    "saved, loaded", [("float32", "bfloat16"), ("bfloat16", "float32")]
)
def test_weights_saved_under_one_policy_load_under_another(
    saved, loaded, suffix, tmp_path
):
    # Files written before the variables followed the policy hold float32
    # gamma and beta; they must load into a "bfloat16" model, and the
    # reverse.
    source = model_under(saved)
    path = str(tmp_path / f"model{suffix}")
    if suffix == ".keras":
        source.save(path)
    else:
        source.save_weights(path)
    target = model_under(loaded)
    target.load_weights(path)
    for got, want in zip(target.weights, source.weights):
        assert got.dtype == keras.dtype_policies.get(loaded).variable_dtype
        # Exact going up to float32; bfloat16's rounding going down.
        np.testing.assert_allclose(
            as_float32(got), as_float32(want), rtol=4e-3, err_msg=got.path
        )
    x = as_float32(ops.cast(inputs_for("SGE")[0], "bfloat16"))
    want = as_float32(source(x))
    np.testing.assert_allclose(
        as_float32(target(x)), want, rtol=2e-2, atol=2e-2 * np.abs(want).max()
    )
