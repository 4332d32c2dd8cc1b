"""Squeeze-and-Excitation (SE), Hu, Shen and Sun, arXiv 1709.01507."""

import keras
from keras import initializers
from keras import ops

from keras_sge.arguments import check_positive_int
from keras_sge.arguments import standardize_data_format

_STATS_DTYPE = "float32"


@keras.saving.register_keras_serializable(package="keras_sge")
class SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-Excitation: channels gated by a function of their means.

    The SGE paper's main comparison (SE-ResNet-50: 28.09M parameters, 77.18
    top-1, against 25.56M and 77.58 for SGE-ResNet-50):

    ```
    s      = mean_{h,w} x[h, w]                       (one value per channel)
    gate   = sigmoid(W2 relu(W1 s + b1) + b2)         (W1: C -> C / reduction)
    output = x * gate
    ```

    As in the reference SE-ResNets, both projections have biases and are
    initialised like torch's `nn.Linear`. The gate is computed in float32
    whatever the compute dtype, like SGE's statistics; the weights follow
    the dtype policy's variable dtype and are upcast to float32 there.

    Args:
        reduction: int, the bottleneck's channel reduction (16 in SENet).
            The hidden width is `max(channels // reduction, 1)`.
        data_format: `"channels_last"` or `"channels_first"`; defaults to
            `keras.config.image_data_format()`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Example:

    ```python
    import keras
    import keras_sge

    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(64, 3, padding="same"),
        keras_sge.layers.SqueezeExcite(reduction=16),
    ])
    y = model(keras.random.normal((2, 32, 32, 3)))
    ```
    """

    def __init__(self, reduction=16, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)
        self.data_format = standardize_data_format(data_format)

    @property
    def channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[self.channel_axis] is None:
            raise ValueError(
                "SqueezeExcite expects a rank-4 input with a known channel dimension "
                f"(data_format={self.data_format!r}). Received: input_shape={tuple(input_shape)}"
            )
        channels = input_shape[self.channel_axis]
        hidden = max(channels // self.reduction, 1)
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self.channel_axis: channels}
        )
        self.squeeze_kernel, self.squeeze_bias = self._linear(
            "squeeze", channels, hidden
        )
        self.excite_kernel, self.excite_bias = self._linear(
            "excite", hidden, channels
        )

    def _linear(self, name, fan_in, units):
        # torch's nn.Linear init: kernel and bias uniform in +-1/sqrt(fan_in).
        # The weights are in the policy's variable dtype; autocast=False
        # because `call` upcasts them to float32 rather than to the compute
        # dtype (see `_stats`).
        limit = 1.0 / fan_in**0.5
        kernel = self.add_weight(
            shape=(fan_in, units),
            name=f"{name}_kernel",
            initializer=initializers.VarianceScaling(
                1.0 / 3.0, mode="fan_in", distribution="uniform"
            ),
            autocast=False,
        )
        bias = self.add_weight(
            shape=(units,),
            name=f"{name}_bias",
            initializer=initializers.RandomUniform(-limit, limit),
            autocast=False,
        )
        return kernel, bias

    def call(self, inputs):
        spatial_axes = (1, 2) if self.data_format == "channels_last" else (2, 3)
        squeezed = ops.mean(ops.cast(inputs, _STATS_DTYPE), axis=spatial_axes)
        hidden = ops.relu(
            ops.matmul(squeezed, _stats(self.squeeze_kernel))
            + _stats(self.squeeze_bias)
        )
        gate = ops.sigmoid(
            ops.matmul(hidden, _stats(self.excite_kernel))
            + _stats(self.excite_bias)
        )
        gate = ops.expand_dims(
            ops.expand_dims(gate, spatial_axes[0]), spatial_axes[1]
        )
        return inputs * ops.cast(gate, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"reduction": self.reduction, "data_format": self.data_format}
        )
        return config


def _stats(weight):
    """A weight as a float32 tensor: the gate's matmuls run in float32.

    No cast for a float32 weight (every policy but "bfloat16"), so the
    float32 numbers are those of the weight itself.
    """
    weight = ops.convert_to_tensor(weight)
    if keras.backend.standardize_dtype(weight.dtype) == _STATS_DTYPE:
        return weight
    return ops.cast(weight, _STATS_DTYPE)
