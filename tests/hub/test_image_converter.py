"""SGEResNetImageConverter and the preprocessor: the reference's crop and normalisation."""

import pytest

pytest.importorskip("keras_hub")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_sge import applications  # noqa: E402
from keras_sge.hub import SGEResNetImageClassifierPreprocessor  # noqa: E402
from keras_sge.hub import SGEResNetImageConverter  # noqa: E402
from tests import harness  # noqa: E402
from tests.hub import helpers  # noqa: E402


def reference(images, size):
    """What keras_sge.applications does: resize and centre crop, then normalise."""
    return applications.preprocess_input(
        applications.center_crop_resize(images, size).numpy()
    )


def test_default_is_the_imagenet_evaluation_geometry():
    images = helpers.raw_images(0, height=300, width=400)
    outputs = SGEResNetImageConverter()(images)
    assert tuple(outputs.shape) == (2, 224, 224, 3)
    harness.assert_all_close(
        outputs, reference(images, 224), rtol=1e-5, atol=1e-5
    )


def test_any_size_is_resized_and_centre_cropped_like_the_applications():
    images = helpers.raw_images(1, height=72, width=90)
    outputs = SGEResNetImageConverter(image_size=(64, 64))(images)
    harness.assert_all_close(
        outputs, reference(images, 64), rtol=1e-5, atol=1e-5
    )


def test_channels_first_images_in_and_out():
    images = helpers.raw_images(2)
    converter = SGEResNetImageConverter(
        image_size=(64, 64), data_format="channels_first"
    )
    outputs = keras.ops.convert_to_numpy(
        converter(np.transpose(images, (0, 3, 1, 2)))
    )
    harness.assert_all_close(
        np.transpose(outputs, (0, 2, 3, 1)),
        reference(images, 64),
        rtol=1e-5,
        atol=1e-5,
    )


def test_preprocessor_maps_over_a_tf_data_pipeline_with_labels():
    images = helpers.raw_images(3)
    preprocessor = SGEResNetImageClassifierPreprocessor(
        SGEResNetImageConverter(image_size=(64, 64))
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((images, np.array([4, 7])))
        .batch(2)
        .map(preprocessor)
    )
    batch, labels = next(iter(dataset))
    harness.assert_all_close(batch, reference(images, 64), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, [4, 7])


def test_config_round_trip_keeps_the_geometry_and_layout():
    converter = SGEResNetImageConverter(
        image_size=(96, 96), data_format="channels_first", antialias=False
    )
    config = converter.get_config()
    revived = SGEResNetImageConverter.from_config(config)
    assert revived.get_config() == config
    assert (revived.image_size, revived.data_format, revived.antialias) == (
        (96, 96),
        "channels_first",
        False,
    )


def test_a_non_square_size_or_aspect_ratio_options_are_refused():
    with pytest.raises(ValueError, match=r"Received: image_size=\(64, 96\)"):
        SGEResNetImageConverter(image_size=(64, 96))
    with pytest.raises(
        ValueError, match=r"Received: crop_to_aspect_ratio=False"
    ):
        SGEResNetImageConverter(crop_to_aspect_ratio=False)
