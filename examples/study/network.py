"""The study's small ResNet, its four arms, the recipe and the knock-outs.

The network (docs/study/DESIGN.md): a 3x3 stride-1 stem (16 channels, no
max-pool), three stages of two BasicBlocks at widths 16/32/64 (maps 32, 16
and 8 on a 32x32 canvas), global average pooling and a 10-way classifier.
A block is conv3x3 -> BN -> ReLU -> conv3x3 -> BN [-> SGE] -> + shortcut ->
ReLU, as in SGE-ResNet; the first block of stages 2 and 3 has stride 2 and a
1x1 conv + BN shortcut. SGE has 4 channels per group (4, 8 and 16 groups).

Strided 3x3 convolutions pad one pixel on each side explicitly (torch
style), so cell `i` of a map with stride `s` is centred on input pixel
`s * i` in every layer, the geometry `examples.study.localisation` assumes
(`first_centre = 0`).

Arms:

- `A`: SGE, coupled L2 weight decay on every weight (the official code);
- `B`: SGE, no weight decay on SGE's gamma and beta;
- `C`: the same network without SGE;
- `D`: C with each residual branch's last BN scale initialised to
  sigmoid(1) = 0.7311, so that at initialisation every branch is scaled
  exactly as SGE's initial gate scales it in A and B.

With the same seed every arm gets the same convolution and classifier
weights (SGE's and BN's initialisers are constants and draw nothing).
"""

import math

import keras
from keras import ops

from keras_sge import SGE

ARMS = ("A", "B", "C", "D")
ARM_NAMES = {
    "A": "SGE, weight decay on everything",
    "B": "SGE, no weight decay on gamma and beta",
    "C": "plain (no SGE)",
    "D": "plain, branches x 0.731 at init",
}
SGE_ARMS = ("A", "B")
CHANNELS_PER_GROUP = 4
WIDTHS = (16, 32, 64)
BLOCKS_PER_STAGE = 2
# sigmoid(1): SGE's gate at initialisation (gamma = 0, beta = 1).
INITIAL_GATE = 1.0 / (1.0 + math.exp(-1.0))
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # torch's 0.1


def check_arm(arm):
    if arm not in ARMS:
        raise ValueError(f"Unknown arm {arm!r}: one of {', '.join(ARMS)}")
    return arm


def _conv_initializer():
    # torch's kaiming_normal_(mode="fan_out", nonlinearity="relu"), as in
    # the official ResNet code.
    return keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal"
    )


class MeanGateSGE(SGE):
    """Knock-out: SGE whose gate is replaced by its spatial mean.

    Per image and group the gate `sigmoid(gamma * c_hat + beta)` is
    computed as in SGE and then averaged over the positions: the layer
    keeps SGE's per-image, per-group scale and loses only where on the map
    it gates. Same weights as `SGE` (load them with `set_weights`).
    Channels-last only.
    """

    def call(self, inputs):
        inputs = self._to_compute_dtype(inputs)
        gate = self.gate(inputs)  # (N, H, W, G), float32
        mean = ops.mean(gate, axis=(1, 2), keepdims=True)  # (N, 1, 1, G)
        per_channel = ops.repeat(
            mean, inputs.shape[-1] // self.groups, axis=-1
        )  # channel c -> group c // (C / G): contiguous groups
        return inputs * ops.cast(per_channel, inputs.dtype)


def _bn(name, gamma_initializer="ones"):
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        gamma_initializer=gamma_initializer,
        name=name,
    )


def _conv(filters, kernel, stride, name):
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same" if stride == 1 else "valid",
        use_bias=False,
        kernel_initializer=_conv_initializer(),
        name=name,
    )


def _block(x, filters, stride, name, arm, gate):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, stride, f"{name}_0_conv")(x)
        shortcut = _bn(f"{name}_0_bn")(shortcut)
    if stride != 1:
        # Explicit padding: cell i centred on input cell stride * i.
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_1_pad")(x)
    x = _conv(filters, 3, stride, f"{name}_1_conv")(x)
    x = _bn(f"{name}_1_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_1_relu")(x)
    x = _conv(filters, 3, 1, f"{name}_2_conv")(x)
    x = _bn(
        f"{name}_2_bn",
        gamma_initializer=keras.initializers.Constant(INITIAL_GATE)
        if arm == "D"
        else "ones",
    )(x)
    if arm in SGE_ARMS:
        layer = MeanGateSGE if gate == "mean" else SGE
        x = layer(groups=filters // CHANNELS_PER_GROUP, name=f"{name}_sge")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def build_network(arm, image_size=32, classes=10, gate="sge"):
    """The study's network for `arm` (uncompiled, no regularizers).

    Args:
        arm: "A", "B", "C" or "D" (A and B are the same network).
        image_size: side of the square RGB input.
        classes: outputs of the softmax classifier.
        gate: "sge" (the layer itself) or "mean" (the knock-out
            `MeanGateSGE`); only for the SGE arms.
    """
    check_arm(arm)
    if gate not in ("sge", "mean"):
        raise ValueError(f"gate must be 'sge' or 'mean'. Received: {gate!r}")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = _conv(WIDTHS[0], 3, 1, "conv1_conv")(inputs)
    x = _bn("conv1_bn")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    for stage, filters in enumerate(WIDTHS):
        for block in range(BLOCKS_PER_STAGE):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _block(
                x,
                filters,
                stride,
                f"conv{stage + 2}_block{block + 1}",
                arm,
                gate,
            )
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="logits")(
        x
    )
    return keras.Model(inputs, outputs, name=f"study_resnet_{arm}")


def sge_layers(model):
    """The model's SGE layers in order (none for arms C and D)."""
    return [layer for layer in model.layers if isinstance(layer, SGE)]


def layer_stride(name):
    """Input pixels per cell of a layer `conv{2,3,4}_...`: 1, 2 or 4."""
    return 2 ** (int(name[4]) - 2)


def branch_end_bns(model):
    """The last BN of every residual branch (`*_2_bn`)."""
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        and layer.name.endswith("_2_bn")
    ]


def add_weight_decay(model, arm, weight_decay):
    """torch-style coupled weight decay: gradient + `weight_decay * w`.

    `L2(weight_decay / 2)` on every trainable variable, except SGE's gamma
    and beta in arm B.
    """
    if not weight_decay:
        return
    exempt = set()
    if arm == "B":
        exempt = {
            id(v)
            for layer in sge_layers(model)
            for v in (layer.gamma, layer.beta)
        }
    for variable in model.trainable_variables:
        if id(variable) not in exempt:
            variable.regularizer = keras.regularizers.L2(weight_decay / 2)


@keras.saving.register_keras_serializable(package="keras_sge_study")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup_steps`, then cosine to 0.

    Step `t` (0-based) of the warm-up gets `peak * (t + 1) / warmup_steps`;
    after it, `peak * (1 + cos(pi * u)) / 2` with `u` the fraction of the
    remaining steps done.
    """

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * (step + 1.0) / max(self.warmup_steps, 1)
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        done = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = self.peak * 0.5 * (1.0 + ops.cos(math.pi * done))
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }


def schedule_values(schedule, steps):
    """The schedule's learning rate at steps 0..steps-1, as floats."""
    return [
        float(v)
        for v in ops.convert_to_numpy(
            schedule(ops.arange(steps, dtype="int32"))
        )
    ]


def compiled_network(arm, seed, config):
    """The arm's network, seeded, with weight decay, compiled with SGD.

    `config` holds image_size, weight_decay, peak_lr, warmup_epochs,
    epochs, steps_per_epoch and momentum.
    """
    keras.utils.set_random_seed(seed)
    model = build_network(arm, config["image_size"])
    add_weight_decay(model, arm, config["weight_decay"])
    schedule = WarmupCosine(
        config["peak_lr"],
        config["warmup_epochs"] * config["steps_per_epoch"],
        config["epochs"] * config["steps_per_epoch"],
    )
    model.compile(
        optimizer=keras.optimizers.SGD(
            learning_rate=schedule, momentum=config["momentum"]
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=config.get("jit_compile", "auto"),
    )
    return model


def knockout(model, arm, kind, image_size=32):
    """A copy of a trained SGE-arm model with its SGE knocked out.

    kind: "gate_mean" (every gate replaced by its spatial mean, per image
    and group) or "gamma_zero" (every gamma set to 0: the gate is
    sigmoid(beta), one constant per group).
    """
    if arm not in SGE_ARMS:
        raise ValueError(f"Arm {arm!r} has no SGE to knock out")
    if kind not in ("gate_mean", "gamma_zero"):
        raise ValueError(f"Unknown knock-out {kind!r}")
    copy = build_network(
        arm, image_size, gate="mean" if kind == "gate_mean" else "sge"
    )
    copy.set_weights(model.get_weights())
    if kind == "gamma_zero":
        for layer in sge_layers(copy):
            layer.gamma.assign(ops.zeros_like(layer.gamma))
    return copy
