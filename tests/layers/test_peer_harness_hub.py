"""The layers through KerasHub's own layer test harness.

KerasHub's `TestCase.run_layer_test` adds, to what Keras's checks
(test_peer_harness.py), a compiled training step that feeds a dict input by
keyword (so it trains the two-input `SGEResidual` too) and
`run_precision_test`: mixed_float16, mixed_bfloat16 and the full "bfloat16"
policy, with every float variable in the policy's variable dtype (bfloat16
under "bfloat16") and the output in the compute dtype. It skips the
precision checks on a torch CPU, as it documents. Skips without keras_hub.
"""

import pytest

hub_test_case = pytest.importorskip("keras_hub.src.tests.test_case")

import numpy as np  # noqa: E402
from absl.testing import parameterized  # noqa: E402
from keras import ops  # noqa: E402

from keras_sge.layers import SGE  # noqa: E402
from keras_sge.layers import SGEResidual  # noqa: E402
from keras_sge.layers import SqueezeExcite  # noqa: E402
from tests.layers.test_peer_harness import DATA_FORMATS  # noqa: E402
from tests.layers.test_peer_harness import SE_KWARGS  # noqa: E402
from tests.layers.test_peer_harness import SGE_KWARGS  # noqa: E402
from tests.layers.test_peer_harness import SHAPES  # noqa: E402


def random_inputs(shape, count, seed=0):
    # Backend tensors, as KerasHub's own layer tests pass: its precision
    # check calls `compute_output_spec(input_data)`, which sees the shapes
    # of tensor arguments only (a NumPy array has none there).
    rng = np.random.default_rng(seed)
    return [
        ops.convert_to_tensor(rng.standard_normal(shape).astype("float32"))
        for _ in range(count)
    ]


class KerasHubLayerHarnessTest(hub_test_case.TestCase):
    def check(self, cls, init_kwargs, data_format, input_data):
        self.run_layer_test(
            cls,
            init_kwargs={**init_kwargs, "data_format": data_format},
            input_data=input_data,
            expected_output_shape=SHAPES[data_format],
            expected_num_trainable_weights=4 if cls is SqueezeExcite else 2,
        )

    @parameterized.named_parameters(*DATA_FORMATS)
    def test_sge(self, data_format):
        (x,) = random_inputs(SHAPES[data_format], 1)
        self.check(SGE, SGE_KWARGS, data_format, x)

    @parameterized.named_parameters(*DATA_FORMATS)
    def test_squeeze_excite(self, data_format):
        (x,) = random_inputs(SHAPES[data_format], 1)
        self.check(SqueezeExcite, SE_KWARGS, data_format, x)

    @parameterized.named_parameters(*DATA_FORMATS)
    def test_sge_residual(self, data_format):
        # By keyword, as KerasHub's harness calls a dict: layer(**inputs).
        x, shortcut = random_inputs(SHAPES[data_format], 2)
        self.check(
            SGEResidual,
            SGE_KWARGS,
            data_format,
            {"inputs": x, "shortcut": shortcut},
        )
