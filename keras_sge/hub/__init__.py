"""SGE-ResNets in KerasHub (the optional `hub` extra: `pip install "keras-sge[hub]"`).

- `SGEResNetBackbone`: a `keras_hub.models.FeaturePyramidBackbone` with
  `pyramid_outputs` P2-P5, for `RetinaNetBackbone(image_encoder=...)` and
  `DeepLabV3Backbone(image_encoder=...)`.
- `SGEResNetImageClassifier`, `SGEResNetImageClassifierPreprocessor`,
  `SGEResNetImageConverter`: the classification task with the reference's
  preprocessing.
- `convert_to_preset`: an official PyTorch checkpoint to a KerasHub preset
  directory; `preset_class_names` reads its class names back.

Importing this module registers the classes with Keras, which is what
`keras_hub.models.ImageClassifier.from_preset(directory)` needs to find
them. Only this subpackage imports keras_hub; `import keras_sge` does not.
"""

from keras_sge.hub.preset_conversion import convert_to_preset
from keras_sge.hub.preset_conversion import preset_class_names
from keras_sge.hub.sge_resnet_backbone import SGEResNetBackbone
from keras_sge.hub.sge_resnet_image_classifier import SGEResNetImageClassifier
from keras_sge.hub.sge_resnet_image_classifier_preprocessor import (
    SGEResNetImageClassifierPreprocessor,
)
from keras_sge.hub.sge_resnet_image_converter import SGEResNetImageConverter

__all__ = [
    "SGEResNetBackbone",
    "SGEResNetImageClassifier",
    "SGEResNetImageClassifierPreprocessor",
    "SGEResNetImageConverter",
    "convert_to_preset",
    "preset_class_names",
]
