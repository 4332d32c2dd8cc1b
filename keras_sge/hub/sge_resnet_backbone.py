"""`SGEResNetBackbone`: the SGE-ResNets as a KerasHub feature-pyramid backbone."""

import keras

from keras_sge import applications
from keras_sge.applications import resnet
from keras_sge.arguments import standardize_data_format
from keras_sge.hub._dependency import keras_hub

# depth -> public builder. The backbone is built by these builders, so its
# layer names and weights are exactly theirs: converted checkpoints and
# `.weights.h5` files of `keras_sge.applications` load into it unchanged.
BUILDERS = resnet.BUILDERS
PYRAMID_LEVELS = ("P2", "P3", "P4", "P5")


@keras.saving.register_keras_serializable(package="keras_sge")
class SGEResNetBackbone(keras_hub.models.FeaturePyramidBackbone):
    """SGE-ResNet-18/34/50/101/152 backbone for KerasHub.

    The network of `keras_sge.applications.SGEResNet{depth}` without its
    classifier (Li, Hu and Yang, [Spatial Group-wise Enhance: Improving
    Semantic Feature Learning in Convolutional
    Networks](https://arxiv.org/abs/1905.09646), 2019): a torchvision-style
    ResNet ("v1.5") with an `SGE` layer after the last BatchNormalization of
    every residual block. It is built by those builders, so layer names and
    weights are theirs, and a checkpoint converted from the official PyTorch
    weights loads into it (see `keras_sge.hub.convert_to_preset`).

    The output is the last stage's feature map (stride 32). `pyramid_outputs`
    holds the stage outputs `P2`-`P5` (strides 4, 8, 16 and 32; 64, 128, 256
    and 512 channels for depths 18 and 34, four times as many for 50 and
    deeper), the input KerasHub's `RetinaNetBackbone` and
    `DeepLabV3Backbone` take.

    The model expects images preprocessed as the reference does: RGB scaled
    to [0, 1], then normalised with the ImageNet mean and std
    (`keras_sge.applications.preprocess_input`, or
    `SGEResNetImageConverter`).

    Args:
        depth: int. 18, 34, 50, 101 or 152.
        groups: int or `None`. SGE groups per layer (64 in the paper);
            `None` builds the plain ResNet without SGE.
        image_shape: tuple. The input shape without the batch size. Defaults
            to `(None, None, 3)`, or `(3, None, None)` under
            `"channels_first"`. Spatial sizes must be at least 32.
        data_format: `None` or str, `"channels_last"` or
            `"channels_first"`. Defaults to
            `keras.config.image_data_format()`.
        dtype: `None`, str or `keras.DTypePolicy`. The dtype policy of the
            layers, e.g. `"mixed_bfloat16"`; `None` uses the global policy.
            SGE keeps its statistics in float32 whatever the policy; its
            parameters are in the policy's variable dtype, like every
            layer's (float32 under the mixed policies).

    Example:

    ```python
    import keras
    import numpy as np
    import keras_sge.hub

    backbone = keras_sge.hub.SGEResNetBackbone(depth=18, image_shape=(64, 64, 3))
    features = keras.Model(backbone.input, backbone.pyramid_outputs)
    pyramid = features(np.zeros((1, 64, 64, 3)))
    [tuple(pyramid[level].shape) for level in ("P2", "P5")]  # [(1, 16, 16, 64), (1, 2, 2, 512)]
    ```
    """

    def __init__(
        self,
        depth=50,
        groups=64,
        image_shape=None,
        data_format=None,
        dtype=None,
        **kwargs,
    ):
        if isinstance(depth, bool) or depth not in BUILDERS:
            raise ValueError(
                f"`depth` must be one of {sorted(BUILDERS)}. Received: depth={depth!r}"
            )
        data_format = standardize_data_format(data_format)
        image_shape = _standardize_image_shape(image_shape, data_format)
        network = BUILDERS[depth](
            include_top=False,
            input_shape=image_shape,
            groups=groups,
            data_format=data_format,
            dtype=dtype,
        )
        stage_outputs = [
            network.get_layer(name).output
            for name in applications.stage_output_names(network)
        ]

        # === Functional Model ===
        super().__init__(
            inputs=network.input, outputs=network.output, dtype=dtype, **kwargs
        )

        # === Config ===
        self.depth = depth
        self.groups = groups
        self.image_shape = image_shape
        self.data_format = data_format
        self.pyramid_outputs = dict(zip(PYRAMID_LEVELS, stage_outputs))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "depth": self.depth,
                "groups": self.groups,
                "image_shape": self.image_shape,
                "data_format": self.data_format,
            }
        )
        return config


def _standardize_image_shape(image_shape, data_format):
    if image_shape is None:
        return (
            (None, None, 3)
            if data_format == "channels_last"
            else (3, None, None)
        )
    # JSON configs give lists; the builders validate the rest.
    return tuple(image_shape)
