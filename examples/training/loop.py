"""Training and evaluation drivers: `model.fit`, or a loop over `strategy.run`.

On one machine (default strategy or `MirroredStrategy`) training is plain
`model.fit`. Under `MultiWorkerMirroredStrategy`, Keras 3's `fit` and
`evaluate` fail (keras-team/keras#20585, tensorflow/tensorflow#72388:
Keras reduces a distributed batch eagerly to build the model, then reduces
scalar metrics along axis 0). This module then runs TensorFlow's documented
custom training loop instead, and keeps it as close to `fit` as possible:

- the step is Keras's own `model.train_step` / `model.test_step` under
  `strategy.run`: the same forward pass, loss (with the L2 penalties),
  loss scaling, optimizer update and metrics as `fit`;
- the data is the same distributed dataset;
- the same Keras callbacks receive the same calls (progress bar, CSV,
  TensorBoard, best-model checkpoint, backups).

Metrics are read in cross-replica context, where Keras's metric variables
(`synchronization="on_read"`, `aggregation="sum"`) sum over every replica of
every worker, so the logged values are global and exact (the padding of
the last validation batch has weight 0).

`tests/examples/test_train_distributed.py` checks that `fit` still fails
under `MultiWorkerMirroredStrategy`; when it starts passing, this module's
custom loop can go.
"""

import dataclasses
import math

import keras
import tensorflow as tf

from examples.training import distribute


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The distributed data of a run.

    Attributes:
        train: `start_step -> distributed dataset`: the endless training
            stream from that global step on.
        val: the distributed validation dataset, repeated.
        steps_per_epoch: training steps per epoch.
        val_steps: batches in one pass over `val`.
        per_replica_batch: the batch size of every replica's batches.
    """

    train: callable
    val: object
    steps_per_epoch: int
    val_steps: int
    per_replica_batch: int


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite.

    Attributes:
        step: the global step whose loss it was (counting from 1).
        loss: the logged loss.
    """

    def __init__(self, step, loss):
        super().__init__(f"the loss became {loss} at step {step}")
        self.step = step
        self.loss = loss


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `NonFiniteLoss` at the end of the first step with a NaN loss.

    `keras.callbacks.TerminateOnNaN` only asks `fit` to stop, and `fit`
    still ends the epoch: its backup and `best.keras` would be written from
    the broken weights. Raising stops at once, so put this callback before
    any that saves.

    Args:
        steps_done: `() -> int`, the global steps completed before this one.
    """

    def __init__(self, steps_done):
        super().__init__()
        self.steps_done = steps_done

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(self.steps_done() + 1, float(loss))


def train(
    model, strategy, inputs, epochs, start_step, callbacks, verbose="auto"
):
    """Trains from global step `start_step` to the end of epoch `epochs`.

    Args:
        model: a compiled model, created under `strategy.scope()`.
        strategy: the run's `tf.distribute.Strategy`.
        inputs: the run's `Inputs`.
        epochs: total epochs of the run.
        start_step: where to start; mid-epoch when resuming a backup.
        callbacks: Keras callbacks.
        verbose: Keras verbosity.
    """
    if distribute.is_multi_worker(strategy):
        return _loop_fit(
            model, strategy, inputs, epochs, start_step, callbacks, verbose
        )
    steps = inputs.steps_per_epoch
    epoch, done = divmod(start_step, steps)
    # shuffle=False: the stream is already shuffled, deterministically.
    fit = dict(
        validation_data=inputs.val,
        validation_steps=inputs.val_steps,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,
    )
    if done:
        # Finish the interrupted epoch first: `fit` has no partial epochs.
        model.fit(
            inputs.train(start_step),
            initial_epoch=epoch,
            epochs=epoch + 1,
            steps_per_epoch=steps - done,
            **fit,
        )
        epoch += 1
    if epoch < epochs:
        model.fit(
            inputs.train(epoch * steps),
            initial_epoch=epoch,
            epochs=epochs,
            steps_per_epoch=steps,
            **fit,
        )


def evaluate(model, strategy, inputs, verbose="auto"):
    """Evaluates on the validation data; returns the metrics as a dict."""
    if distribute.is_multi_worker(strategy):
        return {
            name: float(value)
            for name, value in _evaluator(model, strategy, inputs)().items()
        }
    return model.evaluate(
        inputs.val, steps=inputs.val_steps, verbose=verbose, return_dict=True
    )


def _loop_fit(model, strategy, inputs, epochs, start_step, callbacks, verbose):
    """`fit`'s protocol, driven by `strategy.run(model.train_step)`."""
    steps_per_epoch = inputs.steps_per_epoch
    callbacks = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=1 if verbose == "auto" else verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    train_step, evaluator = (
        _train_step(model, strategy, inputs.per_replica_batch),
        _evaluator(model, strategy, inputs),
    )
    iterator = iter(inputs.train(start_step))
    first_epoch, done = divmod(start_step, steps_per_epoch)
    model.stop_training = False
    logs = {}
    callbacks.on_train_begin()
    for epoch in range(first_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for step in range(done, steps_per_epoch):
            callbacks.on_train_batch_begin(step)
            logs = train_step(iterator)
            callbacks.on_train_batch_end(step, logs)
        done = 0
        logs = {name: float(value) for name, value in logs.items()}
        callbacks.on_test_begin()
        val_logs = {name: float(value) for name, value in evaluator().items()}
        callbacks.on_test_end(val_logs)
        logs.update({f"val_{name}": value for name, value in val_logs.items()})
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs)


def _train_step(model, strategy, batch_size):
    """One distributed `model.train_step` on the next batch; global metrics."""
    step = _with_static_batch(model.train_step, batch_size)

    @tf.function
    def run(iterator):
        strategy.run(step, args=(next(iterator),))
        return model.get_metrics_result()

    return run


def _evaluator(model, strategy, inputs):
    """A full pass of `model.test_step` over the validation data."""
    step = _with_static_batch(model.test_step, inputs.per_replica_batch)

    @tf.function
    def run(iterator):
        for _ in tf.range(inputs.val_steps):
            strategy.run(step, args=(next(iterator),))
        return model.get_metrics_result()

    def evaluate():
        model.reset_metrics()
        return run(iter(inputs.val))

    return evaluate


def _with_static_batch(step, batch_size):
    """`step` on batches whose batch size is static, as `fit` passes them.

    The pipelines batch with `drop_remainder=True`, but the multi-worker
    distributed iterator drops the static batch size. TensorFlow then
    compiles the step for an unknown batch, and SGE-ResNet's step (not the
    plain ResNet's) rounds differently from the static-shape step `fit`
    runs on one machine. The last bit is enough: with per-replica batches
    of 8, one step turned it into a 7e-4 difference in conv1's kernel.
    """

    def static_step(data):
        return step(
            tf.nest.map_structure(
                lambda t: tf.ensure_shape(t, [batch_size, *t.shape[1:]]), data
            )
        )

    return static_step
