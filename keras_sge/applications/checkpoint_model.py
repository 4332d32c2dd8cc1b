"""Builds the SGE-ResNet a PyTorch checkpoint holds, with its weights."""

import keras

from keras_sge.applications import torch_checkpoint
from keras_sge.applications import torch_mapping
from keras_sge.applications.resnet import SGEResNet
from keras_sge.applications.weights import WeightsFile

INFER = "infer"


def checkpoint_architecture(checkpoint, depth=None, groups=INFER, classes=None):
    """`{"depth", "groups", "classes"}` of a checkpoint, with overrides.

    Args:
        checkpoint: a `WeightsFile` of a PyTorch checkpoint (or its path).
        depth, classes: override what the keys and shapes say (None: infer).
        groups: override the SGE groups (`None`: no SGE; `"infer"`: infer).
    """
    checkpoint = _torch_file(checkpoint)
    arch = torch_checkpoint.infer_architecture(checkpoint.state_dict)
    arch.update(
        {
            key: value
            for key, value in (("depth", depth), ("classes", classes))
            if value is not None
        }
    )
    if groups != INFER:
        arch["groups"] = groups
    return arch


def from_checkpoint(
    checkpoint,
    include_top=None,
    input_shape=None,
    classifier_activation="softmax",
    depth=None,
    groups=INFER,
    classes=None,
    progress=None,
):
    """The SGE-ResNet (or ResNet) a PyTorch checkpoint holds, with its weights.

    The depth, the SGE groups and the number of classes are read from the
    checkpoint's keys and shapes (official PytorchInsight checkpoints, bare
    `state_dict`s and torchvision ResNets).

    Args:
        checkpoint: path of the checkpoint, or a `WeightsFile` of one.
        include_top: whether to build the classifier; by default, if the
            checkpoint has one.
        input_shape: the model's input shape; by default any image size
            (`(None, None, 3)`, channels first under that data format).
        classifier_activation: as the builders'.
        depth, groups, classes: override the inferred values (see
            `checkpoint_architecture`).
        progress: optional callable, called with the number of layers
            assigned so far.

    Returns:
        A `keras.Model` named like the builders' (`sge_resnet50`, ...).

    Example:

    ```python
    from keras_sge import applications

    model = applications.from_checkpoint("sge_resnet18.pth.tar")  # needs torch
    ```
    """
    checkpoint = _torch_file(checkpoint)
    arch = checkpoint_architecture(checkpoint, depth, groups, classes)
    if include_top is None:
        include_top = arch["classes"] is not None
    model = SGEResNet(
        arch["depth"],
        include_top=include_top,
        classes=arch["classes"] or 1000,
        classifier_activation=classifier_activation,
        groups=arch["groups"],
        input_shape=input_shape or _any_size_input_shape(),
    )
    torch_mapping.set_weights_from_state_dict(
        model,
        checkpoint.state_dict,
        source=f"checkpoint {checkpoint.path!r}",
        progress=progress,
    )
    return model


def _torch_file(checkpoint):
    checkpoint = (
        checkpoint
        if isinstance(checkpoint, WeightsFile)
        else WeightsFile(checkpoint)
    )
    if checkpoint.is_keras:
        raise ValueError(
            f"{checkpoint.path!r} is a Keras weights file, not a PyTorch "
            "checkpoint: build the model with "
            f"a builder and `weights={checkpoint.path!r}` instead (it holds no architecture)."
        )
    return checkpoint


def _any_size_input_shape():
    return (
        (None, None, 3)
        if keras.config.image_data_format() == "channels_last"
        else (3, None, None)
    )
