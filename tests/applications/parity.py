"""Shared by the parity tests and the fixture generator.

The random weights are generated with NumPy from a seed, in torch's layout
and key names, one generator per key (so the order of generation does not
matter). The same state_dict then goes into the PyTorch reference (strict
`load_state_dict`, which checks our key names and shapes) and through the
converter into Keras. The committed fixtures keep the seed, the images and
torch's logits, so CI without torch still checks the Keras side.
"""

import functools
import zlib

import numpy as np

from keras_sge import applications
from keras_sge.applications import torch_mapping
from keras_sge.applications.resnet import SGEResNet
from keras_sge.layers.sge import SGE
from tests import harness

IMAGE_SIZE = 64
BATCH = 2


def keras_model(
    depth, groups=64, classes=1000, image_size=IMAGE_SIZE, **kwargs
):
    """The Keras model under test: logits, so both sides compare logits."""
    return SGEResNet(
        depth,
        input_shape=(image_size, image_size, 3),
        classes=classes,
        classifier_activation=None,
        groups=groups,
        **kwargs,
    )


@functools.lru_cache(maxsize=None)
def architecture_facts(depth, groups=64, classes=1000):
    """What the tests need from a model's structure, built once per process.

    ResNet-101/152 take seconds to build on a small CI machine, so the
    parameter-count, inference and error tests share this one build.
    Returns `{"torch_shapes": {torch key: shape}, "trainable": int,
    "sge_layers": int}`.
    """
    model = keras_model(depth, groups, classes)
    torch_shapes = {}
    for layer, parameters in torch_mapping.weight_mapping(model):
        for (key, to_keras), variable in zip(parameters, layer.weights):
            torch_shapes[key] = torch_mapping.torch_shape(
                tuple(variable.shape), to_keras
            )
    return {
        "torch_shapes": torch_shapes,
        "trainable": sum(
            int(np.prod(w.shape)) for w in model.trainable_weights
        ),
        "sge_layers": sum(isinstance(layer, SGE) for layer in model.layers),
    }


def state_dict_shapes(depth, groups=64, classes=1000):
    """`{torch key: shape}` of the reference network, via the Keras model."""
    return dict(architecture_facts(depth, groups, classes)["torch_shapes"])


def _random_parameter(key, shape, seed):
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    if key.endswith("running_var"):
        return rng.uniform(0.5, 2.0, shape)
    if key.endswith("running_mean"):
        return rng.normal(0.0, 0.2, shape)
    if ".sge.weight" in key:  # gamma
        return rng.normal(0.0, 1.0, shape)
    if ".sge.bias" in key:  # beta
        return rng.normal(1.0, 0.5, shape)
    if key.startswith("fc."):
        return rng.normal(0.0, 1.0, shape) / np.sqrt(
            shape[-1] if len(shape) > 1 else 100.0
        )
    if len(shape) == 4:  # conv, fan-in scaling keeps activations moderate.
        return rng.normal(0.0, 1.0, shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    if key.endswith(".weight"):  # BN gamma
        return rng.uniform(0.5, 1.5, shape)
    return rng.normal(0.0, 0.1, shape)  # BN beta


def random_state_dict(depth, groups=64, classes=1000, seed=0):
    """`{torch key: float32 array}` with random weights, BN stats, SGE gamma/beta."""
    return {
        key: _random_parameter(key, shape, seed).astype("float32")
        for key, shape in state_dict_shapes(depth, groups, classes).items()
    }


def random_images(seed, batch=BATCH, image_size=IMAGE_SIZE):
    """RGB images in [0, 255], (N, H, W, 3) float32."""
    rng = np.random.default_rng([seed, 1])
    return rng.uniform(0.0, 255.0, (batch, image_size, image_size, 3)).astype(
        "float32"
    )


def keras_logits(model, images):
    return harness.inference(model, applications.preprocess_input(images))


def assert_logits_match(actual, expected, relative=1e-4):
    """max |diff| < relative * max |logit|, and the same top-1."""
    scale = float(np.max(np.abs(expected)))
    diff = float(np.max(np.abs(actual - expected)))
    assert diff < relative * scale, (
        f"max abs diff {diff:.3g} >= {relative} * {scale:.3g}"
    )
    np.testing.assert_array_equal(
        np.argmax(actual, -1), np.argmax(expected, -1)
    )
    return diff / scale


# ---------------------------------------------------------------------------
# torch side (import torch only when called)
# ---------------------------------------------------------------------------


def torch_model(depth, groups, classes, state_dict):
    """The reference network with `state_dict` loaded strictly."""
    import torch

    from keras_sge.testing import torch_reference

    model = torch_reference.SGE_RESNETS[depth](
        num_classes=classes, groups=groups
    )
    tensors = {
        key: torch.from_numpy(value) for key, value in state_dict.items()
    }
    for name, buffer in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            tensors[name] = buffer.clone()
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def torch_logits(model, images):
    import torch

    x = np.transpose(
        applications.preprocess_input(images, data_format="channels_last"),
        (0, 3, 1, 2),
    )
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def save_official_checkpoint(model, path, legacy=False):
    """Saves `model` the way PytorchInsight's training script does.

    A dict with epoch, a `module.`-prefixed state_dict (DataParallel),
    accuracies (one a numpy scalar, as 2019-era files may hold) and the
    optimizer state. `legacy=True` writes torch's pre-1.6 non-zip format.
    """
    import torch

    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4
    )
    checkpoint = {
        "epoch": 100,
        "state_dict": {
            f"module.{key}": value for key, value in model.state_dict().items()
        },
        "acc": torch.tensor(77.584),
        "best_acc": np.float64(77.584),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
