"""BASELINE for the benchmarks: the first, straightforward SGE layer.

SGE's maths as plain keras.ops with the autodiff gradient, before the fused
functions and the hand-written VJP of `sge_ops`, kept only so that the benchmarks can
measure "before" and "after" in the same process. Construction, validation,
weights and config are the current `SGE`'s, inherited; only `call` and
`gate` (and the helpers they use) are the old code. Do not use it in models.
"""

import keras
from keras import ops

from keras_sge.layers.sge import SGE

_STATS_DTYPE = "float32"


@keras.saving.register_keras_serializable(package="keras_sge_benchmarks")
class BaselineSGE(SGE):
    """The straightforward SGE: several separate ops, autodiff gradient."""

    def call(self, inputs):
        grouped = self._split_groups(inputs)
        gate = ops.cast(self._flat_gate(grouped), inputs.dtype)
        gated = grouped * ops.expand_dims(gate, self._group_channel_axis)
        return ops.reshape(gated, ops.shape(inputs))

    def gate(self, inputs):
        """Returns the sigmoid gate: one value per position and group.

        The shape is (N, H, W, G) for channels_last and (N, G, H, W) for
        channels_first, in float32 whatever the compute dtype. `call`
        multiplies each group's channels by exactly this gate.

        Args:
            inputs: the layer's input, (N, H, W, C) or (N, C, H, W).
        """
        inputs = ops.convert_to_tensor(inputs)
        if not self.built:
            self.build(inputs.shape)
        gate = self._flat_gate(self._split_groups(inputs))
        return self._unflatten_gate(gate, ops.shape(inputs))

    # The computations work on a flat view: channels_last becomes
    # (N, H*W, G, C/G) and channels_first (N, G, C/G, H*W). Both keep the
    # channels of a group contiguous, as the reference's NCHW view does.

    @property
    def _position_axis(self):
        return 1 if self.data_format == "channels_last" else 3

    @property
    def _group_channel_axis(self):
        return 3 if self.data_format == "channels_last" else 2

    def _split_groups(self, inputs):
        channels = inputs.shape[self.channel_axis]
        batch = ops.shape(inputs)[0]
        per_group = channels // self.groups
        if self.data_format == "channels_last":
            return ops.reshape(inputs, (batch, -1, self.groups, per_group))
        return ops.reshape(inputs, (batch, self.groups, per_group, -1))

    def _similarity(self, grouped):
        """Dot product of each position's feature with the group mean."""
        group_mean = ops.mean(grouped, axis=self._position_axis, keepdims=True)
        return ops.sum(grouped * group_mean, axis=self._group_channel_axis)

    def _normalize_over_positions(self, similarity):
        """(c - mean) / (unbiased std + epsilon) over the positions axis.

        `similarity` is (N, H*W, G) for channels_last and (N, G, H*W) for
        channels_first.
        """
        axis = 1 if self.data_format == "channels_last" else 2
        centered = similarity - ops.mean(similarity, axis=axis, keepdims=True)
        positions = ops.cast(ops.shape(similarity)[axis], _STATS_DTYPE)
        # max(H*W - 1, 1): on a 1x1 map `centered` is 0, so the result is 0
        # instead of the reference's 0/0 = NaN.
        dof = ops.maximum(positions - 1.0, 1.0)
        std = ops.sqrt(
            ops.sum(ops.square(centered), axis=axis, keepdims=True) / dof
        )
        return centered / (std + self.epsilon)

    def _flat_gate(self, grouped):
        """The gate, (N, H*W, G) or (N, G, H*W), from the grouped input."""
        grouped = ops.cast(grouped, _STATS_DTYPE)
        normalized = self._normalize_over_positions(self._similarity(grouped))
        return ops.sigmoid(
            normalized * self._per_group(self.gamma)
            + self._per_group(self.beta)
        )

    def _per_group(self, weight):
        """Broadcasts a (G,) weight against the flat similarity map."""
        if self.data_format == "channels_last":
            return weight
        return ops.expand_dims(weight, -1)

    def _unflatten_gate(self, gate, input_shape):
        if self.data_format == "channels_last":
            gate_shape = (
                input_shape[0],
                input_shape[1],
                input_shape[2],
                self.groups,
            )
        else:
            gate_shape = (
                input_shape[0],
                self.groups,
                input_shape[2],
                input_shape[3],
            )
        return ops.reshape(gate, gate_shape)
