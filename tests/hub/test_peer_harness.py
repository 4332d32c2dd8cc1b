"""SGEResNetBackbone through KerasHub's own backbone test harness.

Mirrors KerasHub's `ResNetBackboneTest` (keras_hub/src/models/resnet/
resnet_backbone_test.py): `run_vision_backbone_test` (serialization,
eager call, compiled `predict` on tensors and a `tf.data` dataset, the
class-derived name, the pyramid's keys and sizes, `run_precision_test`
under mixed_float16, mixed_bfloat16 and the full "bfloat16" policy,
`run_quantization_test`, and channels_first where the backend runs it)
and `run_model_saving_test`. ResNet-18 at 64x64, the smallest size whose
last stage is 2x2. KerasHub skips channels_first on a TensorFlow CPU and
the precision checks on a torch CPU, as it documents.
"""

import pytest

hub_test_case = pytest.importorskip("keras_hub.src.tests.test_case")

from keras import ops  # noqa: E402

from keras_sge.hub import SGEResNetBackbone  # noqa: E402
from tests.hub import helpers  # noqa: E402


class SGEResNetBackboneTest(hub_test_case.TestCase):
    def setUp(self):
        super().setUp()
        self.init_kwargs = {
            "depth": 18,
            "groups": 64,
            "image_shape": (None, None, 3),
        }
        # Random images rather than KerasHub's ops.ones: on a constant
        # image SGE's similarity maps are nearly constant.
        self.input_data = ops.convert_to_tensor(helpers.images(0))

    def test_backbone_basics(self):
        self.run_vision_backbone_test(
            cls=SGEResNetBackbone,
            init_kwargs=self.init_kwargs,
            input_data=self.input_data,
            expected_output_shape=(2, 2, 2, 512),
            expected_pyramid_output_keys=["P2", "P3", "P4", "P5"],
            expected_pyramid_image_sizes=[(16, 16), (8, 8), (4, 4), (2, 2)],
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=SGEResNetBackbone,
            init_kwargs=self.init_kwargs,
            input_data=self.input_data,
        )
