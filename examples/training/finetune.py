"""Fine-tuning a pretrained SGE-ResNet on other classes.

The keras.io "Transfer learning & fine-tuning" recipe, for a model built by
`keras_sge.applications`:

1. `load_pretrained`: every weight of a checkpoint (official PyTorch or
   Keras) except a classifier that does not fit the data's classes, which
   starts anew. Any other mismatch (another depth, other SGE groups) fails
   with the keys named.
2. `freeze_backbone`: train only the new classifier first, the backbone
   frozen; Keras runs a non-trainable BatchNormalization in inference mode,
   so its statistics stay the pretrained ones.
3. `unfreeze`: then train the whole network at a lower learning rate.
"""

import os

from keras_sge.applications import weights as weights_lib
from keras_sge.applications.weights import CLASSIFIER


def load_pretrained(model, path, build_like):
    """Loads `path` into `model`; a classifier that does not fit starts anew.

    Args:
        model: a model built by `keras_sge.applications`, with a classifier.
        path: a Keras weights file or a PyTorch checkpoint (a path, or a
            `keras_sge.applications.weights.WeightsFile`).
        build_like: `classes -> model`, the same architecture as `model`
            with another number of classes (`None`: no classifier).

    Returns:
        A one-line description of what was loaded and what is new.
    """
    classes = weights_lib.model_classes(model)
    weights = (
        path
        if isinstance(path, weights_lib.WeightsFile)
        else weights_lib.WeightsFile(path)
    )
    file_classes = weights.classes
    if file_classes == classes:
        weights_lib.load_weights(model, weights)
        return f"Loaded all {len(model.weights)} weights of {model.name} from {weights.path}"
    source = build_like(file_classes)
    weights_lib.load_weights(source, weights)
    loaded = weights_lib.transfer_weights(source, model, skip=(CLASSIFIER,))
    had = (
        f"the checkpoint's has {file_classes}"
        if file_classes
        else "the checkpoint has none"
    )
    return (
        f"Loaded {loaded} weights of {model.name} from "
        f"{os.path.basename(weights.path)} (all but the classifier); "
        f"new classifier {CLASSIFIER!r} for {classes} classes ({had})"
    )


def freeze_backbone(model):
    """Makes every layer but the classifier non-trainable."""
    for layer in model.layers:
        layer.trainable = layer.name == CLASSIFIER


def unfreeze(model):
    for layer in model.layers:
        layer.trainable = True
