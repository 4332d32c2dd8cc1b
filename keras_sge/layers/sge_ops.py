"""The SGE computation as functions: forward, hand-written gradient, dispatch.

`keras_sge.SGE` calls `sge_output` and `sge_gate`; `keras_sge.layers.SGEResidual`
calls `sge_residual_relu`, the same forward and gradient with a residual block's
add and ReLU in the same compiled function.

Why not just the layer's ops and autodiff:

- Passes over memory are the cost (SGE is bandwidth-bound). The math is
  written so that a fusing compiler makes about four passes over the feature
  map (group means; similarity map; gate multiply = read + write), and the
  gradient about five (<dy, x> per position; the mean term; dx = read dy +
  write), with the (N, H*W, G) statistics in between.
- On the TensorFlow backend each of `sge_output`'s forward and backward is
  an XLA-compiled `tf.function` (`jit_compile=True`): TensorFlow's graph
  executor runs every op as its own kernel (a dozen passes, and slow
  reductions/broadcasts over the 4- to 32-wide innermost group axis), while
  XLA fuses them into a few loops. It runs eagerly, or nested inside the
  graphs Keras's `fit`, `evaluate` and `predict` trace, compiled once per
  input shape and dtype; every other graph gets the same maths as plain ops
  (see `set_compilation`), because a graph that may be exported must not
  hold an XLA-only function. On JAX the same functions run under `jax.jit`.
  On PyTorch (and if compilation is switched off with
  `set_compilation(False)`) they run op by op.
- The gradient is a custom VJP (`keras.ops.custom_gradient`) that reuses
  the gate, the normalised map and the group means saved by the forward
  pass, instead of differentiating through a dozen intermediate tensors. It
  equals the autodiff gradient (tests/layers/test_sge_speed_paths.py), and
  is finite where autodiff is not: on a 1x1 or spatially constant map the
  std is 0 and autodiff through `sqrt` gives NaN, here that term is 0.

Layouts: channels_last works on the view (N, H*W, G, C/G), channels_first on
(N, G, C/G, H*W); both keep a group's channels contiguous, as the
reference's NCHW view does. All statistics are float32; the output is in the
input's dtype.
"""

import contextlib
import functools
import sys

import keras
from keras import ops

STATS_DTYPE = "float32"

_COMPILE = True

# Keras's trainer runs every `fit`, `evaluate` and `predict` step (and the
# `*_on_batch` methods) through these public, overridable Model methods; a
# graph traced inside one of them is an execution function, which Keras
# never saves (`TFLayer._trackable_children` drops them from SavedModels).
_KERAS_STEP_METHODS = frozenset({"train_step", "test_step", "predict_step"})


def set_compilation(enabled):
    """Switches the compiled functions (XLA on TF, jax.jit on JAX) on/off.

    On (the default), TensorFlow uses them only where the graph cannot end
    up in an artifact: eager calls, and graphs traced by a Keras model's
    `train_step`, `test_step` or `predict_step` (`fit`, `evaluate`,
    `predict`, the `*_on_batch` methods, custom loops that call them) or
    with `training=True`. Every other graph (`model.export` in any format,
    `tf.saved_model.save`, converters, a plain `tf.function` around the
    model) gets the same maths as plain ops: the compiled functions nest in
    the graph as XLA-only functions (`_XlaMustCompile`), which TensorFlow
    Serving does not run by default and tf2onnx cannot convert. On JAX
    `jax.jit` nests into any outer trace, so it is always used.

    Off, every backend runs op by op (what `no_xla()` does). The numbers are
    the same either way, to float32 rounding. Returns the previous setting.
    """
    global _COMPILE
    if not isinstance(enabled, bool):
        raise ValueError(
            f"`enabled` must be True or False. Received: enabled={enabled!r}"
        )
    previous = _COMPILE
    _COMPILE = enabled
    return previous


@contextlib.contextmanager
def no_xla():
    """SGE layers traced inside this block use plain backend ops, no XLA.

    Exports do not need it: the compiled functions are only used eagerly
    and in the graphs of Keras's `fit`, `evaluate` and `predict` (see
    `set_compilation`), so `model.export(...)` in every format and
    `tf.saved_model.save` already trace plain ops. This block makes those
    plain too: to debug, or to time the difference. The numbers are the
    same to float32 rounding.

    ```python
    import keras
    import keras_sge

    model = keras.Sequential([keras.Input((8, 8, 16)), keras_sge.SGE(groups=4)])
    with keras_sge.no_xla():
        outputs = model.predict(keras.random.normal((2, 8, 8, 16)), verbose=0)
    ```
    """
    previous = set_compilation(False)
    try:
        yield
    finally:
        set_compilation(previous)


def _use_compiled_functions(training):
    """Whether the SGE call being traced now should use the compiled functions."""
    if not _COMPILE or keras.backend.backend() != "tensorflow":
        return _COMPILE
    import tensorflow as tf

    return tf.executing_eagerly() or training is True or _inside_keras_step()


def _inside_keras_step():
    """Whether a Keras model's train/test/predict step is on the call stack.

    Tracing a `tf.function` runs its Python synchronously, so the step that
    traces this layer is an outer frame (also in `tf.distribute` replica
    threads, which start at the step function). A step that AutoGraph
    converted (a `tf.function` around `model.predict_step`, `strategy.run`)
    runs as `tf__<name>`.
    """
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_name.removeprefix("tf__")
        if name in _KERAS_STEP_METHODS and isinstance(
            frame.f_locals.get("self"), keras.Model
        ):
            return True
        frame = frame.f_back
    return False


def integer_litert_export_in_progress():
    """Whether Keras's LiteRT export is tracing for full-integer quantization.

    `model.export(path, format="litert", representative_dataset=...)` (on
    TensorFlow) calibrates and quantizes activations to int8, which SGE's
    normalisation does not survive; the layer refuses it (see
    `keras_sge.litert`). Keras keeps the converter options on its exporter
    object, an outer frame of the trace.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    if (
        tf.executing_eagerly()
    ):  # exports trace graphs; eager calls skip the stack walk
        return False
    frame = sys._getframe(1)
    while frame is not None:
        exporter = frame.f_locals.get("self")
        if type(exporter).__name__ == "LiteRTExporter":
            return (
                getattr(exporter, "kwargs", {}).get("representative_dataset")
                is not None
            )
        frame = frame.f_back
    return False


class _Layout:
    """Axis bookkeeping for one data format, on the 4D grouped view."""

    def __init__(self, groups, channels_last):
        self.groups = groups
        self.channels_last = channels_last
        if channels_last:  # (N, P, G, K)
            self.pos, self.chan = 1, 3
            self.stat_pos = 1  # positions axis of the (N, P, G) map
        else:  # (N, G, K, P)
            self.pos, self.chan = 3, 2
            self.stat_pos = 2  # (N, G, P)

    def split(self, x):
        batch = ops.shape(x)[0]
        if self.channels_last:
            per_group = x.shape[-1] // self.groups
            return ops.reshape(x, (batch, -1, self.groups, per_group))
        per_group = x.shape[1] // self.groups
        return ops.reshape(x, (batch, self.groups, per_group, -1))

    def per_group(self, weight):
        """A (G,) weight broadcast against the (N, P, G) / (N, G, P) map."""
        return weight if self.channels_last else ops.expand_dims(weight, -1)

    def expand(self, stat):
        """(N, P, G) / (N, G, P) -> broadcastable against the grouped view."""
        return ops.expand_dims(stat, self.chan)

    def unflatten_gate(self, gate, input_shape):
        if self.channels_last:
            shape = (
                input_shape[0],
                input_shape[1],
                input_shape[2],
                self.groups,
            )
        else:
            shape = (
                input_shape[0],
                self.groups,
                input_shape[2],
                input_shape[3],
            )
        return ops.reshape(gate, shape)


def _to_stats(x):
    # No copy for a float32 input: cast only what is not float32 already
    # (under XLA the cast fuses into the reductions that read it).
    if keras.backend.standardize_dtype(x.dtype) == STATS_DTYPE:
        return x
    return ops.cast(x, STATS_DTYPE)


def _similarity_stats(grouped, layout):
    """(centered similarity map, its std, the group mean feature).

    Two reads of the input: the mean feature, then the similarity map (a
    multiply-reduce over the group's channels that a fusing compiler does
    in one read). The map's mean over positions is computed exactly as
    sum_k g_k^2 (mean_p <x_p, g> = <mean_p x_p, g> = <g, g>) rather than by
    reducing the map: the same value to float32 rounding (the reference's
    own mean has that rounding too), and it keeps XLA from re-reading the
    input for it.
    """
    x32 = _to_stats(grouped)
    mean_feature = ops.mean(x32, axis=layout.pos, keepdims=True)
    similarity = ops.sum(x32 * mean_feature, axis=layout.chan)
    similarity_mean = ops.sum(ops.square(mean_feature), axis=layout.chan)
    centered = similarity - similarity_mean
    axis = layout.stat_pos
    dof = _dof(similarity, axis)
    std = ops.sqrt(
        ops.sum(ops.square(centered), axis=axis, keepdims=True) / dof
    )
    return centered, std, mean_feature


def _dof(stat_map, axis):
    # max(H*W - 1, 1): on a 1x1 map `centered` is 0, so the normalised map
    # is 0 (gate sigmoid(beta)) instead of the reference's 0/0 = NaN.
    positions = ops.cast(ops.shape(stat_map)[axis], STATS_DTYPE)
    return ops.maximum(positions - 1.0, 1.0)


def _gate_from_stats(centered, std, gamma, beta, layout, epsilon):
    """(gate, normalized map, 1 / (std + eps)): elementwise, fusable."""
    inv_std = 1.0 / (std + epsilon)
    normalized = centered * inv_std
    gate = ops.sigmoid(
        normalized * layout.per_group(gamma) + layout.per_group(beta)
    )
    return gate, normalized, inv_std


def _gate(x, gamma, beta, layout, epsilon):
    grouped = layout.split(x)
    centered, std, _ = _similarity_stats(grouped, layout)
    gate, _, _ = _gate_from_stats(centered, std, gamma, beta, layout, epsilon)
    return gate


def _forward(x, gamma, beta, layout, epsilon):
    """(output, centered, std, mean_feature): the output and what the VJP needs.

    The saved map is (N, H*W, G), 1/(C/G) of the input; the gate and the
    normalised map are recomputed from it, fused into the backward passes.
    """
    grouped = layout.split(x)
    centered, std, mean_feature = _similarity_stats(grouped, layout)
    gate, _, _ = _gate_from_stats(centered, std, gamma, beta, layout, epsilon)
    # Pass 3: the gate multiply, in the input's dtype, broadcast (not tiled)
    # over the group's channels: one read, one write.
    output = grouped * layout.expand(ops.cast(gate, grouped.dtype))
    output = ops.reshape(output, ops.shape(x))
    return output, centered, std, mean_feature


def _backward(
    upstream, x, gamma, beta, centered, std, mean_feature, layout, epsilon
):
    """The vector-Jacobian product of `_forward`'s output.

    With s the gate, z the normalised map, d the centred similarity map,
    sigma its std and g the group mean feature (all per sample and group):

        ds      = <dy, x>                     per position (sum over channels)
        da      = ds * s * (1 - s)
        dgamma  = sum(da * z), dbeta = sum(da)
        dz      = gamma * da
        dd      = dz / (sigma + eps) + d * dsigma / (dof * sigma),
                  dsigma = -sum(dz * d) / (sigma + eps)^2   (0 where sigma = 0)
        dc      = dd - mean(dd)               (through the centring)
        dg      = sum_positions(dc * x)
        dx      = dy * s + dc * g + dg / P
    """
    axis = layout.stat_pos
    gate, normalized, inv_std = _gate_from_stats(
        centered, std, gamma, beta, layout, epsilon
    )
    x32 = _to_stats(layout.split(x))
    dy32 = _to_stats(layout.split(upstream))
    # Pass 1: <dy, x> over the group's channels.
    dgate = ops.sum(dy32 * x32, axis=layout.chan)
    dlogit = dgate * gate * (1.0 - gate)
    reduce_axes = (0, 1) if layout.channels_last else (0, 2)
    dgamma = ops.sum(dlogit * normalized, axis=reduce_axes)
    dbeta = ops.sum(dlogit, axis=reduce_axes)
    dnormalized = dlogit * layout.per_group(gamma)
    dof = _dof(centered, axis)
    dstd = -ops.sum(
        dnormalized * centered, axis=axis, keepdims=True
    ) * ops.square(inv_std)
    safe_std = ops.where(std > 0, std, 1.0)
    dcentered_scale = ops.where(std > 0, dstd / (dof * safe_std), 0.0)
    dcentered = dnormalized * inv_std + centered * dcentered_scale
    dsimilarity = dcentered - ops.mean(dcentered, axis=axis, keepdims=True)
    # Pass 2: the mean feature's gradient, a weighted sum over positions.
    dsim = layout.expand(dsimilarity)
    dmean = ops.sum(dsim * x32, axis=layout.pos, keepdims=True)
    positions = ops.cast(ops.shape(centered)[axis], STATS_DTYPE)
    # Pass 3: dx = dy * s + dc * g + dg / P (read dy and x, write dx).
    dx = dy32 * layout.expand(gate) + dsim * mean_feature + dmean / positions
    dx = ops.cast(ops.reshape(dx, ops.shape(x)), x.dtype)
    return dx, dgamma, dbeta


def _forward_residual(x, shortcut, gamma, beta, layout, epsilon):
    """`relu(shortcut + x * gate)` and what the VJP needs (see `_forward`).

    One compiled function: a fusing compiler makes the gate multiply, the
    residual add and the ReLU one pass (read x and the shortcut, write the
    output) instead of three full-size kernels.
    """
    gated, centered, std, mean_feature = _forward(
        x, gamma, beta, layout, epsilon
    )
    output = ops.relu(shortcut + gated)
    return output, centered, std, mean_feature


def _backward_residual(
    upstream,
    output,
    x,
    gamma,
    beta,
    centered,
    std,
    mean_feature,
    layout,
    epsilon,
):
    """The VJP of `_forward_residual`: (dx, dshortcut, dgamma, dbeta).

    The ReLU passes the upstream gradient where the output is positive (the
    pre-activation is > 0 exactly there; at 0 the gradient is 0, as the
    backends' own ReLU gradients); the add passes it unchanged to both the
    shortcut and SGE's output, whose VJP is `_backward`.
    """
    masked = ops.where(output > 0, upstream, ops.zeros_like(upstream))
    dx, dgamma, dbeta = _backward(
        masked, x, gamma, beta, centered, std, mean_feature, layout, epsilon
    )
    return dx, masked, dgamma, dbeta


# ---------------------------------------------------------------------------
# Backend dispatch: compiled forward / backward per configuration.
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _compiled(groups, channels_last, epsilon, channels, compile_):
    # `channels` is in the key because traces relax unknown N, H, W to None
    # (reduce_retracing) but the grouped view needs C statically.
    layout = _Layout(groups, channels_last)

    def forward(x, gamma, beta):
        return _forward(x, gamma, beta, layout, epsilon)

    def backward(upstream, x, gamma, beta, centered, std, mean_feature):
        return _backward(
            upstream,
            x,
            gamma,
            beta,
            centered,
            std,
            mean_feature,
            layout,
            epsilon,
        )

    def gate(x, gamma, beta):
        return _gate(x, gamma, beta, layout, epsilon)

    def forward_residual(x, shortcut, gamma, beta):
        return _forward_residual(x, shortcut, gamma, beta, layout, epsilon)

    def backward_residual(
        upstream, output, x, gamma, beta, centered, std, mean_feature
    ):
        return _backward_residual(
            upstream,
            output,
            x,
            gamma,
            beta,
            centered,
            std,
            mean_feature,
            layout,
            epsilon,
        )

    functions = _Functions(
        layout, forward, backward, gate, forward_residual, backward_residual
    )
    backend = keras.backend.backend()
    if compile_ and backend == "tensorflow":
        import tensorflow as tf

        def xla(fn):
            return tf.function(
                fn, jit_compile=True, reduce_retracing=True, autograph=False
            )

        functions = functions.map(xla)
    elif compile_ and backend == "jax":
        import jax

        functions = functions.map(jax.jit)
    return functions


class _Functions:
    """One configuration's functions: layout, forward/backward, gate, fused."""

    def __init__(
        self,
        layout,
        forward,
        backward,
        gate,
        forward_residual,
        backward_residual,
    ):
        self.layout = layout
        self.forward, self.backward, self.gate = forward, backward, gate
        self.forward_residual, self.backward_residual = (
            forward_residual,
            backward_residual,
        )

    def map(self, wrap):
        return _Functions(
            self.layout,
            *(
                wrap(fn)
                for fn in (
                    self.forward,
                    self.backward,
                    self.gate,
                    self.forward_residual,
                    self.backward_residual,
                )
            ),
        )


def _read(weight):
    """A weight's value as a plain tensor (not a variable handle).

    tf.custom_gradient must not see a variable read inside the function it
    wraps; the gradient still reaches the variable through this read.
    """
    weight = ops.convert_to_tensor(weight)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.convert_to_tensor(weight)
    return weight


def _functions(x, groups, data_format, epsilon, training):
    channels_last = data_format == "channels_last"
    channels = x.shape[-1 if channels_last else 1]
    return _compiled(
        groups,
        channels_last,
        float(epsilon),
        channels,
        _use_compiled_functions(training),
    )


def sge_output(
    x,
    gamma,
    beta,
    groups,
    epsilon=1e-5,
    data_format="channels_last",
    training=None,
):
    """SGE's output `x * gate`, in x's dtype, with the custom gradient.

    Args:
        x: (N, H, W, C) for channels_last, (N, C, H, W) for channels_first.
        gamma, beta: float32 (G,) tensors.
        groups, epsilon, data_format: as the `SGE` layer's.
        training: the Keras call's `training` flag. `True` marks a training
            graph, which is never exported, so it gets the compiled
            functions (see `set_compilation`); it does not change the maths.
    """
    fns = _functions(x, groups, data_format, epsilon, training)
    gamma, beta = _read(gamma), _read(beta)

    @ops.custom_gradient
    def _sge(x, gamma, beta):
        output, *saved = fns.forward(x, gamma, beta)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return fns.backward(upstream, x, gamma, beta, *saved)

        return output, grad

    return _sge(x, gamma, beta)


def sge_residual_relu(
    x,
    shortcut,
    gamma,
    beta,
    groups,
    epsilon=1e-5,
    data_format="channels_last",
    training=None,
):
    """`relu(shortcut + sge_output(x, ...))` in one compiled function.

    A residual block's SGE -> add -> ReLU: the gate multiply, the add and
    the ReLU fuse into one pass over the feature map (read x and shortcut,
    write the output) instead of three full-size kernels. Custom gradient
    with respect to x, shortcut, gamma and beta (the backward masks the
    upstream gradient by output > 0 and reuses SGE's VJP).

    Args:
        x: SGE's input, (N, H, W, C) / (N, C, H, W).
        shortcut: the residual, same shape and dtype as x.
        gamma, beta, groups, epsilon, data_format, training: as
            `sge_output`'s.
    """
    fns = _functions(x, groups, data_format, epsilon, training)
    gamma, beta = _read(gamma), _read(beta)

    @ops.custom_gradient
    def _fused(x, shortcut, gamma, beta):
        output, *saved = fns.forward_residual(x, shortcut, gamma, beta)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return fns.backward_residual(
                upstream, output, x, gamma, beta, *saved
            )

        return output, grad

    return _fused(x, shortcut, gamma, beta)


def sge_gate(
    x,
    gamma,
    beta,
    groups,
    epsilon=1e-5,
    data_format="channels_last",
    training=None,
):
    """The float32 gate, (N, H, W, G) / (N, G, H, W), `sge_output` uses."""
    fns = _functions(x, groups, data_format, epsilon, training)
    gate = fns.gate(x, _read(gamma), _read(beta))
    return fns.layout.unflatten_gate(gate, ops.shape(x))


def sge_output_autodiff(
    x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"
):
    """The same output through plain ops and autodiff (tests, benchmarks)."""
    layout = _Layout(groups, data_format == "channels_last")
    return _forward(x, gamma, beta, layout, float(epsilon))[0]
