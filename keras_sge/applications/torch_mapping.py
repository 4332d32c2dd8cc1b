"""Keras <-> PyTorch: the reference network's names and tensor layouts.

`keras_sge.applications` names its layers like `keras.applications.ResNet50`
(`conv3_block1_2_conv`); the reference names its modules like torchvision
(`layer2.0.conv2`). `set_weights_from_state_dict` assigns a reference
`state_dict` (see `torch_checkpoint`) to a model, checking every key first.

Layout differences: torch convolution weights are (out, in, kh, kw) and
Keras kernels (kh, kw, in, out); `fc.weight` is (classes, in) and the Keras
kernel (in, classes); SGE's `weight`/`bias` are (1, G, 1, 1) and Keras's
`gamma`/`beta` (G,). BN `num_batches_tracked` has no Keras counterpart.
"""

import re

import keras
import numpy as np

from keras_sge.applications.torch_checkpoint import describe_state_dict
from keras_sge.layers.sge import SGE

# Keras layer name -> torch module path, for the names that
# keras_sge.applications.resnet gives its layers.
_STEM_MODULES = {"conv1_conv": "conv1", "conv1_bn": "bn1", "predictions": "fc"}
_BLOCK_LAYER = re.compile(
    r"^conv(?P<stage>[2-5])_block(?P<block>\d+)_(?:(?P<index>\d)_(?P<kind>conv|bn)|sge)$"
)


def torch_module_path(layer_name):
    """The torch module path for a Keras layer name, or None if it has none.

    `conv3_block1_2_conv` -> `layer2.0.conv2`; `conv3_block1_0_bn` (the
    shortcut) -> `layer2.0.downsample.1`; `conv3_block1_sge` ->
    `layer2.0.sge`; `predictions` -> `fc`.
    """
    if layer_name in _STEM_MODULES:
        return _STEM_MODULES[layer_name]
    match = _BLOCK_LAYER.match(layer_name)
    if match is None:
        return None
    prefix = f"layer{int(match['stage']) - 1}.{int(match['block']) - 1}"
    if match["index"] is None:
        return prefix + ".sge"
    if match["index"] == "0":
        return prefix + (
            ".downsample.0" if match["kind"] == "conv" else ".downsample.1"
        )
    return f"{prefix}.{match['kind']}{match['index']}"


# The torch->Keras layout changes.
def _conv_kernel(array):
    return np.transpose(array, (2, 3, 1, 0))


def _dense_kernel(array):
    return np.transpose(array)


def _sge_vector(array):
    return np.reshape(array, (-1,))


def _identity(array):
    return array


def torch_shape(keras_shape, to_keras):
    """The torch shape that `to_keras` turns into `keras_shape`."""
    if to_keras is _conv_kernel:
        kh, kw, cin, cout = keras_shape
        return (cout, cin, kh, kw)
    if to_keras is _dense_kernel:
        return tuple(reversed(keras_shape))
    if to_keras is _sge_vector:
        return (1, keras_shape[0], 1, 1)
    return tuple(keras_shape)


def _parameters(layer):
    """`((torch parameter, torch->Keras), ...)` in `layer.weights` order."""
    if isinstance(layer, keras.layers.Conv2D):
        return (("weight", _conv_kernel),)
    if isinstance(layer, keras.layers.BatchNormalization):
        return (
            ("weight", _identity),
            ("bias", _identity),
            ("running_mean", _identity),
            ("running_var", _identity),
        )
    if isinstance(layer, SGE):
        return (("weight", _sge_vector), ("bias", _sge_vector))
    if isinstance(layer, keras.layers.Dense):
        return (("weight", _dense_kernel), ("bias", _identity))
    return None


# Torch state that has no Keras counterpart.
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def weight_mapping(model):
    """Yields `(layer, [(torch_key, to_keras), ...])` for each layer with weights.

    The list follows `layer.weights` order, ready for `layer.set_weights`.
    """
    for layer in model.layers:
        if not layer.weights:
            continue
        module = torch_module_path(layer.name)
        parameters = _parameters(layer)
        if (
            module is None
            or parameters is None
            or len(parameters) != len(layer.weights)
        ):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) of model "
                f"{model.name!r} has no counterpart in the reference PyTorch "
                "network; only keras_sge.applications models can be converted."
            )
        yield (
            layer,
            [(f"{module}.{param}", to_keras) for param, to_keras in parameters],
        )


def _mismatch_report(
    model, missing, unexpected, mismatched, state_dict, source
):
    def listing(keys):
        shown = ", ".join(keys[:12])
        return shown + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")

    parts = [f"Cannot load the {source} into model {model.name!r}:"]
    if missing:
        parts.append(
            f"missing keys (the model needs them, the checkpoint lacks them): {listing(missing)}."
        )
    if unexpected:
        parts.append(
            f"unexpected keys (in the checkpoint, not in the model): {listing(unexpected)}."
        )
    if mismatched:
        parts.append("shape mismatches: " + listing(mismatched) + ".")
    found = describe_state_dict(state_dict)
    if found:
        parts.append(f"The checkpoint looks like {found}.")
    return " ".join(parts)


def set_weights_from_state_dict(
    model, state_dict, source="checkpoint", progress=None
):
    """Assigns a reference state_dict to a keras_sge.applications model.

    Every key is checked before any weight is set: missing keys, unexpected
    keys and shape mismatches are all reported, by name, in one ValueError.
    A model without `predictions` (`include_top=False`) ignores the
    checkpoint's `fc.*` classifier.

    Args:
        model: a model built by `keras_sge.applications`.
        state_dict: `{torch key: array}`, `module.` prefixes removed.
        source: how to name the checkpoint in error messages.
        progress: optional callable, called once per assigned layer with
            the number of layers assigned so far.
    """
    mapping = list(weight_mapping(model))
    missing, mismatched, assignments = [], [], []
    used = set()
    for layer, parameters in mapping:
        values = []
        for (key, to_keras), variable in zip(parameters, layer.weights):
            used.add(key)
            if key not in state_dict:
                missing.append(key)
                continue
            expected = torch_shape(tuple(variable.shape), to_keras)
            if tuple(state_dict[key].shape) != expected:
                mismatched.append(
                    f"{key}: checkpoint {tuple(state_dict[key].shape)}, model {expected}"
                )
                continue
            values.append(to_keras(state_dict[key]))
        assignments.append((layer, values))

    has_classifier = any(layer.name == "predictions" for layer, _ in mapping)
    unexpected = [
        key
        for key in state_dict
        if key not in used
        and not key.endswith(_IGNORED_SUFFIXES)
        and (has_classifier or not key.startswith("fc."))
    ]
    if missing or unexpected or mismatched:
        raise ValueError(
            _mismatch_report(
                model, missing, unexpected, mismatched, state_dict, source
            )
        )
    for count, (layer, values) in enumerate(assignments, 1):
        layer.set_weights(values)
        if progress is not None:
            progress(count)
