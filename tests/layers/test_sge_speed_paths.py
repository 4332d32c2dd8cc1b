"""Tests for SGE's ops and hand-written gradient (keras_sge/layers/sge_ops.py).

The hand-written VJP must equal autodiff through the plain ops (and the
PyTorch reference's autograd), every layout (channels_last as block sums or
as a grouped view, channels_first) must give the same numbers, in graphs
with unknown height and width too, and the gradient must stay finite where
autodiff is not (std 0). Like test_sge.py these run under TensorFlow, JAX
and PyTorch (tests/test_backends.py). No timing assertions: speed is
measured by benchmarks/.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_sge
from keras_sge.layers import sge_ops
from tests import harness


def vjp(fn, args, upstream):
    """Gradients of fn(*args) against `upstream`, on the current backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        args = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(args)
            output = fn(*args)
        grads = tape.gradient(
            output, args, output_gradients=tf.convert_to_tensor(upstream)
        )
    elif backend == "jax":
        import jax

        def gradients(upstream, *args):
            return jax.vjp(fn, *args)[1](upstream)

        # One jitted program: JAX compiles each eager op on its own, which
        # costs several times as much.
        grads = jax.jit(gradients)(
            ops.convert_to_tensor(
                upstream, dtype=str(np.asarray(upstream).dtype)
            ),
            *[ops.convert_to_tensor(a) for a in args],
        )
    elif backend == "torch":
        import torch

        args = [
            ops.convert_to_tensor(a).detach().requires_grad_(True) for a in args
        ]
        output = fn(*args)
        grads = torch.autograd.grad(
            output, args, ops.convert_to_tensor(upstream)
        )
    else:
        pytest.skip(f"no gradients on backend {backend}")
    return [ops.convert_to_numpy(ops.cast(g, "float32")) for g in grads]


def random_case(rng, data_format, shape_nhwc, groups, scale=1.0):
    x = (scale * rng.standard_normal(shape_nhwc)).astype("float32")
    if data_format == "channels_first":
        x = np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
    gamma = rng.standard_normal(groups).astype("float32")
    beta = rng.standard_normal(groups).astype("float32")
    upstream = rng.standard_normal(x.shape).astype("float32")
    return x, gamma, beta, upstream


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    "shape, groups, scale",
    [
        ((2, 7, 5, 16), 4, 1.0),
        ((1, 9, 9, 64), 8, 30.0),
        ((3, 4, 6, 12), 12, 0.1),
        ((2, 3, 2, 8), 1, 1.0),
    ],
)
def test_custom_gradient_equals_autodiff(data_format, shape, groups, scale):
    rng = np.random.default_rng(sum(shape) + groups)
    x, gamma, beta, upstream = random_case(
        rng, data_format, shape, groups, scale
    )
    config = {"groups": groups, "epsilon": 1e-5, "data_format": data_format}

    def fast(x, gamma, beta):
        return sge_ops.sge_output(x, gamma, beta, **config)

    def autodiff(x, gamma, beta):
        return sge_ops.sge_output_autodiff(x, gamma, beta, **config)

    fast_grads = vjp(fast, [x, gamma, beta], upstream)
    reference_grads = vjp(autodiff, [x, gamma, beta], upstream)
    for name, got, expected in zip(
        ["x", "gamma", "beta"], fast_grads, reference_grads
    ):
        np.testing.assert_allclose(
            got,
            expected,
            rtol=1e-4,
            atol=1e-5 * max(1.0, np.abs(expected).max()),
            err_msg=f"d{name}",
        )


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_gradient_matches_torch_reference_autograd(data_format):
    torch_reference = pytest.importorskip("keras_sge.testing.torch_reference")
    import torch

    rng = np.random.default_rng(21)
    groups = 4
    x_nhwc, gamma, beta, upstream_nhwc = random_case(
        rng, "channels_last", (2, 6, 7, 32), groups, 3.0
    )
    x_nchw = np.ascontiguousarray(np.transpose(x_nhwc, (0, 3, 1, 2)))
    upstream_nchw = np.ascontiguousarray(
        np.transpose(upstream_nhwc, (0, 3, 1, 2))
    )

    reference = torch_reference.SpatialGroupEnhance(groups)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(gamma).view(1, groups, 1, 1))
        reference.bias.copy_(torch.from_numpy(beta).view(1, groups, 1, 1))
    tx = torch.from_numpy(x_nchw).requires_grad_(True)
    reference(tx).backward(torch.from_numpy(upstream_nchw))
    expected = [
        tx.grad.numpy(),
        reference.weight.grad.numpy().ravel(),
        reference.bias.grad.numpy().ravel(),
    ]

    x, upstream = (
        (x_nhwc, upstream_nhwc)
        if data_format == "channels_last"
        else (x_nchw, upstream_nchw)
    )
    grads = vjp(
        lambda x, g, b: sge_ops.sge_output(x, g, b, groups, 1e-5, data_format),
        [x, gamma, beta],
        upstream,
    )
    if data_format == "channels_last":
        grads[0] = np.transpose(grads[0], (0, 3, 1, 2))
    for name, got, want in zip(["x", "gamma", "beta"], grads, expected):
        np.testing.assert_allclose(
            got,
            want,
            rtol=1e-4,
            atol=1e-5 * np.abs(want).max(),
            err_msg=f"d{name}",
        )


def numpy_sge(x_nhwc, gamma, beta, groups, epsilon=1e-5):
    """(output, gate) of SGE in float64, channels_last: the paper's formula."""
    n, h, w, c = x_nhwc.shape
    x = x_nhwc.astype("float64").reshape(n, h * w, groups, c // groups)
    similarity = (x * x.mean(axis=1, keepdims=True)).sum(axis=-1)
    centered = similarity - similarity.mean(axis=1, keepdims=True)
    std = np.sqrt((centered**2).sum(axis=1, keepdims=True) / (h * w - 1))
    gate = 1.0 / (1.0 + np.exp(-(centered / (std + epsilon) * gamma + beta)))
    output = x * gate[..., None]
    return output.reshape(n, h, w, c), gate.reshape(n, h, w, groups)


@pytest.mark.parametrize(
    "shape, groups",
    [((2, 8, 6, 32), 8), ((1, 5, 7, 48), 16), ((2, 3, 4, 6), 3)],
)
def test_every_layout_matches_the_float64_formula(shape, groups):
    # channels_last is summed by block-diagonal matrix products on
    # TensorFlow and through a grouped view elsewhere; channels_first uses a
    # grouped view too. Each layout, whichever the backend picks, must give
    # the formula's output and gate (the NCHW ones transposed back).
    rng = np.random.default_rng(3)
    x, gamma, beta, _ = random_case(rng, "channels_last", shape, groups, 5.0)
    want_output, want_gate = numpy_sge(x, gamma, beta, groups)
    channels = shape[-1]
    layouts = {
        "blocks": sge_ops._ChannelsLastBlocks(groups, channels),
        "grouped": sge_ops._ChannelsLastGrouped(groups, channels),
    }
    tensors = [ops.convert_to_tensor(a) for a in (x, gamma, beta)]
    for name, layout in layouts.items():
        output = sge_ops._forward(*tensors, layout, 1e-5)[0]
        np.testing.assert_allclose(
            ops.convert_to_numpy(output),
            want_output,
            rtol=1e-5,
            atol=1e-5 * np.abs(want_output).max(),
            err_msg=name,
        )
    for data_format in ("channels_last", "channels_first"):
        x_in = x if data_format == "channels_last" else to_nchw(x)
        output, gate = (
            ops.convert_to_numpy(
                fn(x_in, gamma, beta, groups, 1e-5, data_format)
            )
            for fn in (sge_ops.sge_output, sge_ops.sge_gate)
        )
        if data_format == "channels_first":
            output, gate = to_nhwc(output), to_nhwc(gate)
        np.testing.assert_allclose(
            output,
            want_output,
            rtol=1e-5,
            atol=1e-5 * np.abs(want_output).max(),
            err_msg=data_format,
        )
        np.testing.assert_allclose(
            gate, want_gate, rtol=1e-5, atol=1e-6, err_msg=data_format
        )


def to_nchw(x):
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


def to_nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_graph_with_unknown_batch_and_spatial_dims_matches_eager(data_format):
    # Exports trace with unknown batch, height and width: the reshape
    # targets and position counts must then come from the dynamic shape.
    import tensorflow as tf

    rng = np.random.default_rng(8)
    groups = 4
    _, gamma, beta, _ = random_case(rng, data_format, (1, 2, 2, 16), groups)
    spec = [None, None, None, None]
    spec[-1 if data_format == "channels_last" else 1] = 16

    def forward_and_gradients(x, gamma, beta, upstream):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            output = sge_ops.sge_output(
                x, gamma, beta, groups, 1e-5, data_format
            )
        grads = tape.gradient(
            output, [x, gamma, beta], output_gradients=upstream
        )
        gate = sge_ops.sge_gate(x, gamma, beta, groups, 1e-5, data_format)
        return [output, gate, *grads]

    graph = tf.function(
        forward_and_gradients,
        input_signature=[
            tf.TensorSpec(spec, "float32"),
            tf.TensorSpec([groups], "float32"),
            tf.TensorSpec([groups], "float32"),
            tf.TensorSpec(spec, "float32"),
        ],
    )
    # One trace, two input sizes (a 1x1 map among them).
    for shape in [(3, 7, 5, 16), (2, 1, 1, 16)]:
        x, _, _, upstream = random_case(rng, data_format, shape, groups, 2.0)
        args = [tf.constant(a) for a in (x, gamma, beta, upstream)]
        eager = forward_and_gradients(*args)
        traced = graph(*args)
        for name, got, want in zip(
            ["output", "gate", "dx", "dgamma", "dbeta"], traced, eager
        ):
            want = want.numpy()
            assert got.shape == want.shape, (shape, name)
            assert np.all(np.isfinite(want)), (shape, name)
            np.testing.assert_allclose(
                got.numpy(),
                want,
                rtol=1e-5,
                atol=1e-5 * max(1.0, np.abs(want).max()),
                err_msg=f"{shape} {name}",
            )


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("case", ["one_by_one", "constant"])
def test_gradient_is_finite_where_the_std_is_zero(data_format, case):
    # Autodiff through sqrt(0) gives NaN here; the VJP defines that term 0.
    rng = np.random.default_rng(4)
    if case == "one_by_one":
        x, gamma, beta, upstream = random_case(
            rng, data_format, (3, 1, 1, 8), 2
        )
    else:
        # 4x4 and 0.5: the means are exact in any summation order, so the
        # centred map is exactly 0 (with rounding noise in the mean the
        # 1/(std + eps) normalisation legitimately amplifies it).
        _, gamma, beta, upstream = random_case(
            rng, data_format, (2, 4, 4, 8), 2
        )
        x = np.full(upstream.shape, 0.5, "float32")
    dx, dgamma, dbeta = vjp(
        lambda x, g, b: sge_ops.sge_output(x, g, b, 2, 1e-5, data_format),
        [x, gamma, beta],
        upstream,
    )
    for grad in (dx, dgamma, dbeta):
        assert np.all(np.isfinite(grad))
    # The normalised map is 0, so gamma gets no gradient and the gate is
    # the constant sigmoid(beta): dbeta = sum(upstream * x) * s * (1 - s).
    # On a 1x1 map the centring removes the rest: dx = upstream * s. (On a
    # constant map larger than 1x1, dx also has the derivative of
    # d / (std + eps) at d = 0, which is 1 / eps: large, and correct.)
    np.testing.assert_allclose(dgamma, 0.0, atol=1e-6)
    gate = 1.0 / (1.0 + np.exp(-beta))
    axis = -1 if data_format == "channels_last" else 1
    if case == "one_by_one":
        shape = [1, 1, 1, 1]
        shape[axis] = 8
        per_channel = np.repeat(gate, 4).reshape(shape)
        np.testing.assert_allclose(
            dx, upstream * per_channel, rtol=1e-5, atol=1e-6
        )
    expected_dbeta = (upstream * x).reshape(-1, *x.shape[1:])
    expected_dbeta = (
        np.moveaxis(expected_dbeta, axis, -1).reshape(-1, 2, 4).sum(axis=(0, 2))
        * gate
        * (1 - gate)
    )
    np.testing.assert_allclose(dbeta, expected_dbeta, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("policy", harness.MIXED_POLICIES)
def test_mixed_precision_gradient_dtype_and_accuracy(policy):
    rng = np.random.default_rng(5)
    x, gamma, beta, upstream = random_case(
        rng, "channels_last", (2, 8, 8, 64), 4, 10.0
    )
    layer = keras_sge.SGE(4, data_format="channels_last", dtype=policy)
    compute = layer.compute_dtype
    x_low = ops.convert_to_numpy(ops.cast(x, compute)).astype("float32")
    config = {"groups": 4, "epsilon": 1e-5, "data_format": "channels_last"}

    def low(x, g, b):
        output = sge_ops.sge_output(ops.cast(x, compute), g, b, **config)
        assert keras.backend.standardize_dtype(output.dtype) == compute
        return ops.cast(output, "float32")

    got = vjp(low, [x_low, gamma, beta], upstream)
    want = vjp(
        lambda x, g, b: sge_ops.sge_output_autodiff(x, g, b, **config),
        [x_low, gamma, beta],
        upstream,
    )
    tolerance = 3e-2 if policy == "mixed_bfloat16" else 5e-3
    for name, a, b in zip(["x", "gamma", "beta"], got, want):
        assert np.all(np.isfinite(a)), name
        np.testing.assert_allclose(
            a,
            b,
            rtol=tolerance,
            atol=tolerance * np.abs(b).max(),
            err_msg=f"d{name}",
        )


def test_training_step_updates_gamma_and_beta():
    inputs = keras.Input((8, 8, 16))
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = keras_sge.SGE(4, gamma_initializer="random_normal", name="sge")(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=harness.backend_supports_jit(),
    )
    rng = np.random.default_rng(6)
    images = rng.standard_normal((8, 8, 8, 16)).astype("float32")
    labels = rng.integers(0, 3, 8)
    before = [
        ops.convert_to_numpy(w).copy() for w in model.get_layer("sge").weights
    ]
    model.fit(images, labels, epochs=1, batch_size=4, verbose=0)
    after = [ops.convert_to_numpy(w) for w in model.get_layer("sge").weights]
    for b, a in zip(before, after):
        assert np.all(np.isfinite(a))
        assert not np.allclose(a, b)
