"""`SGEResNetImageConverter`: the reference's evaluation preprocessing."""

import keras
import numpy as np

from keras_sge.applications import preprocessing
from keras_sge.hub._dependency import keras_hub
from keras_sge.hub.sge_resnet_backbone import SGEResNetBackbone

# `(x / 255 - mean) / std` as `x * scale + offset`, the form ImageConverter
# applies per channel.
IMAGENET_SCALE = tuple(1.0 / (255.0 * std) for std in preprocessing.STD)
IMAGENET_OFFSET = tuple(
    -mean / std for mean, std in zip(preprocessing.MEAN, preprocessing.STD)
)


@keras.saving.register_keras_serializable(package="keras_sge")
class SGEResNetImageConverter(keras_hub.layers.ImageConverter):
    """Raw images to SGE-ResNet inputs, as the reference evaluates.

    1. Resize the shorter side to `round(size * 256 / 224)` (256 for 224),
       keeping the aspect ratio, and crop the central `size x size` square,
       as torchvision's `Resize(256)` + `CenterCrop(224)`
       (`keras_sge.applications.center_crop_resize`).
    2. Scale to [0, 1] and normalise with the ImageNet mean and std, as
       `keras_sge.applications.preprocess_input`
       (`x * scale + offset`, with `scale = 1 / (255 std)` and
       `offset = -mean / std` per channel).

    KerasHub's base `ImageConverter` resizes the whole image to `image_size`
    after cropping it to the target aspect ratio, which keeps more of the
    border than the reference's crop; this converter uses the reference's
    geometry instead.

    Args:
        image_size: `(size, size)` or `None`. The square output size; `None`
            skips step 1 (the images must then have the model's size).
        scale: float, per-channel tuple or `None`. Defaults to the ImageNet
            `1 / (255 std)`.
        offset: float, per-channel tuple or `None`. Defaults to the ImageNet
            `-mean / std`.
        interpolation: str. A `tf.image.resize` method, `"bilinear"` by
            default.
        antialias: bool. Antialias when downsampling; `True` by default,
            closest to torchvision's PIL resize.
        data_format: `None` or str. `"channels_last"` or `"channels_first"`
            images, in and out. Defaults to
            `keras.config.image_data_format()`.
        **kwargs: passed to `keras_hub.layers.ImageConverter`.
            `crop_to_aspect_ratio=False` and `pad_to_aspect_ratio=True` are
            refused: the crop is the reference's geometry.

    Example:

    ```python
    import numpy as np
    import keras_sge.hub

    converter = keras_sge.hub.SGEResNetImageConverter(image_size=(224, 224))
    images = np.random.randint(0, 256, (2, 300, 400, 3))
    converter(images).shape  # (2, 224, 224, 3)
    ```
    """

    backbone_cls = SGEResNetBackbone

    def __init__(
        self,
        image_size=(224, 224),
        scale=IMAGENET_SCALE,
        offset=IMAGENET_OFFSET,
        interpolation="bilinear",
        antialias=True,
        data_format=None,
        **kwargs,
    ):
        if kwargs.get("crop_to_aspect_ratio") is False or kwargs.get(
            "pad_to_aspect_ratio"
        ):
            raise ValueError(
                "SGEResNetImageConverter always crops the reference's centre square; "
                "`crop_to_aspect_ratio=False` and `pad_to_aspect_ratio=True` are not supported. "
                f"Received: crop_to_aspect_ratio={kwargs.get('crop_to_aspect_ratio')!r}, "
                f"pad_to_aspect_ratio={kwargs.get('pad_to_aspect_ratio')!r}"
            )
        _check_square(image_size)
        super().__init__(
            image_size=image_size,
            scale=scale,
            offset=offset,
            interpolation=interpolation,
            antialias=antialias,
            data_format=data_format,
            **kwargs,
        )
        # The base class resizes through `self.resizing`; the reference's
        # crop takes its place, and scaling and offset stay the base's.
        self.resizing = _ReferenceCrop(
            image_size, interpolation, antialias, self.data_format
        )

    def get_config(self):
        config = super().get_config()
        # The preset must give inputs in the backbone's layout whatever the
        # loading session's global data format.
        config["data_format"] = self.data_format
        return config


class _ReferenceCrop:
    """Shorter side to `round(size * 256 / 224)`, then the central square.

    A plain callable rather than a Keras layer: it runs TensorFlow ops
    (`center_crop_resize`), in `tf.data` pipelines whatever the backend,
    and has no state to track.
    """

    def __init__(self, image_size, interpolation, antialias, data_format):
        self.height, self.width = (
            image_size if image_size is not None else (None, None)
        )
        self.interpolation = interpolation
        self.antialias = antialias
        self.data_format = data_format

    def __call__(self, images):
        import tensorflow as tf

        if isinstance(images, dict):
            raise ValueError(
                "SGEResNetImageConverter takes images only, not bounding boxes. "
                f"Received: a dict with keys {sorted(images)}"
            )
        _check_square((self.height, self.width))  # `image_size` is settable
        in_tf_graph = not tf.executing_eagerly()
        if not in_tf_graph and not isinstance(images, tf.Tensor):
            images = keras.ops.convert_to_numpy(images)
        channels_first = self.data_format == "channels_first"
        if channels_first:
            images = _move_channels(images, to_last=True)
        cropped = preprocessing.center_crop_resize(
            images,
            self.height,
            interpolation=self.interpolation,
            antialias=self.antialias,
        )
        if channels_first:
            cropped = _move_channels(cropped, to_last=False)
        if in_tf_graph or keras.backend.backend() == "tensorflow":
            return cropped
        # Eager on another backend: hand on the backend's own tensors.
        return keras.ops.convert_to_tensor(np.asarray(cropped))


def _check_square(image_size):
    if image_size is not None and tuple(image_size)[0] != tuple(image_size)[1]:
        raise ValueError(
            "SGEResNetImageConverter crops a square; `image_size` must have equal sides. "
            f"Received: image_size={tuple(image_size)}"
        )


def _move_channels(images, to_last):
    import tensorflow as tf

    rank = len(images.shape)
    if rank not in (3, 4):
        raise ValueError(
            f"Expected an image (rank 3) or a batch (rank 4). Received: shape={tuple(images.shape)}"
        )
    if rank == 3:
        return tf.transpose(images, (1, 2, 0) if to_last else (2, 0, 1))
    return tf.transpose(images, (0, 2, 3, 1) if to_last else (0, 3, 1, 2))
