"""Resolves the `weights` argument of the SGE-ResNet builders."""

import io
import os
import zipfile

import h5py

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_keras_weights_file(path):
    """`.weights.h5` / `.h5` files are HDF5; a `.keras` archive is a zip.

    torch's (zip) checkpoints are zips too, so zips count as Keras only by
    their `.keras` extension.
    """
    if path.endswith(".keras"):
        return True
    with open(path, "rb") as f:
        return f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE


def _check_file(weights):
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(
            "The `weights` argument should be either `None` (random "
            "initialization) or the path to a Keras weights file or a PyTorch "
            f"checkpoint. No such file: Received: weights={weights!r}"
        )
    return path


def load_weights(model, weights, with_classifier=None):
    """Loads a Keras weights file or converts a PyTorch checkpoint into `model`.

    As in `keras.applications`, the classifier must fit: a checkpoint with
    a 1000-class head does not load into a model with `classes=10`. The
    error says how to fine-tune instead. A model without a classifier
    (`include_top=False`) takes everything but the file's classifier.

    Args:
        model: a model built by `keras_sge.applications`.
        weights: the file.
        with_classifier: `classes -> model`, the same architecture as
            `model` with a classifier; needed to load a Keras file with a
            classifier into a model without one.

    Raises:
        ValueError: `weights` is not an existing file, or the file does not
            fit the model (the message names the keys).
    """
    path = _check_file(weights)
    if _is_keras_weights_file(path):
        file_classes = _keras_file_classes(path)
        _check_classifier(model, file_classes, path)
        if model_classes(model) is None and file_classes is not None and with_classifier is not None:
            source = with_classifier(file_classes)
            source.load_weights(path)
            transfer_weights(source, model)
        else:
            model.load_weights(path)
        return
    from keras_sge import convert

    state_dict = convert.load_state_dict(path)
    _check_classifier(model, _state_dict_classes(state_dict), path)
    convert.set_weights_from_state_dict(model, state_dict, source=f"checkpoint {path!r}")


def checkpoint_classes(weights):
    """The number of classes of a weights file's classifier (None if it has none)."""
    path = _check_file(weights)
    if _is_keras_weights_file(path):
        return _keras_file_classes(path)
    from keras_sge import convert

    return _state_dict_classes(convert.load_state_dict(path))


def transfer_weights(source, model, skip=("predictions",)):
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
    """The number of classes of a model's `predictions` layer (None if it has none)."""
    if "predictions" not in {layer.name for layer in model.layers}:
        return None
    return model.get_layer("predictions").units


def _check_classifier(model, file_classes, path):
    classes = model_classes(model)
    if classes is not None and file_classes is not None and classes != file_classes:
        raise ValueError(
            f"The weights in {path!r} have a {file_classes}-class classifier; the model has "
            f"{classes} classes. To fine-tune on your own classes, build the model with "
            "`include_top=False` (and `pooling='avg'`) from these weights and add your own "
            "classification head (see the README's fine-tuning section); `examples/train.py "
            f"--weights` does this for you. Received: classes={classes}"
        )


def _state_dict_classes(state_dict):
    return state_dict["fc.weight"].shape[0] if "fc.weight" in state_dict else None


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
            if isinstance(node, h5py.Dataset) and name.endswith("vars/0") and node.ndim == 2:
                widths.append(node.shape[1])

        weights["layers"].visititems(visit)
    return widths[0] if len(widths) == 1 else None
