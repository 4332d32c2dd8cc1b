"""Input preprocessing of the reference: ImageNet mean/std and centre crops.

`preprocess_input` is plain arithmetic: it runs on NumPy arrays, on the
current Keras backend's tensors, and on `tf.Tensor`s inside a `tf.data`
pipeline whatever the backend.

`center_crop_resize` is written with TensorFlow ops on purpose: it is meant
for `tf.data` input pipelines and for the serving function of an exported
SavedModel, both of which run TensorFlow graphs whatever the Keras backend.
"""

import math

import numpy as np

from keras_sge.arguments import check_positive_int
from keras_sge.arguments import standardize_data_format

# torchvision's ImageNet statistics, used by the reference's transforms.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# Evaluation geometry: resize the shorter side to 256, crop 224.
RESIZE_RATIO = 256 / 224


def preprocess_input(x, data_format=None):
    """Normalises RGB images in [0, 255] as the reference does.

    Computes `(x / 255 - mean) / std` per channel with the ImageNet mean
    (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), as torchvision's
    `ToTensor()` + `Normalize(mean, std)`.

    Args:
        x: images, float or integer, RGB, values in [0, 255]: a single
            image or a batch, a NumPy array or a tensor (of the Keras
            backend, or a `tf.Tensor` in a `tf.data` pipeline).
        data_format: `"channels_last"` (channels on the last axis) or
            `"channels_first"` (channels on axis -3). Defaults to
            `keras.config.image_data_format()`.

    Returns:
        float32 values of the same kind (NumPy in, NumPy out).

    Example:

    >>> import numpy as np
    >>> from keras_sge.applications import preprocess_input
    >>> out = preprocess_input(np.full((2, 4, 4, 3), 255.0))
    >>> [round(float(v), 4) for v in out[0, 0, 0]]
    [2.2489, 2.4286, 2.64]
    """
    shape = _channel_shape(standardize_data_format(data_format))
    mean = np.reshape(np.asarray(MEAN, "float32"), shape)
    std = np.reshape(np.asarray(STD, "float32"), shape)
    if isinstance(x, (np.ndarray, list, tuple, int, float)):
        return (np.asarray(x, "float32") / 255.0 - mean) / std
    if _is_tf_tensor(x):
        import tensorflow as tf

        return (tf.cast(x, "float32") / 255.0 - mean) / std
    from keras import ops

    return (ops.cast(x, "float32") / 255.0 - mean) / std


def center_crop_resize(
    images, image_size=224, interpolation="bilinear", antialias=True
):
    """The reference's evaluation geometry: resize, then centre crop.

    The shorter side is resized to `round(image_size * 256 / 224)` (256 for
    224) keeping the aspect ratio, then the central
    `image_size x image_size` square is cropped, as torchvision's
    `Resize(256)` + `CenterCrop(224)`. Bilinear resizing with antialiasing
    is closest to torchvision's PIL resize.

    Written with TensorFlow ops so it runs in a `tf.data` pipeline and in an
    exported SavedModel's serving function (see the module docstring), with
    dynamic image sizes.

    Args:
        images: channels-last images, `(H, W, C)` or a batch
            `(N, H, W, C)`, any numeric dtype, values in [0, 255].
        image_size: the side of the square output (224 in the paper).
        interpolation: a `tf.image.resize` method name.
        antialias: whether to antialias when downsampling.

    Returns:
        float32 `tf.Tensor` of shape `(image_size, image_size, C)` or
        `(N, image_size, image_size, C)`, still in [0, 255]; feed it to
        `preprocess_input`.

    Example:

    ```python
    import tensorflow as tf
    from keras_sge.applications import center_crop_resize, preprocess_input

    dataset = tf.data.Dataset.from_tensor_slices(tf.zeros((4, 300, 400, 3)))
    dataset = dataset.map(lambda image: preprocess_input(center_crop_resize(image)))
    ```
    """
    import tensorflow as tf

    check_positive_int("image_size", image_size)
    images = tf.convert_to_tensor(images)
    if images.shape.rank not in (3, 4):
        raise ValueError(
            "`images` must be a channels-last image (H, W, C) or batch (N, H, W, C). "
            f"Received: shape={tuple(images.shape)}"
        )
    images = tf.cast(images, "float32")
    height, width = tf.shape(images)[-3], tf.shape(images)[-2]
    short = tf.cast(tf.minimum(height, width), "float64")
    target = math.floor(image_size * RESIZE_RATIO + 0.5)
    scale = target / short
    # torchvision keeps the shorter side exact and truncates the longer one.
    new_height = tf.where(
        height <= width,
        target,
        tf.cast(tf.cast(height, "float64") * scale, "int32"),
    )
    new_width = tf.where(
        width < height,
        target,
        tf.cast(tf.cast(width, "float64") * scale, "int32"),
    )
    resized = tf.image.resize(
        images,
        tf.stack([new_height, new_width]),
        method=interpolation,
        antialias=antialias,
    )
    # CenterCrop's offsets: int(round((size - crop) / 2)).
    top = tf.cast(
        tf.round(tf.cast(new_height - image_size, "float32") / 2.0), "int32"
    )
    left = tf.cast(
        tf.round(tf.cast(new_width - image_size, "float32") / 2.0), "int32"
    )
    return tf.image.crop_to_bounding_box(
        resized, top, left, image_size, image_size
    )


def _channel_shape(data_format):
    return (3,) if data_format == "channels_last" else (3, 1, 1)


def _is_tf_tensor(x):
    return type(x).__module__.startswith("tensorflow")
