"""The SGE computation as functions: forward, hand-written gradient, layouts.

`keras_sge.SGE` calls `sge_output` and `sge_gate`. There is one code path:
the same tensor ops run eagerly, inside Keras's `fit`/`predict`, inside a
`tf.function` the user writes, and in every exported graph (SavedModel,
ONNX, LiteRT), so what is measured in Keras is what is served.

SGE is bandwidth-bound (its FLOPs are negligible), so the ops are chosen
for the fewest and cheapest passes over the feature map, in a form each
runtime executes well without a fusing compiler:

- the group means are one spatial mean of the 4D input (no reshape);
- the similarity map sums `x * mean` over each group's channels, and the
  gate is broadcast back over them. How depends on the layout (see
  `_layout`): on TensorFlow in channels_last both are small matrix
  products with a constant block-diagonal 0/1 matrix over rows of a few
  groups, which TensorFlow, the LiteRT interpreter and onnxruntime run as
  dense GEMMs at memory speed, where a reduction or broadcast over the 4-
  to 32-wide innermost group axis is slow; elsewhere (channels_first, and
  the JAX and PyTorch backends, where XLA or torch handle the grouped
  view well) the tensor is viewed as (..., G, C/G) with a group's
  channels contiguous;
- the gate multiply is a plain same-shape (or leading-axis broadcast)
  multiply, which a following residual add and ReLU can fuse with.

Summing by a 0/1 matrix is exact up to float32 summation order: each
output is a sum of the same products. On GPUs where matrix products run in
TensorFloat-32 (TensorFlow's default on Ampere and newer), the group sums
are TF32 like the network's convolutions; switch TF32 off with
`tf.config.experimental.enable_tensor_float_32_execution(False)` for full
float32.

The gradient is a custom VJP (`keras.ops.custom_gradient`) that reuses the
normalised map and the group means saved by the forward pass instead of
differentiating through a dozen intermediates. It equals the autodiff
gradient (tests/layers/test_sge_speed_paths.py) and is finite where
autodiff is not: on a 1x1 or spatially constant map the std is 0 and
autodiff through `sqrt` gives NaN; here that term is 0.

All statistics are float32, gamma and beta are upcast to float32 where
they are used, and the output is in the input's dtype.
"""

import functools
import math

import keras
import numpy as np
from keras import ops

STATS_DTYPE = "float32"

# Groups per row of the block-diagonal group sums: 8 groups of C/G channels
# make rows of 32-256 values, long enough for a GEMM to run at memory speed
# while the matrix's zeros cost 8 multiply-adds per element (among the
# fastest of 2-64 on TensorFlow and LiteRT on a CPU; 64 was the slowest,
# benchmarks/bench_formulations.py).
_GROUPS_PER_ROW = 8


@functools.lru_cache(maxsize=None)
def _layout(groups, channels, data_format, backend):
    """The layout object that knows how to group, sum and broadcast.

    Cached: one per configuration, so the block matrices are built once,
    not on every call (eager calls build the layout each time).
    """
    if data_format == "channels_first":
        return _ChannelsFirst(groups, channels)
    if backend == "tensorflow":
        return _ChannelsLastBlocks(groups, channels)
    return _ChannelsLastGrouped(groups, channels)


class _ChannelsLastBlocks:
    """(N, H, W, C) as it is; per-group maps are (N, H, W, G).

    Group sums and the gate's broadcast are matrix products of rows of a
    few groups' channels with a constant 0/1 block-diagonal matrix: no
    transposes, no innermost-axis reductions or broadcasts.
    """

    positions = (1, 2)
    group_axis = -1
    map_rank = 4

    def __init__(self, groups, channels):
        self.groups = groups
        self.per_group = channels // groups
        self.row_groups = math.gcd(groups, _GROUPS_PER_ROW)
        # (row_groups * K, row_groups): column j sums group j's K channels.
        self.summing = np.kron(
            np.eye(self.row_groups, dtype="float32"),
            np.ones((self.per_group, 1), dtype="float32"),
        )

    def grouped(self, x):
        return x

    def ungrouped(self, y, x):
        return y

    def group_sum(self, t):
        rows = ops.reshape(t, (-1, self.row_groups * self.per_group))
        summed = ops.matmul(rows, ops.cast(self.summing, t.dtype))
        return ops.reshape(summed, _with_last(t, self.groups))

    def expand(self, m):
        rows = ops.reshape(m, (-1, self.row_groups))
        expanded = ops.matmul(rows, ops.cast(self.summing.T, m.dtype))
        return ops.reshape(
            expanded, _with_last(m, self.groups * self.per_group)
        )

    def weight(self, w):
        return w

    def gate_map(self, gate, x):
        # Broadcast: a 1x1 map's gate is one constant row per group.
        return ops.broadcast_to(gate, (*ops.shape(x)[:-1], self.groups))


class _GroupedView:
    """A reshaped view with a group's channels on their own axis.

    Subclasses set the axes; the per-group maps keep that axis with size 1
    (keepdims), so broadcasting them over the channels is free.
    """

    channel_axis = None  # the within-group channel axis of the view

    def __init__(self, groups, channels):
        self.groups = groups
        self.per_group = channels // groups

    def ungrouped(self, y, x):
        return ops.reshape(y, _shape_of(x))

    def group_sum(self, t):
        return ops.sum(t, axis=self.channel_axis, keepdims=True)

    def expand(self, m):
        return m


class _ChannelsLastGrouped(_GroupedView):
    """(N, H, W, C) viewed as (N, H, W, G, C/G); maps are (N, H, W, G, 1)."""

    positions = (1, 2)
    group_axis = 3
    channel_axis = 4
    map_rank = 5

    def grouped(self, x):
        return ops.reshape(x, _with_last(x, self.groups, self.per_group))

    def weight(self, w):
        return ops.reshape(w, (self.groups, 1))

    def gate_map(self, gate, x):
        gate = ops.squeeze(gate, axis=-1)
        return ops.broadcast_to(gate, (*ops.shape(x)[:-1], self.groups))


class _ChannelsFirst(_GroupedView):
    """(N, C, H, W) viewed as (N, G, C/G, H*W); maps are (N, G, 1, H*W).

    A group's channels are contiguous and the positions innermost, as in
    the reference's NCHW view: the reductions and broadcasts run along
    whole rows of positions.
    """

    positions = (3,)
    group_axis = 1
    channel_axis = 2
    map_rank = 4

    def grouped(self, x):
        return ops.reshape(x, (-1, self.groups, self.per_group, _positions(x)))

    def weight(self, w):
        return ops.reshape(w, (self.groups, 1, 1))

    def gate_map(self, gate, x):
        batch = ops.shape(x)[0]
        gate = ops.broadcast_to(gate, (batch, self.groups, 1, _positions(x)))
        return ops.reshape(gate, (batch, self.groups, *_spatial_shape(x)))


def _spatial_shape(x):
    """(H, W) of a 4D tensor, as static ints where known."""
    static = tuple(x.shape[-2:])
    if None not in static:
        return static
    dynamic = ops.shape(x)
    return tuple(dynamic[-2:])


def _positions(x):
    height, width = _spatial_shape(x)
    return height * width


def _shape_of(x):
    """x's shape as a reshape target: -1 for the batch, static where known."""
    rest = tuple(x.shape[1:])
    if None not in rest:
        return (-1, *rest)
    return tuple(ops.shape(x))


def _with_last(t, *last):
    """t's shape with its last axis replaced by `last` (a reshape target).

    The leading axis is -1 and the others static where known, so exported
    graphs hold constant reshape targets rather than shape arithmetic.
    """
    middle = tuple(t.shape[1:-1])
    if None not in middle:
        return (-1, *middle, *last)
    return (*tuple(ops.shape(t))[:-1], *last)


def _to_stats(x):
    # No copy for a float32 input: cast only what is not float32 already.
    if keras.backend.standardize_dtype(x.dtype) == STATS_DTYPE:
        return x
    return ops.cast(x, STATS_DTYPE)


def _count(t, axes):
    """The number of elements along `axes` of t, as a float32 scalar."""
    static = [t.shape[a] for a in axes]
    if None not in static:
        return ops.convert_to_tensor(float(math.prod(static)), STATS_DTYPE)
    dynamic = ops.shape(t)
    return ops.cast(math.prod(dynamic[a] for a in axes), STATS_DTYPE)


def _single_position(t, layout):
    """Whether t's map has one position, known from its static shape."""
    static = [t.shape[axis] for axis in layout.positions]
    return None not in static and math.prod(static) == 1


def _group_map_shape(layout):
    """The shape of one value per group that broadcasts against the maps."""
    shape = [1] * layout.map_rank
    shape[layout.group_axis] = layout.groups
    return tuple(shape)


def _similarity_stats(x32, layout):
    """(centred similarity map, its std, the group mean feature).

    The map's mean over positions is computed exactly as sum_k g_k^2
    (mean_p <x_p, g> = <mean_p x_p, g> = <g, g>) rather than by another
    reduction over the map: the same value to float32 rounding (the
    reference's own mean has that rounding too).
    """
    mean_feature = ops.mean(x32, axis=layout.positions, keepdims=True)
    if _single_position(x32, layout):
        # One position is its own mean: the centred map and its std are 0
        # and the gate is sigmoid(beta). As constants they keep the
        # degenerate all-zero ranges out of quantized exports (LiteRT's
        # int8 kernels abort on a zero scale).
        zeros = ops.zeros(_group_map_shape(layout), STATS_DTYPE)
        return zeros, zeros, mean_feature
    similarity = layout.group_sum(x32 * mean_feature)
    centered = similarity - layout.group_sum(ops.square(mean_feature))
    std = ops.sqrt(
        ops.sum(ops.square(centered), axis=layout.positions, keepdims=True)
        / _dof(centered, layout)
    )
    return centered, std, mean_feature


def _dof(stat_map, layout):
    # max(H*W - 1, 1): on a 1x1 map `centered` is 0, so the normalised map
    # is 0 (gate sigmoid(beta)) instead of the reference's 0/0 = NaN.
    return ops.maximum(_count(stat_map, layout.positions) - 1.0, 1.0)


def _gate_from_stats(centered, std, gamma, beta, layout, epsilon):
    """(gate, normalized map, 1 / (std + eps)), all per position and group."""
    # (std + eps) ** -1 rather than 1 / (std + eps): the same value, but
    # LiteRT has no int8 POW, so a full-integer export keeps this reciprocal
    # in float, where an int8 DIV fails at run time once int8 rounds a
    # small std + eps to zero.
    inv_std = ops.power(std + epsilon, -1.0)
    normalized = centered * inv_std
    gate = ops.sigmoid(normalized * layout.weight(gamma) + layout.weight(beta))
    return gate, normalized, inv_std


def _forward(x, gamma, beta, layout, epsilon):
    """(output, centered, std, mean_feature): the output and what the VJP needs."""
    grouped = layout.grouped(x)
    centered, std, mean_feature = _similarity_stats(_to_stats(grouped), layout)
    gate, _, _ = _gate_from_stats(centered, std, gamma, beta, layout, epsilon)
    # The gate goes to x's dtype before it is broadcast over the channels,
    # so the full-size multiply reads and writes x's dtype only.
    output = grouped * layout.expand(ops.cast(gate, grouped.dtype))
    return layout.ungrouped(output, x), centered, std, mean_feature


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
    positions = layout.positions
    gate, normalized, inv_std = _gate_from_stats(
        centered, std, gamma, beta, layout, epsilon
    )
    x32 = _to_stats(layout.grouped(x))
    dy32 = _to_stats(layout.grouped(upstream))
    dgate = layout.group_sum(dy32 * x32)
    dlogit = dgate * gate * (1.0 - gate)
    dgamma = _per_group_total(dlogit * normalized, layout)
    dbeta = _per_group_total(dlogit, layout)
    dnormalized = dlogit * layout.weight(gamma)
    dstd = -ops.sum(
        dnormalized * centered, axis=positions, keepdims=True
    ) * ops.square(inv_std)
    safe_std = ops.where(std > 0, std, 1.0)
    dcentered_scale = ops.where(
        std > 0, dstd / (_dof(centered, layout) * safe_std), 0.0
    )
    dcentered = dnormalized * inv_std + centered * dcentered_scale
    dsimilarity = layout.expand(
        dcentered - ops.mean(dcentered, axis=positions, keepdims=True)
    )
    dmean = ops.sum(dsimilarity * x32, axis=positions, keepdims=True)
    dx = (
        dy32 * layout.expand(gate)
        + dsimilarity * mean_feature
        + dmean / _count(dsimilarity, positions)
    )
    dx = ops.cast(layout.ungrouped(dx, x), x.dtype)
    return dx, dgamma, dbeta


def _per_group_total(stat_map, layout):
    """A per-position, per-group map summed to one value per group, (G,)."""
    axes = [
        axis
        for axis in range(len(stat_map.shape))
        if axis != layout.group_axis % len(stat_map.shape)
    ]
    return ops.reshape(ops.sum(stat_map, axis=axes), (-1,))


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


def _stats_weights(gamma, beta):
    """gamma and beta as float32 tensors, the dtype of the statistics.

    The variables follow the layer's dtype policy (bfloat16 under
    "bfloat16"); the gate is computed in float32 like the statistics it
    scales, so a low-precision weight is upcast here, where it is used.
    """
    return _to_stats(_read(gamma)), _to_stats(_read(beta))


def _layout_of(x, groups, data_format):
    channels = x.shape[-1 if data_format == "channels_last" else 1]
    return _layout(groups, channels, data_format, keras.backend.backend())


def sge_output(
    x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"
):
    """SGE's output `x * gate`, in x's dtype, with the custom gradient.

    Args:
        x: (N, H, W, C) for channels_last, (N, C, H, W) for channels_first.
        gamma, beta: (G,) tensors or variables of any float dtype; they
            are used in float32 and get gradients in their own dtype.
        groups, epsilon, data_format: as the `SGE` layer's.
    """
    epsilon = float(epsilon)

    @ops.custom_gradient
    def _sge(x, gamma, beta):
        # The layout reads x's shape inside the function: under torch.jit
        # tracing (Keras's ONNX export on PyTorch) a shape entry is a traced
        # value, which the function's recorded subgraph must itself produce.
        layout = _layout_of(x, groups, data_format)
        output, *saved = _forward(x, gamma, beta, layout, epsilon)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return _backward(upstream, x, gamma, beta, *saved, layout, epsilon)

        return output, grad

    # gamma and beta go to float32 outside the custom gradient: the VJP
    # works in float32 only, and autodiff of this cast returns their
    # gradients in their own dtype (bfloat16 variables under the "bfloat16"
    # policy). A float32 weight passes through unchanged.
    return _sge(x, *_stats_weights(gamma, beta))


def sge_gate(x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"):
    """The float32 gate, (N, H, W, G) / (N, G, H, W), `sge_output` uses."""
    layout = _layout_of(x, groups, data_format)
    grouped = layout.grouped(x)
    centered, std, _ = _similarity_stats(_to_stats(grouped), layout)
    gate, _, _ = _gate_from_stats(
        centered, std, *_stats_weights(gamma, beta), layout, float(epsilon)
    )
    return layout.gate_map(gate, x)


def sge_output_autodiff(
    x, gamma, beta, groups, epsilon=1e-5, data_format="channels_last"
):
    """The same output through the same ops and autodiff (tests, benchmarks)."""
    layout = _layout_of(x, groups, data_format)
    gamma, beta = _stats_weights(gamma, beta)
    return _forward(x, gamma, beta, layout, float(epsilon))[0]
