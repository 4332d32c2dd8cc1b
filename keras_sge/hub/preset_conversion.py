"""Official PyTorch SGE-ResNet checkpoints to KerasHub presets."""

import json
import os
import shutil

from keras_sge.applications import imagenet_class_names

# Reading and mapping the PyTorch checkpoints belongs to the core package;
# everything this module needs of it is imported here, and only here.
from keras_sge.applications.architectures import describe
from keras_sge.applications.checkpoint_model import INFER
from keras_sge.applications.checkpoint_model import check_overrides
from keras_sge.applications.checkpoint_model import checkpoint_architecture
from keras_sge.applications.checkpoint_model import open_checkpoint
from keras_sge.applications.torch_checkpoint import describe_state_dict
from keras_sge.applications.torch_mapping import set_weights_from_state_dict
from keras_sge.hub.sge_resnet_backbone import SGEResNetBackbone
from keras_sge.hub.sge_resnet_image_classifier import SGEResNetImageClassifier
from keras_sge.hub.sge_resnet_image_classifier_preprocessor import (
    SGEResNetImageClassifierPreprocessor,
)
from keras_sge.hub.sge_resnet_image_converter import SGEResNetImageConverter

METADATA_FILE = "metadata.json"  # KerasHub's preset metadata.
CLASS_NAMES_KEY = "class_names"


def convert_to_preset(
    src,
    directory,
    verbose=True,
    image_size=224,
    class_names=None,
    depth=None,
    groups=INFER,
    classes=None,
    overwrite=False,
):
    """Writes a KerasHub preset from an official PyTorch checkpoint.

    Reads the checkpoint (an implus/PytorchInsight `.pth.tar`, a bare
    `state_dict` or a torchvision ResNet; loaded with `weights_only=True`,
    so it cannot run code; needs torch), infers depth, SGE groups and
    classes from it, and writes an `SGEResNetImageClassifier` preset:
    `config.json` and `model.weights.h5` (the backbone), `task.json` and
    `task.weights.h5` (the classifier, the checkpoint's `fc`),
    `preprocessor.json` and `image_converter.json` (the reference's resize,
    centre crop and normalisation), and `metadata.json`, which also holds
    the class names (`preset_class_names` reads them). A checkpoint without
    a classifier gives a backbone preset with the preprocessor.

    Load it offline with `keras_hub.models.ImageClassifier.from_preset(
    directory)` (or `SGEResNetBackbone.from_preset`), after importing
    `keras_sge.hub`; `num_classes=N` gives a new head to fine-tune.

    The preset is written to a temporary folder beside `directory` and
    renamed into place once complete, so an interrupted conversion leaves
    no partial preset behind (and an existing one as it was).

    Args:
        src: path of the PyTorch checkpoint.
        directory: the preset directory to write; it must be new or empty,
            or a preset to replace with `overwrite=True`.
        verbose: print what is read, inferred and written.
        image_size: the side of the square the converter crops (224, the
            reference's evaluation size).
        class_names: the classifier's class names, in output order. Defaults
            to the ImageNet names for a 1000-class checkpoint and to none
            otherwise.
        depth, groups, classes: override what is inferred from the
            checkpoint, as `keras_sge.convert.convert` does (`groups=None`:
            no SGE). An override the checkpoint's keys do not fit is refused,
            naming the keys.
        overwrite: replace an existing preset in `directory`.

    Returns:
        The `SGEResNetImageClassifier` holding the weights, or the
        `SGEResNetBackbone` for a checkpoint without a classifier.

    Raises:
        ValueError: the directory is not empty (and `overwrite` is False,
            or it holds no preset), the file is not a checkpoint of a known
            architecture, its weights are not finite, or an override or
            `class_names` does not fit.
        FileNotFoundError, IsADirectoryError: `src` is not a file.

    Example:

    ```python
    import keras_hub
    import numpy as np
    import keras_sge.hub

    keras_sge.hub.convert_to_preset("sge_resnet18.pth.tar", "sge_resnet18_imagenet")
    classifier = keras_hub.models.ImageClassifier.from_preset("sge_resnet18_imagenet")
    logits = classifier.predict(np.random.randint(0, 256, (1, 256, 320, 3)))  # (1, 1000)
    ```
    """
    say = print if verbose else _silent
    directory = os.fspath(directory)
    check_preset_directory(directory, overwrite)
    check_overrides(depth, groups, classes)
    checkpoint = open_checkpoint(src)
    say(f"Reading {checkpoint.path} ...")
    architecture = checkpoint_architecture(checkpoint, depth, groups, classes)
    class_names = _class_names(class_names, architecture["classes"])
    say(f"Architecture: {describe(**architecture)}")
    model, preprocessor = _preset_model(checkpoint, architecture, image_size)
    _write_atomically(
        directory,
        lambda folder: _save(
            model, preprocessor, folder, class_names, checkpoint.path
        ),
    )
    kind = (
        "Backbone"
        if isinstance(model, SGEResNetBackbone)
        else "ImageClassifier"
    )
    say(
        f"Wrote {directory}: load it with "
        f"keras_hub.models.{kind}.from_preset({directory!r}) "
        "after `import keras_sge.hub`"
    )
    return model


def preset_class_names(preset):
    """The class names a local preset's metadata holds, or `None`.

    Example:

    ```python
    import keras_hub
    import numpy as np
    import keras_sge.hub

    preset = "sge_resnet18_names"
    keras_sge.hub.convert_to_preset("sge_resnet18.pth.tar", preset, verbose=False)
    classifier = keras_hub.models.ImageClassifier.from_preset(preset)
    names = keras_sge.hub.preset_class_names(preset)  # the 1000 ImageNet names
    logits = classifier.predict(np.random.randint(0, 256, (2, 256, 256, 3)))
    print([names[i] for i in logits.argmax(-1)])
    ```
    """
    path = os.path.join(os.fspath(preset), METADATA_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"{os.fspath(preset)!r} is not a local KerasHub preset: it has "
            f"no {METADATA_FILE}."
        )
    with open(path, encoding="utf-8") as file:
        return json.load(file).get(CLASS_NAMES_KEY)


def _silent(*args, **kwargs):
    pass


def check_preset_directory(directory, overwrite=False):
    """Returns `directory` if `convert_to_preset` may write it; raises otherwise.

    It must be new or empty, so that no file of another preset is left in
    it. `overwrite` replaces a preset (a folder holding KerasHub's
    metadata.json) as a whole, and never a folder of other files.
    """
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(
            f"The preset directory {directory!r} is a file: give the path of "
            "a new folder."
        )
    held = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    if held and not overwrite:
        raise ValueError(
            "The preset directory must be new or empty, so that no file of another "
            f"preset is left in it. Received: directory={directory!r} (holds "
            f"{held[:5]}): pass --overwrite (overwrite=True in Python) to "
            "replace the preset, or remove it."
        )
    if held and METADATA_FILE not in held:
        raise ValueError(
            "--overwrite replaces only a KerasHub preset (a folder holding "
            f"{METADATA_FILE}), so that no other files are deleted. Received: "
            f"directory={directory!r} (holds {held[:5]}): choose another folder."
        )
    return directory


def _preset_model(checkpoint, architecture, image_size):
    """`(model, preprocessor)`: the classifier, or without classes the backbone."""
    state_dict = checkpoint.state_dict
    source = f"checkpoint {checkpoint.path!r}"
    # float32 and the session's data format: the weights are the same in
    # either layout, `from_preset(..., dtype=...)` picks the precision.
    backbone = SGEResNetBackbone(
        depth=architecture["depth"],
        groups=architecture["groups"],
        dtype="float32",
    )
    set_weights_from_state_dict(backbone, state_dict, source=source)
    converter = SGEResNetImageConverter(
        image_size=(image_size, image_size), data_format=backbone.data_format
    )
    preprocessor = SGEResNetImageClassifierPreprocessor(converter)
    if architecture["classes"] is None:
        return backbone, preprocessor
    model = SGEResNetImageClassifier(
        backbone, num_classes=architecture["classes"], preprocessor=preprocessor
    )
    model.output_dense.set_weights(_head_weights(model, state_dict, source))
    return model, preprocessor


def _head_weights(model, state_dict, source):
    """The checkpoint's `fc` as the head's `[kernel, bias]`, checked first.

    Refused in the words `set_weights_from_state_dict` uses for the
    backbone (and the weights-file conversion for the whole model), e.g.
    when a classes override does not fit the checkpoint's `fc`.
    """
    features, classes = model.output_dense.kernel.shape
    expected = {"fc.weight": (classes, features), "fc.bias": (classes,)}
    missing = [key for key in expected if key not in state_dict]
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)}, model {shape}"
        for key, shape in expected.items()
        if key in state_dict and tuple(state_dict[key].shape) != shape
    ]
    if missing or mismatched:
        raise ValueError(
            f"Cannot load the {source} into the preset's {classes}-class "
            "classifier: "
            + (
                "missing keys (the model needs them, the checkpoint lacks "
                f"them): {', '.join(missing)}. "
                if missing
                else ""
            )
            + (
                f"shape mismatches: {', '.join(mismatched)}. "
                if mismatched
                else ""
            )
            + f"The checkpoint looks like {describe_state_dict(state_dict)}."
        )
    # torch's Linear weight is (classes, features); Keras's kernel is
    # (features, classes).
    return [state_dict["fc.weight"].T, state_dict["fc.bias"]]


def _save(model, preprocessor, folder, class_names, src):
    model.save_to_preset(folder)
    if isinstance(model, SGEResNetBackbone):
        preprocessor.save_to_preset(folder)  # a classifier saves its own.
    _update_metadata(folder, class_names, src)


def _write_atomically(directory, write):
    """Calls `write(folder)` on a temporary sibling of `directory`, then renames it.

    A conversion killed mid-save would otherwise leave a partial preset
    that fails to load much later, in h5py, naming no file.
    """
    temporary = _sibling(directory, "tmp")
    os.makedirs(os.path.dirname(temporary), exist_ok=True)
    try:
        write(temporary)
        _replace_directory(temporary, directory)
    except BaseException:  # Ctrl-C too: leave no temporary folder behind.
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _replace_directory(new, directory):
    """Renames `new` to `directory`, removing an old one only once `new` is there."""
    if not os.path.exists(directory):
        os.rename(new, directory)
        return
    old = _sibling(directory, "old")
    os.rename(directory, old)
    try:
        os.rename(new, directory)
    except BaseException:
        os.rename(old, directory)
        raise
    shutil.rmtree(old)


def _sibling(directory, tag):
    """A hidden folder beside `directory`: same file system, so renames are atomic."""
    parent, name = os.path.split(os.path.abspath(directory))
    return os.path.join(parent, f".{name}.{tag}-{os.getpid()}")


def _class_names(class_names, classes):
    if class_names is None:
        return imagenet_class_names() if classes == 1000 else None
    class_names = [str(name) for name in class_names]
    if classes is None or len(class_names) != classes:
        raise ValueError(
            f"`class_names` must name each of the checkpoint's {classes} classes. "
            f"Received: {len(class_names)} class names"
        )
    return class_names


def _update_metadata(directory, class_names, src):
    """Adds the class names and the source file to KerasHub's metadata.json."""
    path = os.path.join(directory, METADATA_FILE)
    with open(path, encoding="utf-8") as file:
        metadata = json.load(file)
    metadata["converted_from"] = os.path.basename(os.fspath(src))
    if class_names is not None:
        metadata[CLASS_NAMES_KEY] = class_names
    with open(path, "w", encoding="utf-8") as file:
        json.dump(metadata, file, indent=4)
