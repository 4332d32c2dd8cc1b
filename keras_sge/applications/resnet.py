"""SGE-ResNet-18/34/50/101/152, faithful to the reference PyTorch networks.

The reference (implus/PytorchInsight, `resnet_sge.py`) is a torchvision-style
ResNet ("v1.5"), not `keras.applications.ResNet50` ("v1"):

- the stride of a bottleneck block is on its 3x3 convolution, not on the
  first 1x1;
- convolutions have no bias; BatchNormalization uses epsilon 1e-5 and
  momentum 0.9 (torch's 0.1);
- torch pads symmetrically, so every strided convolution / pooling is
  preceded by an explicit `ZeroPadding2D` (Keras's `"same"` pads strided
  layers asymmetrically, which would shift every feature map by a pixel);
- SGE sits after the last BN of each residual branch, before the add (the
  SGE layer computes the add and the ReLU too, in one compiled function).

Layer names follow `keras.applications.ResNet50`
(`conv2_block1_1_conv`, ..., `conv2_block1_sge`, `conv2_block1_out`), so
`conv{2..5}_block{last}_out` are the C2-C5 features; see `stage_outputs`.
"""

import keras
from keras import layers

from keras_sge.applications import weights as weights_lib
from keras_sge.layers.sge import SGE

BN_EPSILON = 1e-5
# torch's BatchNorm2d momentum=0.1 updates `running = 0.9 running + 0.1 batch`;
# Keras's momentum is the weight of the old value.
BN_MOMENTUM = 0.9
STAGE_WIDTHS = (64, 128, 256, 512)

# depth -> (block kind, blocks per stage), as in the reference constructors.
ARCHITECTURES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}

# SGE-ResNet blocks compute SGE -> add -> ReLU in the SGE layer
# (`SGE(...)(x, residual=shortcut)`). False builds the separate
# `_add` / ReLU layers instead (same numbers; for benchmarks and ablations).
FUSE_SGE_RESIDUAL = True

_BUILDER_DOCSTRING = """Instantiates the {title} architecture ({reference}).

Reference:
- [Spatial Group-wise Enhance: Improving Semantic Feature Learning in
  Convolutional Networks](https://arxiv.org/abs/1905.09646) (Li, Hu and
  Yang, 2019); official code: implus/PytorchInsight.

The network is the torchvision-style ResNet ("v1.5": stride on the 3x3
convolution, no conv bias, BN epsilon 1e-5 / momentum 0.9) with an `SGE`
layer after the last BatchNormalization of every residual block. Trainable
parameters at 1000 classes: {params:,} ({plain_params:,} with `groups=None`).

The model expects the output of `keras_sge.applications.preprocess_input`
(RGB in [0, 255] -> scaled to [0, 1], then the ImageNet mean and std); see
also `keras_sge.applications.center_crop_resize` for the reference's
evaluation geometry (resize the shorter side to 256, centre-crop 224).

Args:
    include_top: whether to include the global average pooling and the
        fully-connected classifier (`predictions`).
    weights: `None` (random initialization), the path to a Keras weights
        file (`.weights.h5`, e.g. written by `python -m keras_sge.convert`),
        or the path to a PyTorch checkpoint of the reference network
        (an official PytorchInsight `.pth.tar` training checkpoint or a
        bare `state_dict`; a torchvision ResNet for `groups=None`), which
        is converted on load (needs `torch`). With `include_top=False` the
        checkpoint's classifier is ignored. `"imagenet"` is not available:
        convert the official checkpoint instead.
    input_tensor: optional Keras tensor (output of `keras.Input()`, or of
        layers applied to one) to use as image input for the model; the
        model's inputs are then that tensor's source inputs.
    input_shape: optional shape tuple, `(224, 224, 3)` by default with
        `include_top=True` and `(None, None, 3)` otherwise (channels first
        under the `"channels_first"` data format). Spatial sizes must be at
        least 32.
    pooling: with `include_top=False`, `None` returns the 4D output of the
        last block, `"avg"` adds global average pooling and `"max"` global
        max pooling, giving a 2D output.
    classes: number of classes to classify images into, only used with
        `include_top=True`.
    classifier_activation: activation of the classifier (`"softmax"`, `None`
        for logits, or any Keras activation). The classifier always computes
        in float32, so under a mixed precision policy the predictions are
        float32.
    name: the model's name; by default `"sge_resnet{{depth}}"`, or
        `"resnet{{depth}}"` with `groups=None`.
    groups: number of SGE groups (64 in the paper), or `None` for the plain
        ResNet without SGE, the ablation and benchmark baseline.
    kernel_regularizer: optional regularizer for every convolution and the
        classifier kernel. Keras 3 only applies regularizers set before the
        layers are built, so it has to be given here. (The reference decays
        all parameters by 1e-4; an optimizer's `weight_decay` does that.)
    synchronized_bn: if `True`, BatchNormalization synchronizes its batch
        statistics across replicas in a distributed strategy.
    zero_init_residual: if `True`, the last BN of each residual branch
        starts with gamma 0, as the reference's `zero_init_residual` option.

Returns:
    A `keras.Model` instance.

Example:

```python
import numpy as np
from keras_sge import applications

model = applications.{builder}(
    weights=None, input_shape=(64, 64, 3), classes=10
)
images = np.random.uniform(0, 255, (2, 64, 64, 3))
probabilities = model.predict(applications.preprocess_input(images))
```
"""


def _bn_axis():
    return -1 if keras.config.image_data_format() == "channels_last" else 1


def _conv(x, filters, kernel_size, strides, name, settings):
    """A bias-free convolution; torch's symmetric padding made explicit.

    Stride 1 convolutions pad `"same"`, which is symmetric for odd kernels.
    Strided ones get a `ZeroPadding2D` of `kernel_size // 2`, as torch does.
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(padding=kernel_size // 2, name=name + "_pad")(x)
        padding = "valid"
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        # torch's kaiming_normal_(mode="fan_out", nonlinearity="relu").
        kernel_initializer=keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal"),
        kernel_regularizer=settings["kernel_regularizer"],
        name=name + "_conv",
    )(x)


def _bn(x, name, settings, zero_gamma=False):
    return layers.BatchNormalization(
        axis=_bn_axis(),
        epsilon=BN_EPSILON,
        momentum=BN_MOMENTUM,
        gamma_initializer="zeros" if zero_gamma else "ones",
        synchronized=settings["synchronized_bn"],
        name=name + "_bn",
    )(x)


def _conv_bn(x, filters, kernel_size, strides, name, settings, relu=True, zero_gamma=False):
    x = _conv(x, filters, kernel_size, strides, name, settings)
    x = _bn(x, name, settings, zero_gamma=zero_gamma)
    if relu:
        x = layers.ReLU(name=name + "_relu")(x)
    return x


def _residual_branch(x, kind, width, strides, name, settings):
    """The block's conv/BN stack, up to and including its last BN."""
    zero_gamma = settings["zero_init_residual"]
    if kind == "basic":
        x = _conv_bn(x, width, 3, strides, name + "_1", settings)
        return _conv_bn(x, width, 3, 1, name + "_2", settings, relu=False, zero_gamma=zero_gamma)
    x = _conv_bn(x, width, 1, 1, name + "_1", settings)
    x = _conv_bn(x, width, 3, strides, name + "_2", settings)
    return _conv_bn(x, width * 4, 1, 1, name + "_3", settings, relu=False, zero_gamma=zero_gamma)


def _block(x, kind, width, strides, name, settings):
    """A residual block: branch -> SGE -> + shortcut -> ReLU.

    The shortcut is a strided 1x1 conv + BN when the shape changes, as the
    reference's `downsample` (stride != 1 or a different channel count).
    With SGE, the SGE layer (`_sge`) takes the shortcut as its `residual` and
    returns `relu(shortcut + SGE(x))` itself, followed by an identity layer
    named `_out`; without (`groups=None`) the block ends with `_add` and the
    ReLU `_out`.
    """
    filters = width * EXPANSION[kind]
    in_channels = x.shape[_bn_axis()]
    if strides != 1 or in_channels != filters:
        shortcut = _conv_bn(x, filters, 1, strides, name + "_0", settings, relu=False)
    else:
        shortcut = x
    x = _residual_branch(x, kind, width, strides, name, settings)
    if settings["groups"] is None:
        x = layers.Add(name=name + "_add")([shortcut, x])
        return layers.ReLU(name=name + "_out")(x)
    sge = SGE(groups=settings["groups"], name=name + "_sge")
    if not FUSE_SGE_RESIDUAL:
        x = layers.Add(name=name + "_add")([shortcut, sge(x)])
        return layers.ReLU(name=name + "_out")(x)
    # relu(shortcut + SGE(x)) as one compiled function (one pass over the
    # feature map instead of three kernels); `_out` names the block output.
    x = sge(x, residual=shortcut)
    return layers.Identity(name=name + "_out")(x)


def _stem(x, settings):
    """7x7/2 conv (pad 3) -> BN -> ReLU -> 3x3/2 max pool (pad 1).

    Zero padding before the max pool matches torch's -inf padding because
    the input is a ReLU output (>= 0).
    """
    x = _conv_bn(x, 64, 7, 2, "conv1", settings)
    x = layers.ZeroPadding2D(padding=1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def _stages(x, depth, settings):
    kind, blocks_per_stage = ARCHITECTURES[depth]
    for stage, (width, blocks) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage)):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _block(x, kind, width, strides, f"conv{stage + 2}_block{block + 1}", settings)
    return x


def _head(x, include_top, pooling, classes, classifier_activation, settings):
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # torch's nn.Linear init: kernel and bias uniform in +-1/sqrt(fan_in).
        limit = 1.0 / x.shape[-1] ** 0.5
        # float32 whatever the policy: softmax and the loss need the range.
        return layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform"),
            bias_initializer=keras.initializers.RandomUniform(-limit, limit),
            kernel_regularizer=settings["kernel_regularizer"],
            dtype="float32",
            name="predictions",
        )(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def SGEResNet(
    depth,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    groups=64,
    kernel_regularizer=None,
    synchronized_bn=False,
    zero_init_residual=False,
):
    """Builds an SGE-ResNet of the given depth (18, 34, 50, 101 or 152).

    The public builders (`SGEResNet50`, ...) fix `depth`; see their
    docstring for the arguments.
    """
    _validate_arguments(depth, include_top, weights, pooling, classes, groups)
    img_input = _image_input(input_tensor, input_shape, include_top)
    settings = {
        "groups": groups,
        "kernel_regularizer": keras.regularizers.get(kernel_regularizer),
        "synchronized_bn": synchronized_bn,
        "zero_init_residual": zero_init_residual,
    }
    x = _stem(img_input, settings)
    x = _stages(x, depth, settings)
    x = _head(x, include_top, pooling, classes, classifier_activation, settings)

    # Like keras.applications: a model built on `input_tensor` starts from
    # that tensor's own source inputs.
    inputs = _source_inputs(input_tensor) if input_tensor is not None else img_input
    if name is None:
        name = f"{'sge_' if groups is not None else ''}resnet{depth}"
    model = keras.Model(inputs, x, name=name)
    if weights is not None:

        def with_classifier(classes):
            return SGEResNet(depth, input_shape=tuple(img_input.shape[1:]), classes=classes, groups=groups)

        weights_lib.load_weights(model, weights, with_classifier)
    return model


def _source_inputs(tensor):
    """The inputs `tensor` comes from; a single one unwrapped, as Keras expects."""
    sources = keras.utils.get_source_inputs(tensor)
    return sources[0] if len(sources) == 1 else sources


def _validate_arguments(depth, include_top, weights, pooling, classes, groups):
    if depth not in ARCHITECTURES:
        raise ValueError(f"`depth` must be one of {sorted(ARCHITECTURES)}. Received: depth={depth!r}")
    if weights == "imagenet":
        raise ValueError(
            "`weights='imagenet'` is not available for SGE-ResNet: no Keras "
            "weights are hosted for download. Convert the official PyTorch "
            "checkpoint (implus/PytorchInsight, e.g. sge_resnet50.pth.tar) "
            "with `python -m keras_sge.convert sge_resnet50.pth.tar "
            "sge_resnet50.weights.h5` and pass `weights='sge_resnet50.weights.h5'`, "
            "or pass the checkpoint's path directly (this needs torch). "
            f"Received: weights={weights!r}"
        )
    if weights is not None and not isinstance(weights, (str, bytes)) and not hasattr(weights, "__fspath__"):
        raise ValueError(
            "The `weights` argument should be either `None` (random "
            "initialization) or the path to a Keras weights file or a PyTorch "
            f"checkpoint. Received: weights={weights!r}"
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be one of None, 'avg' or 'max'. Received: pooling={pooling!r}")
    if include_top and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise ValueError(f"`classes` must be a positive integer. Received: classes={classes!r}")
    _validate_groups(depth, groups)


def _validate_groups(depth, groups):
    if groups is None:
        return
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(
            f"`groups` must be a positive integer, or None for a ResNet without SGE. Received: groups={groups!r}"
        )
    kind, _ = ARCHITECTURES[depth]
    narrowest = STAGE_WIDTHS[0] * EXPANSION[kind]
    if narrowest % groups:
        raise ValueError(
            f"`groups` must divide the number of channels of every block; the "
            f"narrowest block of a ResNet-{depth} has {narrowest} channels. "
            f"Received: groups={groups!r}"
        )


def _image_input(input_tensor, input_shape, include_top):
    input_shape = _standardize_input_shape(input_shape, include_top)
    if input_tensor is None:
        return layers.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        raise ValueError(
            "`input_tensor` must be a Keras tensor (from `keras.Input()` or a "
            "layer applied to one). Received: "
            f"input_tensor={type(input_tensor).__name__} of shape {getattr(input_tensor, 'shape', None)}"
        )
    return input_tensor


def _standardize_input_shape(input_shape, include_top):
    channels_last = keras.config.image_data_format() == "channels_last"
    if input_shape is None:
        size = 224 if include_top else None
        return (size, size, 3) if channels_last else (3, size, size)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be a tuple of three integers "
            f"({'(height, width, 3)' if channels_last else '(3, height, width)'}). "
            f"Received: input_shape={input_shape}"
        )
    spatial = input_shape[:2] if channels_last else input_shape[1:]
    channels = input_shape[2] if channels_last else input_shape[0]
    if channels is None or channels < 1:
        raise ValueError(f"`input_shape` needs a known, positive channel count. Received: input_shape={input_shape}")
    if any(size is not None and size < 32 for size in spatial):
        raise ValueError(f"Input size must be at least 32x32; Received: input_shape={input_shape}")
    return input_shape


def _builder(depth, title, reference):
    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=None,
        groups=64,
        kernel_regularizer=None,
        synchronized_bn=False,
        zero_init_residual=False,
    ):
        return SGEResNet(
            depth,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name,
            groups=groups,
            kernel_regularizer=kernel_regularizer,
            synchronized_bn=synchronized_bn,
            zero_init_residual=zero_init_residual,
        )

    builder.__name__ = builder.__qualname__ = f"SGEResNet{depth}"
    builder.__module__ = __name__
    builder.__doc__ = _BUILDER_DOCSTRING.format(
        title=title,
        reference=reference,
        params=PARAMETER_COUNTS[(depth, 64)],
        plain_params=PARAMETER_COUNTS[(depth, None)],
        builder=builder.__name__,
    )
    return builder


# Trainable parameters at 1000 classes, as torch counts them (no BN running
# statistics): (depth, groups) -> count.
PARAMETER_COUNTS = {
    (18, 64): 11_690_536,
    (18, None): 11_689_512,
    (34, 64): 21_799_720,
    (34, None): 21_797_672,
    (50, 64): 25_559_080,
    (50, None): 25_557_032,
    (101, 64): 44_553_384,
    (101, None): 44_549_160,
    (152, 64): 60_199_208,
    (152, None): 60_192_808,
}

SGEResNet18 = _builder(18, "SGE-ResNet-18", "BasicBlock, [2, 2, 2, 2]")
SGEResNet34 = _builder(34, "SGE-ResNet-34", "BasicBlock, [3, 4, 6, 3]")
SGEResNet50 = _builder(50, "SGE-ResNet-50", "Bottleneck, [3, 4, 6, 3]")
SGEResNet101 = _builder(101, "SGE-ResNet-101", "Bottleneck, [3, 4, 23, 3]")
SGEResNet152 = _builder(152, "SGE-ResNet-152", "Bottleneck, [3, 8, 36, 3]")
