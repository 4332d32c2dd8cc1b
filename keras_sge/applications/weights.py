"""Resolves the `weights` argument of the SGE-ResNet builders.

A weights file is either a Keras file (`.weights.h5` / `.h5`, which are
HDF5, or a `.keras` archive) or a PyTorch checkpoint of the reference
network. `WeightsFile` reads one once and loads it into models.
"""

import io
import os
import re
import shutil
import tempfile
import zipfile

import h5py

from keras_sge.applications import torch_checkpoint
from keras_sge.applications import torch_mapping
from keras_sge.layers.sge_residual import SGEResidual

CLASSIFIER = "predictions"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_keras_weights_file(path):
    """Whether `path` is a Keras weights file rather than a PyTorch checkpoint.

    `.weights.h5` / `.h5` files are HDF5, told by their signature whatever
    their name. A `.keras` archive is a zip, and so are torch's (zip)
    checkpoints, so zips count as Keras only by their `.keras` extension.
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        return True
    with open(path, "rb") as f:
        return f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE


class WeightsFile:
    """A Keras weights file or a PyTorch checkpoint, read at most once.

    Args:
        weights: the file's path.

    Raises:
        ValueError: `weights` is not an existing file.
    """

    def __init__(self, weights):
        self.path = _check_file(weights)
        self.is_keras = is_keras_weights_file(self.path)
        self._state_dict = None

    @property
    def state_dict(self):
        """A PyTorch checkpoint's `{key: float32 array}` (read on first use)."""
        if self._state_dict is None:
            self._state_dict = torch_checkpoint.load_state_dict(self.path)
        return self._state_dict

    @property
    def classes(self):
        """The number of classes of the file's classifier (None if it has none)."""
        if self.is_keras:
            return _keras_file_classes(self.path)
        return _state_dict_classes(self.state_dict)

    def load_into(self, model, with_classifier=None):
        """Loads the file into `model`; see `load_weights`."""
        _check_classifier(model, self.classes, self.path)
        if not self.is_keras:
            torch_mapping.set_weights_from_state_dict(
                model, self.state_dict, source=f"checkpoint {self.path!r}"
            )
            return
        if (
            model_classes(model) is None
            and self.classes is not None
            and with_classifier is not None
        ):
            source = with_classifier(self.classes)
            _load_keras_file(source, self.path)
            transfer_weights(source, model)
        else:
            _load_keras_file(model, self.path)


def load_weights(model, weights, with_classifier=None):
    """Loads a Keras weights file or converts a PyTorch checkpoint into `model`.

    As in `keras.applications`, the classifier must fit: a checkpoint with
    a 1000-class head does not load into a model with `classes=10`. The
    error says how to fine-tune instead. A model without a classifier
    (`include_top=False`) takes everything but the file's classifier.

    Args:
        model: a model built by `keras_sge.applications`.
        weights: the file (a path, or a `WeightsFile`).
        with_classifier: `classes -> model`, the same architecture as
            `model` with a classifier; needed to load a Keras file with a
            classifier into a model without one.

    Raises:
        ValueError: `weights` is not an existing file, or the file does not
            fit the model (the message names the keys).
    """
    weights = (
        weights if isinstance(weights, WeightsFile) else WeightsFile(weights)
    )
    weights.load_into(model, with_classifier)


def transfer_weights(source, model, skip=(CLASSIFIER,)):
    """Copies the weights of `source`'s layers into `model`'s layers of the same name.

    Returns the number of variables copied.
    """
    copied = 0
    for layer in model.layers:
        if layer.weights and layer.name not in skip:
            layer.set_weights(source.get_layer(layer.name).get_weights())
            copied += len(layer.weights)
    return copied


def model_classes(model):
    """The number of classes of a model's classifier (None if it has none)."""
    if CLASSIFIER not in {layer.name for layer in model.layers}:
        return None
    return model.get_layer(CLASSIFIER).units


def _check_file(weights):
    path = os.fspath(weights)
    if os.path.isdir(path):
        raise ValueError(
            f"{path!r} is a directory: the `weights` argument should be the "
            "path of a Keras weights file or a PyTorch checkpoint inside it. "
            f"Received: weights={weights!r}"
        )
    if not os.path.isfile(path):
        raise ValueError(
            "The `weights` argument should be either `None` (random "
            "initialization) or the path to a Keras weights file or a PyTorch "
            f"checkpoint. No such file: Received: weights={weights!r}"
        )
    return path


def _check_classifier(model, file_classes, path):
    classes = model_classes(model)
    if (
        classes is not None
        and file_classes is not None
        and classes != file_classes
    ):
        raise ValueError(
            f"The weights in {path!r} have a {file_classes}-class classifier; the model has "
            f"{classes} classes. To fine-tune on your own classes, build the model with "
            "`include_top=False` (and `pooling='avg'`) from these weights and add your own "
            "classification head (see docs/training.md, 'Fine-tune on your images'); "
            "`examples/train.py "
            f"--weights` does this for you. Received: classes={classes}"
        )


def _state_dict_classes(state_dict):
    return (
        state_dict["fc.weight"].shape[0] if "fc.weight" in state_dict else None
    )


def _keras_file_classes(path):
    """The classifier's width in a Keras weights file, read without a model.

    In an SGE-ResNet the classifier is the only layer with a 2-D kernel
    (convolution kernels are 4-D), whatever Keras names its group.
    """
    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            return _dense_width(io.BytesIO(archive.read("model.weights.h5")))
    return _dense_width(path)


def _dense_width(file):
    widths = []
    with h5py.File(file, "r") as weights:
        if "layers" not in weights:
            return None

        def visit(name, node):
            if (
                isinstance(node, h5py.Dataset)
                and name.endswith("vars/0")
                and node.ndim == 2
            ):
                widths.append(node.shape[1])

        weights["layers"].visititems(visit)
    return widths[0] if len(widths) == 1 else None


# ---------------------------------------------------------------------------
# Keras files written before SGE blocks had their own layer class
# ---------------------------------------------------------------------------

# Keras keys a weights file's groups by each layer's class name and index
# (`layers/sge_3`). Files written when the blocks' SGE layers were plain
# `SGE` layers (called with the shortcut) hold them as `sge_K`; today's
# blocks are `SGEResidual` layers, `sge_residual_K`, in the same order.
_LEGACY_SGE_GROUP = re.compile(r"^sge(_\d+)?$")


def _load_keras_file(model, path):
    try:
        if not _is_legacy_layout(model, path):
            model.load_weights(path)
            return
        with tempfile.TemporaryDirectory() as scratch:
            model.load_weights(_modernised_copy(path, scratch))
    except ValueError as error:
        raise _mismatch(error, model, path) from None


def _mismatch(error, model, path):
    """Keras's shape error, shortened to the variable and the two shapes."""
    message = str(error)
    variable = re.search(r"Variable path=([^,]+)", message)
    shapes = re.search(
        r"variable\.shape=(\(.*?\)), Received: value\.shape=(\(.*?\))",
        message,
    )
    if not (variable and shapes):
        return error
    return ValueError(
        f"The weights in {path!r} do not fit the model {model.name!r}: "
        f"{variable.group(1)} has shape {shapes.group(1)} in the model and "
        f"{shapes.group(2)} in the file. Build the model with the arguments "
        "the file was saved with (depth, groups, attention, stem)."
    )


def _weights_file_of(path, scratch):
    """The HDF5 weights of a Keras file: itself, or a `.keras` archive's."""
    if not path.endswith(".keras"):
        return path
    extracted = os.path.join(scratch, "archive.weights.h5")
    with zipfile.ZipFile(path) as archive, open(extracted, "wb") as out:
        out.write(archive.read("model.weights.h5"))
    return extracted


def _is_legacy_layout(model, path):
    if not any(isinstance(layer, SGEResidual) for layer in model.layers):
        return False
    with (
        tempfile.TemporaryDirectory() as scratch,
        h5py.File(_weights_file_of(path, scratch), "r") as f,
    ):
        groups = set(f["layers"]) if "layers" in f else set()
    return any(_LEGACY_SGE_GROUP.match(g) for g in groups) and not any(
        g.startswith("sge_residual") for g in groups
    )


def _modernised_copy(path, scratch):
    """A copy of the file's weights with `sge_K` groups renamed `sge_residual_K`."""
    copy = os.path.join(scratch, "modernised.weights.h5")
    shutil.copyfile(_weights_file_of(path, scratch), copy)
    with h5py.File(copy, "r+") as f:
        for group in [g for g in f["layers"] if _LEGACY_SGE_GROUP.match(g)]:
            f["layers"].move(group, "sge_residual" + group[len("sge") :])
    return copy
