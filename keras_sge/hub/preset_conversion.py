"""Official PyTorch SGE-ResNet checkpoints to KerasHub presets."""

import json
import os

from keras_sge.applications import imagenet_class_names

# Reading and mapping the PyTorch checkpoints belongs to the core package;
# everything this module needs of it is imported here, and only here.
from keras_sge.applications.architectures import describe
from keras_sge.applications.torch_checkpoint import infer_architecture
from keras_sge.applications.torch_checkpoint import load_state_dict
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
    src, directory, verbose=True, image_size=224, class_names=None
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

    Args:
        src: path of the PyTorch checkpoint.
        directory: the preset directory to write; it must be new or empty.
        verbose: print what is read, inferred and written.
        image_size: the side of the square the converter crops (224, the
            reference's evaluation size).
        class_names: the classifier's class names, in output order. Defaults
            to the ImageNet names for a 1000-class checkpoint and to none
            otherwise.

    Returns:
        The `SGEResNetImageClassifier` holding the weights, or the
        `SGEResNetBackbone` for a checkpoint without a classifier.

    Raises:
        ValueError: the directory is not empty, the file is not a
            checkpoint of a known architecture, or `class_names` does not fit.

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
    _check_new_directory(directory)
    say(f"Reading {os.fspath(src)} ...")
    state_dict = load_state_dict(src)
    architecture = infer_architecture(state_dict)
    classes = architecture["classes"]
    class_names = _class_names(class_names, classes)
    say(f"Architecture: {describe(**architecture)}")

    # float32 and the session's data format: the weights are the same in
    # either layout, `from_preset(..., dtype=...)` picks the precision.
    backbone = SGEResNetBackbone(
        depth=architecture["depth"],
        groups=architecture["groups"],
        dtype="float32",
    )
    set_weights_from_state_dict(
        backbone, state_dict, source=f"checkpoint {os.fspath(src)!r}"
    )
    converter = SGEResNetImageConverter(
        image_size=(image_size, image_size), data_format=backbone.data_format
    )
    preprocessor = SGEResNetImageClassifierPreprocessor(converter)
    if classes is None:
        backbone.save_to_preset(directory)
        preprocessor.save_to_preset(directory)
        model = backbone
    else:
        model = SGEResNetImageClassifier(
            backbone, num_classes=classes, preprocessor=preprocessor
        )
        # torch's Linear weight is (classes, features); Keras's kernel is
        # (features, classes).
        model.output_dense.set_weights(
            [state_dict["fc.weight"].T, state_dict["fc.bias"]]
        )
        model.save_to_preset(directory)
    _update_metadata(directory, class_names, src)
    kind = "ImageClassifier" if classes is not None else "Backbone"
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


def _check_new_directory(directory):
    if os.path.exists(directory) and (
        not os.path.isdir(directory) or os.listdir(directory)
    ):
        found = (
            sorted(os.listdir(directory))[:5]
            if os.path.isdir(directory)
            else "a file"
        )
        raise ValueError(
            "The preset directory must be new or empty, so that no file of another "
            f"preset is left in it. Received: directory={directory!r} (holds {found})"
        )


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
