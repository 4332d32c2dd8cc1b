"""SGE-ResNets on whichever backend runs the tests.

The main run covers TensorFlow; tests/test_backends.py runs this file again
under JAX and PyTorch (a child pytest each, with `KERAS_BACKEND` set), with
the committed parity fixtures (tests/applications/test_weights.py).
Together the runs save a `.keras` file on each backend and load it on the
next one (TensorFlow, JAX, PyTorch, TensorFlow): every backend writes a
file and reads one that another wrote.
"""

import importlib.util

import keras
import numpy as np
import pytest

from keras_sge import applications
from keras_sge.applications import torch_mapping
from keras_sge.layers.sge import SGE
from tests import harness
from tests.applications import parity

BACKENDS = ("tensorflow", "jax", "torch")


def installed_backends_after(here):
    """The installed backends after `here` in BACKENDS, going round."""
    start = BACKENDS.index(here)
    return [
        backend
        for backend in BACKENDS[start + 1 :] + BACKENDS[:start]
        if importlib.util.find_spec(backend) is not None
    ]


def seeded_resnet18(classes=10):
    """SGE-ResNet-18 at 64x64 with random weights, BN statistics and SGE gamma/beta."""
    model = parity.keras_model(18, classes=classes)
    torch_mapping.set_weights_from_state_dict(
        model, parity.random_state_dict(18, 64, classes, seed=21)
    )
    return model


@pytest.mark.timeout(300)
def test_fit_step_with_the_default_compilation_moves_sge_weights():
    # `compile()`'s default jit_compile: jax.jit for the whole step on JAX
    # (the SGE ops are traced into it), eager on PyTorch, a tf.function
    # graph on TensorFlow's CPU.
    model = applications.SGEResNet18(
        input_shape=(32, 32, 3), classes=4, classifier_activation=None
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(22)
    x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 4, 4)
    sge_weights = [
        w
        for layer in model.layers
        if isinstance(layer, SGE)
        for w in layer.weights
    ]
    before = [keras.ops.convert_to_numpy(w).copy() for w in sge_weights]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    moved = sum(
        not np.allclose(b, keras.ops.convert_to_numpy(w))
        for b, w in zip(before, sge_weights)
    )
    # gamma starts at 0 and gets a gradient in every block.
    assert moved >= len(sge_weights) // 2, (
        f"only {moved} of {len(sge_weights)} SGE weights moved"
    )


@pytest.mark.timeout(600)
def test_keras_file_round_trips_here_and_loads_on_the_next_backend(tmp_path):
    here = keras.backend.backend()
    model = seeded_resnet18()
    images = applications.preprocess_input(parity.random_images(23))
    expected = harness.inference(model, images)
    keras_file = harness.run_keras_saving_test(
        model, images, tmp_path
    )  # loads it here too
    np.save(tmp_path / "images.npy", images)
    # The next backend only: with this file's runs on the other backends,
    # each backend reads a file that another wrote.
    for backend in installed_backends_after(here)[:1]:
        outputs_path = str(tmp_path / f"loaded_on_{backend}.npy")
        harness.run_in_fresh_process(
            f"""
            import keras
            import numpy as np
            import keras_sge  # registers the classes the file names
            from tests import harness
            assert keras.backend.backend() == {backend!r}
            model = keras.saving.load_model({keras_file!r})
            images = np.load({str(tmp_path / "images.npy")!r})
            np.save({outputs_path!r}, harness.inference(model, images))
            """,
            env=harness.backend_env(backend),
        )
        relative = harness.assert_close_to_largest_logit(
            np.load(outputs_path), expected
        )
        print(
            f"saved on {here}, loaded on {backend}: max abs diff / max |logit| = {relative:.1e}"
        )


@harness.needs_channels_first_convolutions
def test_channels_first_gives_the_channels_last_logits():
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:  # the global format, which the builders follow by default
        model = applications.SGEResNet18(
            input_shape=(3, 32, 32), classes=4, classifier_activation=None
        )
    finally:
        keras.config.set_image_data_format(previous)
    assert model.get_layer("conv2_block1_sge").data_format == "channels_first"
    assert model.get_layer("conv1_bn").axis in (1, [1])
    # Random SGE gamma and beta and BN statistics: at gamma 0 the gates
    # would not depend on the similarity maps that the layout changes.
    torch_mapping.set_weights_from_state_dict(
        model, parity.random_state_dict(18, 64, 4, seed=24)
    )
    images = applications.preprocess_input(parity.random_images(24, 2, 32))
    first = harness.inference(model, images.transpose(0, 3, 1, 2))
    twin = applications.SGEResNet18(
        input_shape=(32, 32, 3),
        classes=4,
        classifier_activation=None,
        data_format="channels_last",
    )
    twin.set_weights(model.get_weights())
    harness.assert_close_to_largest_logit(
        first, harness.inference(twin, images)
    )
