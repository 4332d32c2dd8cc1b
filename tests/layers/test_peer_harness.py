"""The layers through Keras's own layer test harness.

`keras.src.testing.TestCase.run_layer_test` is the check every Keras layer
passes: config and serialization round trips, build, symbolic and eager
calls, weight and loss counts, a compiled training step and mixed_float16
(float32 variables, output in the compute dtype). It runs on every
backend; it skips its mixed-precision part on a torch CPU, as it documents
("Torch lacks support"). KerasHub's harness, with the full "bfloat16"
policy, runs in test_peer_harness_hub.py.

`SGEResidual` takes two tensors, `call(inputs, shortcut)`. Keras's harness
gives them by name, as for its own MultiHeadAttention: `input_shape` as
`{"inputs_shape": ..., "shortcut_shape": ...}`, built with
`build(inputs_shape, shortcut_shape)` and called with
`layer(inputs=..., shortcut=...)`. Its training step, though, calls the
layer with the whole dict as one positional argument, which only a
one-input layer takes (Keras's MultiHeadAttention tests turn it off too),
so that step is KerasHub's for `SGEResidual` (test_peer_harness_hub.py).
"""

from absl.testing import parameterized
from keras.src.testing import TestCase

from keras_sge.layers import SGE
from keras_sge.layers import SGEResidual
from keras_sge.layers import SqueezeExcite

SHAPES = {
    "channels_last": (2, 6, 5, 16),
    "channels_first": (2, 16, 6, 5),
}
# Every SGE argument that changes what the harness sees: a regularizer
# (one loss), a constraint (applied in the training step).
SGE_KWARGS = {
    "groups": 4,
    "epsilon": 1e-3,
    "gamma_initializer": "random_normal",
    "gamma_regularizer": "l2",
    "beta_constraint": "non_neg",
}
SE_KWARGS = {"reduction": 4}
DATA_FORMATS = (
    ("channels_last", "channels_last"),
    ("channels_first", "channels_first"),
)


class KerasLayerHarnessTest(TestCase):
    def check(self, cls, init_kwargs, data_format, **kwargs):
        self.run_layer_test(
            cls,
            init_kwargs={**init_kwargs, "data_format": data_format},
            expected_output_shape=SHAPES[data_format],
            expected_num_trainable_weights=4 if cls is SqueezeExcite else 2,
            expected_num_non_trainable_weights=0,
            expected_num_seed_generators=0,
            expected_num_losses=1 if "gamma_regularizer" in init_kwargs else 0,
            supports_masking=False,
            **kwargs,
        )

    @parameterized.named_parameters(*DATA_FORMATS)
    def test_sge(self, data_format):
        self.check(
            SGE, SGE_KWARGS, data_format, input_shape=SHAPES[data_format]
        )

    @parameterized.named_parameters(*DATA_FORMATS)
    def test_squeeze_excite(self, data_format):
        self.check(
            SqueezeExcite,
            SE_KWARGS,
            data_format,
            input_shape=SHAPES[data_format],
        )

    @parameterized.named_parameters(*DATA_FORMATS)
    def test_sge_residual(self, data_format):
        # Two inputs by name; no Keras training step (see the module doc).
        shape = SHAPES[data_format]
        self.check(
            SGEResidual,
            SGE_KWARGS,
            data_format,
            input_shape={"inputs_shape": shape, "shortcut_shape": shape},
            run_training_check=False,
        )
