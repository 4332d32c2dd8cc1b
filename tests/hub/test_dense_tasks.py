"""The backbone inside KerasHub's RetinaNet detector and DeepLabV3 segmenter.

Each task trains one step and predicts, eagerly: tracing or compiling a
whole detector takes tens of seconds on a small CPU, and what is tested
here is the backbone's wiring and gradients. `test_detect_example.py` runs
the traced path, through `examples/detect.py`.
"""

import pytest

pytest.importorskip("keras_hub")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from keras_sge.hub import SGEResNetBackbone  # noqa: E402
from tests.hub import helpers  # noqa: E402

IMAGE_SHAPE = (helpers.IMAGE_SIZE, helpers.IMAGE_SIZE, 3)


def sge_weights_moved(encoder, before):
    """Whether a training step changed the SGE layers' gamma (gradients reach the backbone)."""
    after = encoder.get_layer("conv2_block1_sge").get_weights()[0]
    return not np.allclose(after, before)


def test_retinanet_with_sge_backbone_trains_a_step_and_predicts():
    encoder = SGEResNetBackbone(depth=18, image_shape=IMAGE_SHAPE)
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder,
        min_level=3,
        max_level=5,
        use_p5=False,
        image_shape=IMAGE_SHAPE,
    )
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone,
        num_classes=3,
        bounding_box_format="yxyx",
        preprocessor=None,
    )
    detector.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    gamma = encoder.get_layer("conv2_block1_sge").get_weights()[0]
    targets = {
        "boxes": np.array(
            [
                [[8, 8, 40, 40], [0, 0, 0, 0]],
                [[20, 10, 52, 42], [30, 30, 62, 62]],
            ],
            "float32",
        ),
        "labels": np.array([[0, -1], [1, 2]], "int32"),
    }
    history = detector.fit(helpers.images(0), targets, verbose=0)
    detections = detector.predict(helpers.images(1), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert sge_weights_moved(encoder, gamma)
    assert (
        detections["boxes"].shape[:2] == detections["labels"].shape == (2, 100)
    )


def test_deeplabv3_with_sge_backbone_trains_a_step_and_predicts():
    encoder = SGEResNetBackbone(depth=18, image_shape=IMAGE_SHAPE)
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        spatial_pyramid_pooling_key="P5",
        upsampling_size=8,  # P5 (stride 32) to P2 (stride 4): DeepLabV3+
        dilation_rates=[6, 12, 18],
        low_level_feature_key="P2",
        image_shape=IMAGE_SHAPE,
    )
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(
        backbone=backbone, num_classes=3
    )
    segmenter.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    gamma = encoder.get_layer("conv2_block1_sge").get_weights()[0]
    masks = np.random.default_rng(0).integers(0, 3, (2, *IMAGE_SHAPE[:2]))
    targets = keras.utils.to_categorical(masks, 3)
    history = segmenter.fit(helpers.images(2), targets, verbose=0)
    masks = segmenter.predict(helpers.images(3), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert sge_weights_moved(encoder, gamma)
    assert masks.shape == (2, *IMAGE_SHAPE[:2], 3)
