"""Small models and presets shared by the KerasHub tests.

Everything is SGE-ResNet-18 at 64x64 (the smallest size where the last
stage's map is 2x2, where the PyTorch reference's SGE is defined), with the
reference's random weights from `tests/applications/parity.py`: non-trivial BN
statistics and SGE gamma/beta, so a round trip that lost any of them shows.
"""

import keras
import numpy as np

from keras_sge.applications.torch_mapping import set_weights_from_state_dict
from keras_sge.hub import SGEResNetBackbone
from keras_sge.hub import SGEResNetImageClassifier
from keras_sge.hub import SGEResNetImageClassifierPreprocessor
from keras_sge.hub import SGEResNetImageConverter
from tests.applications import parity

DEPTH = 18
IMAGE_SIZE = 64
CLASSES = 10


def backbone(seed=0, groups=64, **kwargs):
    """An SGE-ResNet-18 backbone holding the reference's random weights."""
    model = SGEResNetBackbone(depth=DEPTH, groups=groups, **kwargs)
    set_weights_from_state_dict(
        model, parity.random_state_dict(DEPTH, groups=groups, seed=seed)
    )
    return model


def classifier(seed=0, num_classes=CLASSES):
    """A classifier with weights and a 64x64 preprocessor (resize + centre crop)."""
    preprocessor = SGEResNetImageClassifierPreprocessor(
        SGEResNetImageConverter(image_size=(IMAGE_SIZE, IMAGE_SIZE))
    )
    model = SGEResNetImageClassifier(
        backbone(seed), num_classes=num_classes, preprocessor=preprocessor
    )
    rng = np.random.default_rng(seed)
    kernel, bias = model.output_dense.get_weights()
    model.output_dense.set_weights(
        [rng.normal(0, 0.05, kernel.shape), rng.normal(0, 0.1, bias.shape)]
    )
    return model


def images(
    seed, batch=2, height=IMAGE_SIZE, width=IMAGE_SIZE, channels_first=False
):
    """Preprocessed-looking float32 inputs of the backbone."""
    rng = np.random.default_rng([seed, 7])
    shape = (
        (batch, 3, height, width)
        if channels_first
        else (batch, height, width, 3)
    )
    return rng.normal(0.0, 1.0, shape).astype("float32")


def raw_images(seed, batch=2, height=72, width=90):
    """RGB images in [0, 255] of a size the converter must resize and crop."""
    return (
        np.random.default_rng([seed, 8])
        .uniform(0, 255, (batch, height, width, 3))
        .astype("float32")
    )


def logits(classifier, images):
    """A classifier's logits on raw images, through its preprocessor.

    Eagerly: the tests that use it check weights and round trips, and
    tracing would cost most of their time.
    """
    outputs = classifier(classifier.preprocessor(images), training=False)
    return keras.ops.convert_to_numpy(outputs)
