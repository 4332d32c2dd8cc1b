"""`SGEResNetImageClassifierPreprocessor`: images (and labels) to model inputs."""

import keras

from keras_sge.hub._dependency import keras_hub
from keras_sge.hub.sge_resnet_backbone import SGEResNetBackbone
from keras_sge.hub.sge_resnet_image_converter import SGEResNetImageConverter


@keras.saving.register_keras_serializable(package="keras_sge")
class SGEResNetImageClassifierPreprocessor(
    keras_hub.models.ImageClassifierPreprocessor
):
    """The preprocessor of `SGEResNetImageClassifier`.

    Runs its `image_converter` (an `SGEResNetImageConverter`: the
    reference's resize and centre crop, then the ImageNet normalisation) on
    `x` and passes labels `y` and `sample_weight` through unchanged, so it
    maps over a `tf.data.Dataset` of `(images, labels)` as it is.

    Args:
        image_converter: an `SGEResNetImageConverter`, or `None` to pass
            images through unchanged.

    Example:

    ```python
    import numpy as np
    import keras_sge.hub

    preprocessor = keras_sge.hub.SGEResNetImageClassifierPreprocessor(
        keras_sge.hub.SGEResNetImageConverter(image_size=(64, 64))
    )
    images, labels = preprocessor(np.random.randint(0, 256, (2, 80, 96, 3)), np.array([0, 1]))
    images.shape  # (2, 64, 64, 3)
    ```
    """

    backbone_cls = SGEResNetBackbone
    image_converter_cls = SGEResNetImageConverter
