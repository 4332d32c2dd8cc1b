"""The `keras.applications` rule for pretrained weights and new classes.

A checkpoint's classifier must fit the model's `classes`; fine-tuning on
other classes goes through `include_top=False` plus a head of one's own.
"""

import keras
import numpy as np
import pytest

from keras_sge import applications
from tests.applications import parity

SHAPE = (32, 32, 3)


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """A 10-class SGE-ResNet-18 saved as `.keras` and as `.weights.h5`."""
    directory = tmp_path_factory.mktemp("weights")
    keras.utils.set_random_seed(4)
    model = applications.SGEResNet18(input_shape=SHAPE, classes=10)
    model.save(directory / "m.keras")
    model.save_weights(directory / "m.weights.h5")
    return model, {
        suffix: str(directory / f"m{suffix}")
        for suffix in (".keras", ".weights.h5")
    }


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_other_classes_are_an_error_that_names_the_fix(keras_files, suffix):
    _, paths = keras_files
    with pytest.raises(
        ValueError,
        match=r"10-class classifier; the model has 3 classes.*include_top=False.*classes=3",
    ):
        applications.SGEResNet18(
            input_shape=SHAPE, classes=3, weights=paths[suffix]
        )


@pytest.mark.needs_torch
def test_other_classes_from_a_torch_checkpoint_are_an_error_too(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "c.pth.tar"
    parity.save_official_checkpoint(
        parity.torch_model(
            18, 64, 1000, parity.random_state_dict(18, 64, 1000, 0)
        ),
        path,
    )
    with pytest.raises(
        ValueError,
        match=r"1000-class classifier; the model has 3 classes.*include_top=False",
    ):
        applications.SGEResNet18(
            input_shape=SHAPE, classes=3, weights=str(path)
        )


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_include_top_false_takes_everything_but_the_classifier(
    keras_files, suffix
):
    model, paths = keras_files
    backbone = applications.SGEResNet18(
        include_top=False,
        pooling="avg",
        input_shape=SHAPE,
        weights=paths[suffix],
    )
    for layer in backbone.layers:
        for expected, actual in zip(
            model.get_layer(layer.name).weights, layer.weights
        ):
            np.testing.assert_array_equal(
                np.asarray(actual), np.asarray(expected)
            )


def test_the_readme_fine_tuning_recipe(keras_files):
    """Backbone from the weights, frozen; a new head; one training step."""
    _, paths = keras_files
    backbone = applications.SGEResNet18(
        include_top=False,
        pooling="avg",
        input_shape=SHAPE,
        weights=paths[".weights.h5"],
    )
    backbone.trainable = False
    inputs = keras.Input(SHAPE)
    outputs = keras.layers.Dense(3, activation="softmax")(
        backbone(inputs, training=False)
    )
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = [np.asarray(w) for w in backbone.weights]
    model.fit(
        np.random.rand(8, *SHAPE).astype("float32"),
        np.arange(8) % 3,
        epochs=1,
        verbose=0,
    )
    for b, w in zip(before, backbone.weights):
        np.testing.assert_array_equal(b, np.asarray(w))
