"""A tiny model with SGE layers, and a PNG check, shared by these tests."""

import keras
import numpy as np
from PIL import Image

from keras_sge import SGE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_SIZE = 16


def tiny_sge_model(data_format="channels_last", image_size=IMAGE_SIZE):
    """Three SGE layers with random gamma and beta, so that gates vary.

    `stem_sge` works at full resolution; `block1_sge` and `block2_sge` share
    the half-resolution input shape: they are the "last stage". The model
    ends with `block2_sge`, so its output is that layer's output.
    """
    shape = (
        (image_size, image_size, 3)
        if data_format == "channels_last"
        else (3, image_size, image_size)
    )

    def sge(groups, name, seed):
        return SGE(
            groups,
            data_format=data_format,
            gamma_initializer=keras.initializers.RandomNormal(
                0.0, 2.0, seed=seed
            ),
            beta_initializer=keras.initializers.RandomNormal(
                1.0, 0.5, seed=seed + 1
            ),
            name=name,
        )

    def conv(filters, strides, seed):
        initializer = keras.initializers.GlorotUniform(seed=seed)
        return keras.layers.Conv2D(
            filters,
            3,
            strides=strides,
            padding="same",
            data_format=data_format,
            kernel_initializer=initializer,
        )

    inputs = keras.Input(shape)
    x = sge(4, "stem_sge", 0)(conv(16, 1, 10)(inputs))
    x = keras.layers.ReLU()(x)
    x = sge(8, "block1_sge", 2)(conv(32, 2, 11)(x))
    x = sge(8, "block2_sge", 4)(conv(32, 1, 12)(x))
    return keras.Model(inputs, x, name="tiny_sge")


def random_images(count=3, image_size=IMAGE_SIZE, seed=0):
    """RGB images in [0, 255], channels last."""
    return (
        np.random.default_rng(seed)
        .uniform(0, 255, (count, image_size, image_size, 3))
        .astype("float32")
    )


def assert_png_not_blank(path, min_std=5.0):
    """A PNG file by signature, decodable by PIL, and not a uniform image."""
    with open(path, "rb") as f:
        assert f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE, (
            f"{path} is not a PNG"
        )
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), "float32")
    assert pixels.std() > min_std, (
        f"{path} looks blank (pixel std {pixels.std():.2f})"
    )
