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
- the block's attention sits after the last BN of its residual branch,
  before the add. SGE blocks end with one `SGEResidual` layer that computes
  SGE, the add and the ReLU; other attentions
  (SE, a callable) are followed by `Add` and `ReLU` layers.

Layer names follow `keras.applications.ResNet50`
(`conv2_block1_1_conv`, ..., `conv2_block1_sge`, `conv2_block1_out`), so
`conv{2..5}_block{last}_out` are the C2-C5 features; see `stage_outputs`.
`SGEResNet(depth, ...)` is the generic builder; `SGEResNet50` and friends
fix the depth.
"""

import keras
from keras import layers

from keras_sge.applications import architectures
from keras_sge.applications import weights as weights_lib
from keras_sge.applications.architectures import ARCHITECTURES
from keras_sge.applications.architectures import EXPANSION
from keras_sge.applications.architectures import STAGE_WIDTHS
from keras_sge.arguments import check_positive_int
from keras_sge.arguments import standardize_data_format
from keras_sge.layers.sge_residual import SGEResidual
from keras_sge.layers.squeeze_excite import SqueezeExcite

# The attentions known by name; `attention` may also be a callable.
ATTENTIONS = ("sge", "se", None)
# "imagenet": the reference's 7x7/2 stem and 3x3/2 max pool (stride 4);
# "small": a 3x3 stride-1 stem without pooling, as the CIFAR ResNets.
STEMS = ("imagenet", "small")
# SENet's channel reduction, as in the paper's SE-ResNet baselines.
SE_REDUCTION = 16
_NAME_PREFIX = {"sge": "sge_", "se": "se_", None: ""}


class _Layers:
    """Makes the network's layers with the builder's options.

    One object instead of a dict of options passed through every helper:
    the options are attributes, set once from the builder's arguments.
    Every layer gets the data format and dtype policy as arguments, so
    building reads no Keras global but the defaults of `None`.
    """

    def __init__(
        self,
        attention,
        groups,
        kernel_regularizer,
        synchronized_bn,
        zero_init_residual,
        data_format,
        dtype,
    ):
        self.attention = attention
        self.groups = groups
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.synchronized_bn = synchronized_bn
        self.zero_init_residual = zero_init_residual
        self.data_format = data_format
        self.dtype = dtype
        self.channel_axis = -1 if data_format == "channels_last" else 1

    def layout(self):
        """The keyword arguments every spatial layer takes."""
        return dict(data_format=self.data_format, dtype=self.dtype)

    def conv(self, x, filters, kernel_size, strides, name):
        """A bias-free convolution; torch's symmetric padding made explicit.

        Stride 1 convolutions pad `"same"`, which is symmetric for odd
        kernels. Strided ones get a `ZeroPadding2D` of `kernel_size // 2`,
        as torch does.
        """
        padding = "same"
        if strides > 1 and kernel_size > 1:
            x = layers.ZeroPadding2D(
                padding=kernel_size // 2, name=name + "_pad", **self.layout()
            )(x)
            padding = "valid"
        return layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=False,
            # torch's kaiming_normal_(mode="fan_out", nonlinearity="relu").
            kernel_initializer=keras.initializers.VarianceScaling(
                2.0, mode="fan_out", distribution="untruncated_normal"
            ),
            kernel_regularizer=self.kernel_regularizer,
            name=name + "_conv",
            **self.layout(),
        )(x)

    def conv_bn(
        self,
        x,
        filters,
        kernel_size,
        strides,
        name,
        relu=True,
        last_of_branch=False,
    ):
        x = self.conv(x, filters, kernel_size, strides, name)
        x = layers.BatchNormalization(
            axis=self.channel_axis,
            epsilon=architectures.BN_EPSILON,
            momentum=architectures.BN_MOMENTUM,
            gamma_initializer="zeros"
            if last_of_branch and self.zero_init_residual
            else "ones",
            synchronized=self.synchronized_bn,
            name=name + "_bn",
            dtype=self.dtype,
        )(x)
        if relu:
            x = layers.ReLU(name=name + "_relu", dtype=self.dtype)(x)
        return x

    def branch(self, x, kind, width, strides, name):
        """The block's conv/BN stack, up to and including its last BN."""
        if kind == "basic":
            x = self.conv_bn(x, width, 3, strides, name + "_1")
            return self.conv_bn(
                x, width, 3, 1, name + "_2", relu=False, last_of_branch=True
            )
        x = self.conv_bn(x, width, 1, 1, name + "_1")
        x = self.conv_bn(x, width, 3, strides, name + "_2")
        return self.conv_bn(
            x, width * 4, 1, 1, name + "_3", relu=False, last_of_branch=True
        )

    def block(self, x, kind, width, strides, name):
        """A residual block: branch -> attention -> + shortcut -> ReLU.

        The shortcut is a strided 1x1 conv + BN when the shape changes, as
        the reference's `downsample` (stride != 1 or another channel count).
        """
        filters = width * EXPANSION[kind]
        if strides != 1 or x.shape[self.channel_axis] != filters:
            shortcut = self.conv_bn(
                x, filters, 1, strides, name + "_0", relu=False
            )
        else:
            shortcut = x
        x = self.branch(x, kind, width, strides, name)
        if self.attention == "sge":
            # SGE, the add and the ReLU as one op; `_out` names the output.
            x = SGEResidual(
                groups=self.groups, name=name + "_sge", **self.layout()
            )(x, shortcut)
            return layers.Identity(name=name + "_out", dtype=self.dtype)(x)
        if self.attention == "se":
            x = SqueezeExcite(
                reduction=SE_REDUCTION, name=name + "_se", **self.layout()
            )(x)
        elif self.attention is not None:
            x = self.attention(filters, name + "_attention")(x)
        x = layers.Add(name=name + "_add", dtype=self.dtype)([shortcut, x])
        return layers.ReLU(name=name + "_out", dtype=self.dtype)(x)

    def stem(self, x, kind):
        """7x7/2 conv (pad 3) -> BN -> ReLU -> 3x3/2 max pool (pad 1).

        Zero padding before the max pool matches torch's -inf padding
        because the input is a ReLU output (>= 0). The small stem is a 3x3
        stride-1 conv -> BN -> ReLU: on 32x32 images the stages then see
        32/16/8/4 maps instead of 8/4/2/1.
        """
        if kind == "small":
            return self.conv_bn(x, 64, 3, 1, "conv1")
        x = self.conv_bn(x, 64, 7, 2, "conv1")
        x = layers.ZeroPadding2D(padding=1, name="pool1_pad", **self.layout())(
            x
        )
        return layers.MaxPooling2D(
            3, strides=2, name="pool1_pool", **self.layout()
        )(x)

    def stages(self, x, depth):
        kind, blocks_per_stage = ARCHITECTURES[depth]
        for stage, (width, blocks) in enumerate(
            zip(STAGE_WIDTHS, blocks_per_stage)
        ):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = self.block(
                    x, kind, width, strides, f"conv{stage + 2}_block{block + 1}"
                )
        return x

    def head(self, x, include_top, pooling, classes, classifier_activation):
        if include_top:
            x = layers.GlobalAveragePooling2D(name="avg_pool", **self.layout())(
                x
            )
            # torch's nn.Linear init: kernel and bias uniform in +-1/sqrt(fan_in).
            limit = 1.0 / x.shape[-1] ** 0.5
            # float32 whatever the policy: softmax and the loss need the range.
            return layers.Dense(
                classes,
                activation=classifier_activation,
                kernel_initializer=keras.initializers.VarianceScaling(
                    1.0 / 3.0, mode="fan_in", distribution="uniform"
                ),
                bias_initializer=keras.initializers.RandomUniform(
                    -limit, limit
                ),
                kernel_regularizer=self.kernel_regularizer,
                dtype="float32",
                name=weights_lib.CLASSIFIER,
            )(x)
        if pooling == "avg":
            return layers.GlobalAveragePooling2D(
                name="avg_pool", **self.layout()
            )(x)
        if pooling == "max":
            return layers.GlobalMaxPooling2D(name="max_pool", **self.layout())(
                x
            )
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
    attention="sge",
    kernel_regularizer=None,
    synchronized_bn=False,
    zero_init_residual=False,
    data_format=None,
    dtype=None,
    stem="imagenet",
):
    """Builds an SGE-ResNet of the given depth (18, 34, 50, 101 or 152).

    The public builders (`SGEResNet50`, ...) fix `depth`; see their
    docstring for the other arguments.
    """
    attention = _resolve_attention(attention, groups)
    _validate_arguments(
        depth, include_top, weights, pooling, classes, attention, groups
    )
    if stem not in STEMS:
        raise ValueError(
            f"`stem` must be one of {STEMS}. Received: stem={stem!r}"
        )
    data_format = standardize_data_format(data_format)
    img_input = _image_input(
        input_tensor, input_shape, include_top, data_format
    )
    make = _Layers(
        attention,
        groups,
        kernel_regularizer,
        synchronized_bn,
        zero_init_residual,
        data_format,
        dtype,
    )
    x = make.stem(img_input, stem)
    x = make.stages(x, depth)
    x = make.head(x, include_top, pooling, classes, classifier_activation)

    # Like keras.applications: a model built on `input_tensor` starts from
    # that tensor's own source inputs.
    inputs = (
        _source_inputs(input_tensor) if input_tensor is not None else img_input
    )
    model = keras.Model(inputs, x, name=name or _default_name(depth, attention))
    if weights is not None:

        def with_classifier(classes):
            return SGEResNet(
                depth,
                input_shape=tuple(img_input.shape[1:]),
                classes=classes,
                groups=groups,
                attention=attention,
                data_format=data_format,
                dtype=dtype,
                stem=stem,
            )

        weights_lib.load_weights(model, weights, with_classifier)
    return model


def _resolve_attention(attention, groups):
    """`attention="sge"` with `groups=None` is the plain ResNet (a shorthand)."""
    if not callable(attention) and attention not in ATTENTIONS:
        raise ValueError(
            "`attention` must be 'sge', 'se', None or a callable `(channels, name) -> layer`. "
            f"Received: attention={attention!r}"
        )
    return None if attention == "sge" and groups is None else attention


def _default_name(depth, attention):
    prefix = _NAME_PREFIX[attention] if not callable(attention) else "custom_"
    return f"{prefix}resnet{depth}"


def _source_inputs(tensor):
    """The inputs `tensor` comes from; a single one unwrapped, as Keras expects."""
    sources = keras.utils.get_source_inputs(tensor)
    return sources[0] if len(sources) == 1 else sources


def _validate_arguments(
    depth, include_top, weights, pooling, classes, attention, groups
):
    if depth not in ARCHITECTURES:
        raise ValueError(
            f"`depth` must be one of {sorted(ARCHITECTURES)}. Received: depth={depth!r}"
        )
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
    if (
        weights is not None
        and not isinstance(weights, (str, bytes))
        and not hasattr(weights, "__fspath__")
    ):
        raise ValueError(
            "The `weights` argument should be either `None` (random "
            "initialization) or the path to a Keras weights file or a PyTorch "
            f"checkpoint. Received: weights={weights!r}"
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(
            f"`pooling` must be one of None, 'avg' or 'max'. Received: pooling={pooling!r}"
        )
    if include_top:
        check_positive_int("classes", classes)
    if attention == "sge":
        _validate_groups(depth, groups)


def _validate_groups(depth, groups):
    check_positive_int(
        "groups", groups, hint=", or None for a ResNet without SGE"
    )
    narrowest = architectures.narrowest_block_channels(depth)
    if narrowest % groups:
        raise ValueError(
            f"`groups` must divide the number of channels of every block; the "
            f"narrowest block of a ResNet-{depth} has {narrowest} channels. "
            f"Received: groups={groups!r}"
        )


def _image_input(input_tensor, input_shape, include_top, data_format):
    input_shape = _standardize_input_shape(
        input_shape, include_top, data_format
    )
    if input_tensor is None:
        return layers.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        raise ValueError(
            "`input_tensor` must be a Keras tensor (from `keras.Input()` or a "
            "layer applied to one). Received: "
            f"input_tensor={type(input_tensor).__name__} of shape "
            f"{getattr(input_tensor, 'shape', None)}"
        )
    return input_tensor


def _standardize_input_shape(input_shape, include_top, data_format):
    channels_last = data_format == "channels_last"
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
        raise ValueError(
            "`input_shape` needs a known, positive channel count. "
            f"Received: input_shape={input_shape}"
        )
    if any(size is not None and size < 32 for size in spatial):
        raise ValueError(
            f"Input size must be at least 32x32; Received: input_shape={input_shape}"
        )
    return input_shape


_DOCSTRING = """Instantiates the {title} architecture ({reference}).

Reference:
- [Spatial Group-wise Enhance: Improving Semantic Feature Learning in
  Convolutional Networks](https://arxiv.org/abs/1905.09646) (Li, Hu and
  Yang, 2019); official code: implus/PytorchInsight.

The network is the torchvision-style ResNet ("v1.5": stride on the 3x3
convolution, no conv bias, BN epsilon 1e-5 / momentum 0.9) with an `SGE`
layer after the last BatchNormalization of every residual block. Trainable
parameters at 1000 classes: {params:,} ({plain_params:,} with `groups=None`,
{se_params:,} with `attention="se"`).

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
        `"resnet{{depth}}"` without attention and `"se_resnet{{depth}}"` with SE.
    groups: number of SGE groups (64 in the paper), or `None` for the plain
        ResNet without SGE, the ablation and benchmark baseline.
    attention: the attention of every residual block, applied to the
        branch before the residual add: `"sge"` (the paper's, default),
        `"se"` (Squeeze-and-Excitation with reduction 16, the paper's main
        comparison), `None` (a plain ResNet, like `groups=None`), or a
        callable `(channels, name) -> keras layer`, e.g.
        `lambda channels, name: keras_sge.SGE(32, name=name)`.
    kernel_regularizer: optional regularizer for every convolution and the
        classifier kernel. Keras 3 only applies regularizers set before the
        layers are built, so it has to be given here. (The reference decays
        all parameters by 1e-4; an optimizer's `weight_decay` does that.)
    synchronized_bn: if `True`, BatchNormalization synchronizes its batch
        statistics across replicas in a distributed strategy.
    zero_init_residual: if `True`, the last BN of each residual branch
        starts with gamma 0, as the reference's `zero_init_residual` option.
    data_format: `"channels_last"` (NHWC) or `"channels_first"` (NCHW);
        `None` uses `keras.config.image_data_format()`. Passed to every
        layer: building sets no Keras global.
    dtype: the dtype policy of every layer (e.g. `"mixed_bfloat16"`);
        `None` uses Keras's global policy. The classifier computes in
        float32 whatever the policy.
    stem: `"imagenet"` (the reference's 7x7 stride-2 convolution and 3x3
        stride-2 max pooling) or `"small"` (one 3x3 stride-1 convolution,
        no pooling, as the CIFAR ResNets): for 32-64 px images, where the
        ImageNet stem leaves the last stages 1x1 or 2x2 maps. The official
        checkpoints have the ImageNet stem.

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


def _docstring(depth, title, reference):
    return _DOCSTRING.format(
        title=title,
        reference=reference,
        params=architectures.PARAMETER_COUNTS[(depth, 64)],
        plain_params=architectures.PARAMETER_COUNTS[(depth, None)],
        se_params=architectures.PARAMETER_COUNTS[(depth, "se")],
        builder=f"SGEResNet{depth}",
    )


def _public_builder(depth, title, reference):
    """`SGEResNet{depth}`: `SGEResNet` with the depth fixed."""

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
        attention="sge",
        kernel_regularizer=None,
        synchronized_bn=False,
        zero_init_residual=False,
        data_format=None,
        dtype=None,
        stem="imagenet",
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
            attention=attention,
            kernel_regularizer=kernel_regularizer,
            synchronized_bn=synchronized_bn,
            zero_init_residual=zero_init_residual,
            data_format=data_format,
            dtype=dtype,
            stem=stem,
        )

    builder.__name__ = builder.__qualname__ = f"SGEResNet{depth}"
    builder.__doc__ = _docstring(depth, title, reference)
    return builder


SGEResNet18 = _public_builder(18, "SGE-ResNet-18", "BasicBlock, [2, 2, 2, 2]")
SGEResNet34 = _public_builder(34, "SGE-ResNet-34", "BasicBlock, [3, 4, 6, 3]")
SGEResNet50 = _public_builder(50, "SGE-ResNet-50", "Bottleneck, [3, 4, 6, 3]")
SGEResNet101 = _public_builder(
    101, "SGE-ResNet-101", "Bottleneck, [3, 4, 23, 3]"
)
SGEResNet152 = _public_builder(
    152, "SGE-ResNet-152", "Bottleneck, [3, 8, 36, 3]"
)


# depth -> public builder.
BUILDERS = {
    18: SGEResNet18,
    34: SGEResNet34,
    50: SGEResNet50,
    101: SGEResNet101,
    152: SGEResNet152,
}
