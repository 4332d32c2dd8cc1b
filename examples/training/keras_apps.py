"""keras.applications networks with SGE: `examples/train.py --arch keras:NAME`.

`build` makes the run's model from `keras.applications.NAME`:

1. the network without its top (`include_top=False`, `weights=None`);
2. its pretrained weights loaded from a file: a legacy `.h5` (what
   keras.applications downloads), a `.weights.h5` or a `.keras` file, of
   the network with or without its top (a top is left out);
3. SGE on every residual branch (`keras_sge.add_attention`), whose fold
   keeps the pretrained function at insertion;
4. a new classifier: global average pooling and a Dense layer named as
   the SGE-ResNets' (`predictions`), so that `finetune.freeze_backbone` and
   the head-first schedule work unchanged.

Each family was trained on its own input scaling (what `preprocess_input`
of its keras.applications module does); `preprocessing` names it, for the
training pipeline, the evaluation and the SavedModel (`data.preprocess`).
"""

import os
import re
import warnings

import h5py
import keras

from keras_sge.applications.weights import CLASSIFIER
from keras_sge.layers.sge import SGE
from keras_sge.surgery import add_attention

PREFIX = "keras:"

# keras.applications module -> the mode of its `preprocess_input` (see
# `data.PREPROCESSING_MODES`); "none": the network rescales inside itself.
FAMILIES = {
    "convnext": "none",
    "densenet": "torch",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "inception_resnet_v2": "tf",
    "inception_v3": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "mobilenet_v3": "none",
    "nasnet": "tf",
    "resnet": "caffe",
    "resnet_v2": "tf",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "xception": "tf",
}


def is_keras_arch(arch):
    """Whether `--arch` names a keras.applications network (`keras:NAME`)."""
    return arch is not None and arch.startswith(PREFIX)


def names():
    """The NAMEs accepted: keras.applications' constructors of `FAMILIES`."""
    return sorted(
        name
        for name in dir(keras.applications)
        if family(getattr(keras.applications, name)) in FAMILIES
    )


def family(constructor):
    """The keras.applications module of a constructor (`resnet_v2`), or None."""
    module = getattr(constructor, "__module__", None) or ""
    if not callable(constructor) or not module.startswith("keras."):
        return None
    return module.rsplit(".", 1)[-1]


def canonical(arch):
    """`keras:NAME` spelled as keras.applications spells NAME (any case in).

    Raises:
        ValueError: NAME is none of `names()`; the message lists them.
    """
    spelled = {name.lower(): name for name in names()}
    name = arch[len(PREFIX) :]
    if name.lower() not in spelled:
        raise ValueError(
            f"{arch!r} is not a keras.applications network this script "
            f"takes; NAME in keras:NAME must be one of: {', '.join(names())}"
        )
    return PREFIX + spelled[name.lower()]


def preprocessing(arch):
    """The input scaling of `keras:NAME`'s family, a `data.preprocess` mode."""
    return FAMILIES[family(_constructor(arch))]


def preprocess_function(arch):
    """The keras.applications function that `preprocessing(arch)` mirrors."""
    return f"keras.applications.{family(_constructor(arch))}.preprocess_input"


def build(arch, image_size, classes, groups, weights=None):
    """The run's model and a line saying what it was made from.

    Args:
        arch: `keras:NAME`, as `canonical` spells it.
        image_size: the side of the square input images.
        classes: the number of classes of the new classifier.
        groups: the SGE groups at most per branch; None: no SGE.
        weights: optional path of NAME's weights file (with or without
            its top).

    Raises:
        ValueError: NAME does not take this image size, the file does not
            fit NAME, or SGE cannot be put on NAME (a line naming which).
    """
    network = plain_network(arch, image_size)
    source = (
        f"Loaded {load_weights(network, weights, arch)} weights of "
        f"keras.applications.{_name(arch)} (include_top=False) from "
        f"{os.path.basename(weights)}"
        if weights
        else f"keras.applications.{_name(arch)}, randomly initialised"
    )
    if groups is not None:
        network = _with_sge(network, arch, groups)
    count = sum(1 for layer in network.layers if isinstance(layer, SGE))
    attention = (
        f"; {count} SGE layers, one per residual block, the same function "
        "at insertion"
        if groups is not None
        else "; no SGE (--groups none)"
    )
    model = _with_classifier(network, classes, _model_name(arch, groups))
    return model, (
        f"{source}{attention}; new classifier {CLASSIFIER!r} for {classes} "
        "classes"
    )


def plain_network(arch, image_size):
    """`keras.applications.NAME` without its top, randomly initialised."""
    try:
        return _constructor(arch)(
            weights=None,
            include_top=False,
            input_shape=(image_size, image_size, 3),
        )
    except ValueError as error:
        raise ValueError(
            f"keras.applications.{_name(arch)} does not take "
            f"{image_size}x{image_size} images ({_first_line(error)}): "
            "pass another --image-size"
        ) from None


def load_weights(network, path, arch):
    """Loads NAME's weights file into `network` (NAME without its top).

    Keras loads a legacy `.h5` layer by layer in order, which fails on a
    file with a top: that file loads by layer name instead, if it has
    every layer of `network`. Keras's newer files load whatever their top.

    Returns:
        The number of variables loaded (all of `network`'s).

    Raises:
        ValueError: the file does not fit; the message names it and the
            first mismatch.
    """
    try:
        _quietly(lambda: network.load_weights(path))
    except Exception as error:  # h5py, zip and Keras raise their own types.
        if not _loads_by_name(network, path):
            raise _mismatch(path, arch, error) from None
        try:
            _quietly(lambda: network.load_weights(path, by_name=True))
        except Exception as error:
            raise _mismatch(path, arch, error) from None
    return len(network.weights)


def load_trained(model, path, arch):
    """Loads a file of a fine-tuned model (a run's `model.keras`) into `model`."""
    try:
        _quietly(lambda: model.load_weights(path))
    except Exception as error:
        raise ValueError(
            f"--weights {path} does not fit the {model.name} this command "
            f"builds ({_gist(error)}): with --evaluate-only and --arch "
            f"{arch}, pass the model.keras or best.keras of a run with the "
            "same --arch, --groups and classes"
        ) from None


def _quietly(load):
    """Runs `load()`; the warnings of a load that fails go with its error.

    Keras warns once per layer it cannot load (a hundred lines), then
    raises: the one-line error says it all.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load()
    for warning in caught:
        warnings.showwarning(
            warning.message, warning.category, warning.filename, warning.lineno
        )


def _constructor(arch):
    return getattr(keras.applications, _name(arch))


def _name(arch):
    return arch[len(PREFIX) :]


def _model_name(arch, groups):
    name = _name(arch).lower()
    return name if groups is None else f"sge_{name}"


def _with_sge(network, arch, groups):
    try:
        return add_attention(network, "sge", groups=groups)
    except ValueError as error:
        first = re.split(r"\.\s", _first_line(error), maxsplit=1)[0]
        raise ValueError(
            f"SGE cannot be put on {arch} ({first}): pass --groups none to "
            "fine-tune it without SGE"
        ) from None


def _with_classifier(network, classes, name):
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(
        network.output
    )
    # float32 whatever the policy: softmax and the loss need the range.
    outputs = keras.layers.Dense(
        classes, activation="softmax", dtype="float32", name=CLASSIFIER
    )(features)
    # The one image tensor, not a list of it: a model with a list of inputs
    # warns when it is called on a tensor.
    return keras.Model(network.inputs[0], outputs, name=name)


def _loads_by_name(network, path):
    """Whether `path` is a legacy HDF5 file with every layer of `network`."""
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                return False
            stored = {_text(name) for name in group.attrs["layer_names"]}
    except OSError:  # Not HDF5: a .keras archive.
        return False
    return all(
        layer.name in stored for layer in network.layers if layer.weights
    )


def _text(name):
    return name.decode("utf8") if isinstance(name, bytes) else name


def _mismatch(path, arch, error):
    return ValueError(
        f"--weights {path} does not fit keras.applications.{_name(arch)} "
        f"({_gist(error)}): pass a weights file of that network, with or "
        "without its top"
    )


def _gist(error):
    """Keras's load error in one line: the first object and what failed."""
    text = " ".join(str(error).split())
    many = re.match(
        r"A total of (\d+) objects could not be loaded\. Example error "
        r"message for object <\w+ name=([^,>]+)[^>]*>: (.*?)"
        r"(?: List of objects that could not be loaded.*)?$",
        text,
    )
    prefix = ""
    if many:
        prefix = f"{many[1]} layers do not load, the first {many[2]!r}: "
        text = many[3]
    shapes = re.search(
        r"variable\.shape=(\(.*?\)), Received: value\.shape=(\(.*?\))\. "
        r"Target variable: <Variable path=([^,]+)",
        text,
    )
    if shapes:
        text = (
            f"{shapes[3]} has shape {shapes[1]} in the model and "
            f"{shapes[2]} in the file"
        )
    return prefix + text.rstrip(".")


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__
