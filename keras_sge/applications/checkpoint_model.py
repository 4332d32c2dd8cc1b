"""Builds the SGE-ResNet a PyTorch checkpoint holds, with its weights."""

import keras

from keras_sge.applications import torch_checkpoint
from keras_sge.applications import torch_mapping
from keras_sge.applications.architectures import ARCHITECTURES
from keras_sge.applications.resnet import SGEResNet
from keras_sge.applications.weights import WeightsFile
from keras_sge.arguments import check_positive_int

INFER = "infer"


def checkpoint_architecture(checkpoint, depth=None, groups=INFER, classes=None):
    """`{"depth", "groups", "classes"}` of a checkpoint, with overrides.

    Args:
        checkpoint: a `WeightsFile` of a PyTorch checkpoint (or its path).
        depth, classes: override what the keys and shapes say (None: infer).
        groups: override the SGE groups (`None`: no SGE; `"infer"`: infer).

    Raises:
        ValueError: an override is out of range (checked before the file
            is read), or the checkpoint is unreadable or of no known
            architecture. An override that does not fit the checkpoint's
            keys is refused when its weights are assigned, naming the keys.
    """
    check_overrides(depth, groups, classes)
    checkpoint = open_checkpoint(checkpoint)
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


def check_overrides(depth=None, groups=INFER, classes=None):
    """Refuses an out-of-range override of `checkpoint_architecture`'s.

    Checked before the checkpoint is read: reading a large one takes
    seconds, and `classes=0` used to be echoed as "0 classes" and ignored.
    """
    if depth is not None and depth not in ARCHITECTURES:
        raise ValueError(
            f"`depth` must be one of {sorted(ARCHITECTURES)}, or None to read "
            f"it from the checkpoint. Received: depth={depth!r}"
        )
    if groups not in (INFER, None):
        check_positive_int(
            "groups", groups, hint=", or None for a ResNet without SGE"
        )
    if classes is not None:
        check_positive_int(
            "classes", classes, hint=", or None to read it from the checkpoint"
        )


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
    checkpoint = open_checkpoint(checkpoint)
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


def open_checkpoint(checkpoint):
    """A `WeightsFile` of a PyTorch checkpoint (read when first used).

    Args:
        checkpoint: the checkpoint's path, or a `WeightsFile` of one.

    Raises:
        FileNotFoundError, IsADirectoryError: no file at the path.
        ValueError: the file is a Keras weights file.
    """
    if not isinstance(checkpoint, WeightsFile):
        # Checked here, not by `WeightsFile`, whose message speaks of the
        # builders' `weights` argument.
        checkpoint = WeightsFile(
            torch_checkpoint.check_checkpoint_path(checkpoint)
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
