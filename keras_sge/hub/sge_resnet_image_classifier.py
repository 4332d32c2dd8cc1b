"""`SGEResNetImageClassifier`: an SGE-ResNet with a classification head."""

import keras

from keras_sge.hub._dependency import keras_hub
from keras_sge.hub.sge_resnet_backbone import SGEResNetBackbone
from keras_sge.hub.sge_resnet_image_classifier_preprocessor import (
    SGEResNetImageClassifierPreprocessor,
)


@keras.saving.register_keras_serializable(package="keras_sge")
class SGEResNetImageClassifier(keras_hub.models.ImageClassifier):
    """SGE-ResNet image classification task.

    An `SGEResNetBackbone`, global average pooling and a dense classifier
    (`predictions`), as the reference network (its `fc` layer is
    `predictions`). `keras_hub.models.ImageClassifier.from_preset()` returns
    this class for a preset written by `keras_sge.hub.convert_to_preset`,
    once `keras_sge.hub` is imported (which registers it).

    `fit()`, `predict()` and `evaluate()` run the `preprocessor` on the
    inputs: raw RGB images in [0, 255] of any size, integer labels.

    Args:
        backbone: an `SGEResNetBackbone`.
        num_classes: int. The number of classes.
        preprocessor: an `SGEResNetImageClassifierPreprocessor`, or `None`
            for inputs that are already preprocessed.
        pooling: `"avg"` (the reference) or `"max"`.
        activation: `None` (logits, the default), `"softmax"` or any Keras
            activation of the classifier.
        dropout: float. Dropout rate before the classifier; 0 by default.
        head_dtype: `None`, str or `keras.DTypePolicy`. The dtype policy of
            the pooling and the classifier. Defaults to `"float32"` whatever
            the backbone's policy, as `keras_sge.applications` does, so the
            logits keep their range under mixed precision.
        **kwargs: passed to `keras_hub.models.ImageClassifier`.

    Examples:

    A new classifier, trained on raw images (resized and centre-cropped to
    64x64 by its preprocessor):

    ```python
    import numpy as np
    import keras_sge.hub

    backbone = keras_sge.hub.SGEResNetBackbone(depth=18)
    preprocessor = keras_sge.hub.SGEResNetImageClassifierPreprocessor(
        keras_sge.hub.SGEResNetImageConverter(image_size=(64, 64))
    )
    classifier = keras_sge.hub.SGEResNetImageClassifier(
        backbone, num_classes=4, preprocessor=preprocessor
    )
    images = np.random.randint(0, 256, (2, 80, 96, 3))
    classifier.fit(images, np.array([0, 3]), batch_size=2)
    logits = classifier.predict(images)  # (2, 4)
    ```

    From the official weights, offline: convert the checkpoint to a preset
    once, then load it with KerasHub, as is or with a new head:

    ```python
    import numpy as np
    import keras_hub
    import keras_sge.hub

    preset = "sge_resnet18_classifier"
    keras_sge.hub.convert_to_preset("sge_resnet18.pth.tar", preset, verbose=False)
    imagenet = keras_hub.models.ImageClassifier.from_preset(preset)
    images = np.random.randint(0, 256, (1, 256, 256, 3))
    logits = imagenet.predict(images)  # (1, 1000)
    classifier = keras_hub.models.ImageClassifier.from_preset(preset, num_classes=4)
    classifier.backbone.trainable = False  # train the new head first
    ```
    """

    backbone_cls = SGEResNetBackbone
    preprocessor_cls = SGEResNetImageClassifierPreprocessor

    def __init__(
        self,
        backbone,
        num_classes,
        preprocessor=None,
        pooling="avg",
        activation=None,
        dropout=0.0,
        head_dtype=None,
        **kwargs,
    ):
        super().__init__(
            backbone=backbone,
            num_classes=num_classes,
            preprocessor=preprocessor,
            pooling=pooling,
            activation=activation,
            dropout=dropout,
            head_dtype=head_dtype or "float32",
            **kwargs,
        )
