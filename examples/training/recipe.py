"""The paper's training recipe: SGD, L2 weight decay, learning-rate schedules.

The reference trains with torch's `SGD(lr=0.1, momentum=0.9,
weight_decay=1e-4)` for batch 256, 100 epochs, lr x0.1 at epochs 30, 60
and 90. Two details matter when porting it to Keras:

- torch's `weight_decay` is an L2 penalty *coupled* to the gradient (it adds
  `wd * w` to every gradient, so momentum and the learning rate act on it)
  on *every* parameter: convolution kernels, BatchNorm and SGE scales and
  shifts, the classifier's bias. `add_l2_penalty` reproduces it exactly by
  giving every trainable variable a `keras.regularizers.L2(wd / 2)` (the
  gradient of `wd / 2 * w**2` is `wd * w`).
- Keras optimizers' `weight_decay` argument is *decoupled* (AdamW / SGDW
  style: `w -= lr * wd * w` after the update, not through momentum). It is
  offered separately and is off by default.
"""

import keras

PAPER_BATCH = 256
PAPER_LR = 0.1


def scaled_learning_rate(global_batch, base_lr=PAPER_LR):
    """The linear scaling rule: `base_lr` per 256 images."""
    return base_lr * global_batch / PAPER_BATCH


def learning_rate_schedule(
    peak_lr,
    steps_per_epoch,
    epochs,
    schedule="step",
    decay_epochs=(30, 60, 90),
    warmup_epochs=0.0,
):
    """The learning rate as a function of the optimizer step.

    Args:
        peak_lr: the learning rate after warmup.
        steps_per_epoch: optimizer steps per epoch.
        epochs: length of the run (for the cosine decay).
        schedule: `"step"` (x0.1 at each of `decay_epochs`), `"cosine"`
            (to 0 at the end of the run) or `"constant"`.
        decay_epochs: epochs of the step schedule's decays.
        warmup_epochs: linear warmup from 0, in epochs (may be fractional).
    """
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else peak_lr,
            decay_steps=max(1, epochs * steps_per_epoch - warmup),
            warmup_target=peak_lr if warmup else None,
            warmup_steps=warmup,
        )
    if schedule == "step":
        boundaries = [int(e * steps_per_epoch) for e in decay_epochs]
        after = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [peak_lr * 0.1**i for i in range(len(boundaries) + 1)]
        )
    elif schedule == "constant":
        after = peak_lr
    else:
        raise ValueError(f"unknown learning-rate schedule: {schedule!r}")
    return LinearWarmup(after, warmup) if warmup else after


@keras.saving.register_keras_serializable(package="keras_sge")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Ramps linearly from 0 to `schedule(warmup_steps)`, then follows `schedule`.

    Args:
        schedule: a `LearningRateSchedule` or a constant learning rate.
        warmup_steps: length of the ramp, in optimizer steps.
    """

    def __init__(self, schedule, warmup_steps):
        self.schedule = schedule
        self.warmup_steps = warmup_steps

    def _after(self, step):
        if callable(self.schedule):
            return self.schedule(step)
        return keras.ops.convert_to_tensor(self.schedule, "float32")

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        ramp = self._after(float(self.warmup_steps)) * step / self.warmup_steps
        return keras.ops.where(
            step < self.warmup_steps, ramp, self._after(step)
        )

    def get_config(self):
        schedule = self.schedule
        if isinstance(
            schedule, keras.optimizers.schedules.LearningRateSchedule
        ):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps}

    @classmethod
    def from_config(cls, config):
        schedule = config["schedule"]
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        return cls(schedule, config["warmup_steps"])


@keras.saving.register_keras_serializable(package="keras_sge")
class HeadFirst(keras.optimizers.schedules.LearningRateSchedule):
    """`head_learning_rate` for the first `head_steps`, then `schedule`.

    The schedule of a fine-tuning run: the new classifier trains alone at
    its own rate, then the whole network follows `schedule`, counted from
    the end of the head phase.

    Args:
        head_learning_rate: the learning rate of the head phase.
        head_steps: length of the head phase, in optimizer steps.
        schedule: a `LearningRateSchedule` or a constant learning rate.
    """

    def __init__(self, head_learning_rate, head_steps, schedule):
        self.head_learning_rate = head_learning_rate
        self.head_steps = head_steps
        self.schedule = schedule

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        after = step - self.head_steps
        if callable(self.schedule):
            after = self.schedule(keras.ops.maximum(after, 0.0))
        else:
            after = keras.ops.convert_to_tensor(self.schedule, "float32")
        return keras.ops.where(
            step < self.head_steps, self.head_learning_rate, after
        )

    def get_config(self):
        schedule = self.schedule
        if isinstance(
            schedule, keras.optimizers.schedules.LearningRateSchedule
        ):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {
            "head_learning_rate": self.head_learning_rate,
            "head_steps": self.head_steps,
            "schedule": schedule,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.optimizers.schedules.deserialize(
                config["schedule"]
            )
        return cls(**config)


def add_l2_penalty(model, weight_decay):
    """torch-style (coupled) weight decay on every trainable variable.

    Sets each trainable variable's regularizer to `L2(weight_decay / 2)`,
    so the loss gains `weight_decay / 2 * sum(w**2)` and every gradient
    `weight_decay * w`, as torch's `SGD(weight_decay=...)` does. Keras adds
    these penalties to the loss in `fit` and in `train_step`.
    """
    if weight_decay:
        for variable in model.trainable_variables:
            variable.regularizer = keras.regularizers.L2(weight_decay / 2)


def sgd(learning_rate, momentum=0.9, decoupled_weight_decay=0.0):
    """The paper's SGD with momentum (optionally with decoupled decay)."""
    return keras.optimizers.SGD(
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=decoupled_weight_decay or None,
    )


def compile_model(model, optimizer, label_smoothing=0.0):
    """Compiles for one-hot labels: cross-entropy, top-1 and top-5 accuracy.

    The metrics and the loss honour sample weights, which the evaluation
    pipeline uses to mask the padding of its last batch.
    """
    top_k = min(5, model.output_shape[-1])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            label_smoothing=label_smoothing, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(
                k=top_k, name=f"top{top_k}_accuracy"
            ),
        ],
    )
