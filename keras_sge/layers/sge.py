"""Spatial Group-wise Enhance (SGE), Li, Hu and Yang, arXiv 1905.09646."""

import keras
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from keras_sge.arguments import check_positive_int
from keras_sge.arguments import standardize_data_format
from keras_sge.layers import sge_ops


@keras.saving.register_keras_serializable(package="keras_sge")
class SGE(keras.layers.Layer):
    """Spatial Group-wise Enhance.

    The channels are split into `groups` groups of contiguous channels. Within
    each group, every position's feature is compared (dot product) with the
    group's spatially averaged feature; the resulting similarity map is
    normalised over the positions (mean 0, unbiased std 1), scaled and shifted
    by a learned `gamma` and `beta` per group, and passed through a sigmoid
    that gates the group's features:

    ```
    g      = mean_{h,w} x[h, w]                       (per sample and group)
    c      = <x[h, w], g>                             (one value per position)
    c_hat  = (c - mean(c)) / (std(c) + epsilon)       (std unbiased, over h, w)
    output = x * sigmoid(gamma * c_hat + beta)
    ```

    This reproduces the official PyTorch code (`implus/PytorchInsight`,
    `resnet_sge.py`) to float32 precision, with one deliberate difference: on
    a 1x1 map the reference divides by `H*W - 1 = 0` and returns NaN, while
    this layer divides by `max(H*W - 1, 1)`, so the normalised map is 0 and
    the gate is `sigmoid(beta)`. A spatially constant map likewise gives a
    normalised map of 0 (its std is 0 and `epsilon` keeps the division
    finite).

    The statistics are computed in float32 whatever the compute dtype, and
    the output comes back in the compute dtype, so the layer is safe under
    `mixed_float16` and `mixed_bfloat16`. `gamma` and `beta` follow the
    dtype policy's variable dtype (float32 under the mixed policies,
    bfloat16 under `"bfloat16"`) and are upcast to float32 where the gate
    is computed; weights saved in either dtype load into the other.
    Integer and bool inputs are cast to the compute dtype, as a `Conv2D`
    takes them.

    Speed and export: SGE is bandwidth-bound, so the layer is written as
    a few passes over the feature map in plain tensor ops (see
    `keras_sge.layers.sge_ops`) that every runtime runs well without a
    fusing compiler, and its gradient is a hand-written VJP that reuses the
    forward's statistics. It matches the autodiff gradient, but is finite
    on a 1x1 or constant map, where autodiff through the zero std gives
    NaN. The same ops run in Keras (eager, `fit`, `predict`, any backend)
    and in every exported graph (`model.export` as SavedModel, ONNX or
    LiteRT, `tf.saved_model.save`), which run without keras_sge (TF
    Serving, onnxruntime, LiteRT). Keras's full-integer (int8) LiteRT export
    runs, but int8 statistics cost accuracy: export such models with
    `keras_sge.litert.export_integer`, which quantizes the rest of the
    model and keeps SGE in float.

    Args:
        groups: int, the number of channel groups (64 in the paper). The
            number of channels must be divisible by it.
        epsilon: float, added to the standard deviation (not the variance),
            as in the reference.
        data_format: `"channels_last"` (N, H, W, C) or `"channels_first"`
            (N, C, H, W). Defaults to `keras.config.image_data_format()`.
        gamma_initializer: initializer for the per-group scale. The paper's
            init, zeros, makes every gate `sigmoid(1)` at the start.
        beta_initializer: initializer for the per-group shift (ones).
        gamma_regularizer, beta_regularizer: optional regularizers.
        gamma_constraint, beta_constraint: optional constraints.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: (N, H, W, C) or (N, C, H, W).

    Example:

    ```python
    import keras
    import keras_sge

    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(64, 3, padding="same"),
        keras_sge.SGE(groups=8),
    ])
    y = model(keras.random.normal((2, 32, 32, 3)))
    ```
    """

    def __init__(
        self,
        groups=64,
        epsilon=1e-5,
        data_format=None,
        gamma_initializer="zeros",
        beta_initializer="ones",
        gamma_regularizer=None,
        beta_regularizer=None,
        gamma_constraint=None,
        beta_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("groups", groups)
        if not keras.backend.is_float_dtype(self.compute_dtype):
            # The gate is a fraction: in an integer dtype the output is 0.
            raise ValueError(
                "SGE computes in a floating-point dtype. Received: "
                f"dtype={self.dtype_policy.name!r} (compute dtype "
                f"{self.compute_dtype})"
            )
        if not epsilon >= 0:
            raise ValueError(
                "`epsilon` must be a non-negative number. "
                f"Received: epsilon={epsilon!r}"
            )
        self.groups = groups
        self.epsilon = float(epsilon)
        self.data_format = standardize_data_format(data_format)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.beta_constraint = constraints.get(beta_constraint)

    @property
    def channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        channels = self._check_input_shape(input_shape)
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self.channel_axis: channels}
        )
        # gamma and beta are in the policy's variable dtype (float32 under
        # the mixed policies, bfloat16 under "bfloat16"), as Keras's own
        # GroupNormalization keeps them. autocast=False: sge_ops reads them
        # as they are and upcasts them to the float32 of the statistics,
        # where Keras's autocast would first round them to the compute dtype.
        self.gamma = self.add_weight(
            shape=(self.groups,),
            name="gamma",
            initializer=self.gamma_initializer,
            regularizer=self.gamma_regularizer,
            constraint=self.gamma_constraint,
            autocast=False,
        )
        self.beta = self.add_weight(
            shape=(self.groups,),
            name="beta",
            initializer=self.beta_initializer,
            regularizer=self.beta_regularizer,
            constraint=self.beta_constraint,
            autocast=False,
        )

    def _check_input_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "SGE expects a rank-4 input "
                f"({'(N, H, W, C)' if self.data_format == 'channels_last' else '(N, C, H, W)'}"
                f" for data_format={self.data_format!r}). "
                f"Received: input_shape={tuple(input_shape)} (rank {len(input_shape)})"
            )
        channels = input_shape[self.channel_axis]
        if channels is None:
            raise ValueError(
                "SGE needs a known channel dimension (axis "
                f"{self.channel_axis}, data_format={self.data_format!r}). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if channels % self.groups != 0:
            raise ValueError(
                f"The number of channels ({channels}) must be divisible by "
                f"groups ({self.groups}). Received: input_shape={tuple(input_shape)}"
            )
        return channels

    def call(self, inputs):
        inputs = self._to_compute_dtype(inputs)
        return sge_ops.sge_output(inputs, *self._sge_arguments())

    def _to_compute_dtype(self, inputs):
        """`inputs` as a tensor; integer and bool ones cast to the compute dtype.

        Keras autocasts only float inputs (`DTypePolicy.convert_input`), and
        in an integer dtype the gate (< 1) would truncate the output to 0.
        Conv2D and Dense take integer images as numbers: so does SGE.
        """
        inputs = ops.convert_to_tensor(inputs)
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if keras.backend.is_float_dtype(dtype):
            return inputs
        if dtype != "bool" and not keras.backend.is_int_dtype(dtype):
            raise ValueError(
                "SGE takes real-valued inputs (float, integer or bool). "
                f"Received: inputs.dtype={dtype}"
            )
        return ops.cast(inputs, self.compute_dtype)

    def gate(self, inputs):
        """Returns the sigmoid gate: one value per position and group.

        The shape is (N, H, W, G) for channels_last and (N, G, H, W) for
        channels_first, in float32 whatever the compute dtype. `call`
        multiplies each group's channels by exactly this gate (cast to the
        compute dtype); `SGEResidual` uses the same gate.

        Args:
            inputs: the layer's input, (N, H, W, C) or (N, C, H, W).
        """
        inputs = self._to_compute_dtype(inputs)
        if not self.built:
            self.build(inputs.shape)
        return sge_ops.sge_gate(inputs, *self._sge_arguments())

    def _sge_arguments(self):
        """(gamma, beta, groups, epsilon, data_format), as sge_ops takes them."""
        gamma, beta = (
            ops.convert_to_tensor(self.gamma),
            ops.convert_to_tensor(self.beta),
        )
        return gamma, beta, self.groups, self.epsilon, self.data_format

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "groups": self.groups,
                "epsilon": self.epsilon,
                "data_format": self.data_format,
                "gamma_initializer": initializers.serialize(
                    self.gamma_initializer
                ),
                "beta_initializer": initializers.serialize(
                    self.beta_initializer
                ),
                "gamma_regularizer": regularizers.serialize(
                    self.gamma_regularizer
                ),
                "beta_regularizer": regularizers.serialize(
                    self.beta_regularizer
                ),
                "gamma_constraint": constraints.serialize(
                    self.gamma_constraint
                ),
                "beta_constraint": constraints.serialize(self.beta_constraint),
            }
        )
        return config
