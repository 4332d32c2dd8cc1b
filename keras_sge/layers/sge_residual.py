"""The end of a residual block with SGE on its branch, as one fused op."""

import keras
from keras import ops

from keras_sge.layers import sge_ops
from keras_sge.layers.sge import SGE


@keras.saving.register_keras_serializable(package="keras_sge")
class SGEResidual(SGE):
    """An `SGE` that can also end a residual block: `relu(shortcut + SGE(x))`.

    Called with one input it is `keras_sge.SGE` (same arguments, weights,
    `gate` and output). Called with the block's shortcut as well, it also
    applies the residual add and the ReLU, so that a fusing compiler (XLA
    under JAX or `jit_compile=True`) makes the gate multiply, the add and
    the ReLU one pass over the feature map; the numbers equal
    `relu(shortcut + SGE()(x))`. `keras_sge.applications` ends its SGE
    blocks with it.

    Call arguments:
        inputs: the residual branch, (N, H, W, C) or (N, C, H, W).
        shortcut: optional, the block's shortcut, the same shape; cast
            to the input's dtype (the compute dtype for an integer input).
            Without it the layer returns SGE's output.

    Example:

    ```python
    import keras
    import keras_sge

    inputs = keras.Input((16, 16, 32))
    branch = keras.layers.Conv2D(32, 3, padding="same")(inputs)
    outputs = keras_sge.layers.SGEResidual(groups=8)(branch, inputs)
    model = keras.Model(inputs, outputs)
    y = model(keras.random.normal((2, 16, 16, 32)))
    ```
    """

    def build(self, inputs_shape, shortcut_shape=None):
        # Keras names build()'s arguments after call()'s tensor arguments
        # (`<arg>_shape`, as MultiHeadAttention's), and its test harness
        # builds a two-input layer with `build(inputs_shape=...,
        # shortcut_shape=...)`. The weights depend on the branch only; the
        # shortcut's shape is checked in `call`.
        super().build(inputs_shape)

    def call(self, inputs, shortcut=None):
        if shortcut is None:
            return super().call(inputs)
        inputs = self._to_compute_dtype(inputs)
        shortcut = ops.convert_to_tensor(shortcut)
        if None not in tuple(shortcut.shape) + tuple(inputs.shape) and tuple(
            shortcut.shape
        ) != tuple(inputs.shape):
            raise ValueError(
                "`shortcut` must have the shape of the input. Received: "
                f"inputs.shape={tuple(inputs.shape)}, shortcut.shape={tuple(shortcut.shape)}"
            )
        if shortcut.dtype != inputs.dtype:
            shortcut = ops.cast(shortcut, inputs.dtype)
        gated = sge_ops.sge_output(inputs, *self._sge_arguments())
        return ops.relu(shortcut + gated)

    def compute_output_shape(self, inputs_shape, shortcut_shape=None):
        return tuple(inputs_shape)
