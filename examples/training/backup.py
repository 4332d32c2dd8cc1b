"""Fault tolerance: step-level backups that survive a kill at any moment.

Keras's `BackupAndRestore` resumes at epoch granularity, overwrites one file
in place and has no per-worker handling. This module builds on TensorFlow's
own checkpointing instead:

- `tf.train.CheckpointManager` writes a numbered checkpoint (its data files
  are first written under a temporary name, then renamed) and only then
  records it in the directory's `checkpoint` state file, itself replaced
  atomically. A process killed while saving therefore leaves the previous
  checkpoint as the latest one; the two newest are kept.
- Each worker writes to its own directory (`<backup_dir>/worker-<i>`), so no
  two processes ever write the same file, and on restart the workers agree on
  the newest step that all of them have (`restore`).
- A backup holds the model's and optimizer's variables, the global step
  (which also fixes the input pipeline's position, see `data.py`) and the
  best validation accuracy so far. BatchNormalization's moving statistics
  are averaged over the replicas first, so every worker saves the same
  model.
"""

import glob
import math
import os
import re
import shutil

import keras
import tensorflow as tf

from examples.training import distribute


class Backup:
    """The backups of one worker.

    Args:
        directory: the run's backup directory; this worker uses a
            subdirectory of its own.
        model: a compiled model whose optimizer is built.
        strategy: the run's strategy (names this worker's subdirectory).
        statistics: the run's `distribute.ReplicaStatistics`, averaged
            before each save.
        max_to_keep: how many checkpoints to keep (at least 2, so that a
            checkpoint all workers have survives one worker's failed save).
        discard_existing: delete this worker's earlier backups first (a
            run started over: left in place, they would be resumed from
            by the next rerun).
    """

    def __init__(
        self,
        directory,
        model,
        strategy,
        statistics,
        max_to_keep=2,
        discard_existing=False,
    ):
        self.strategy = strategy
        self.statistics = statistics
        self.directory = os.path.join(directory, _worker_name(strategy))
        if discard_existing:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.best = tf.Variable(
            -math.inf, dtype=tf.float64, trainable=False, name="best"
        )
        # Variables listed in a fixed order rather than the model object:
        # tracking the model would also save its metrics' state.
        self._checkpoint = tf.train.Checkpoint(
            model=list(model.variables),
            optimizer=list(model.optimizer.variables),
            step=self.step,
            best=self.best,
        )
        self._groups = {
            "model": list(model.variables),
            "optimizer": list(model.optimizer.variables),
        }
        self._variables = [
            *self._groups["model"],
            *self._groups["optimizer"],
            self.step,
            self.best,
        ]
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, self.directory, max_to_keep=max(2, max_to_keep)
        )

    def save(self, step):
        self.statistics.average()
        self.step.assign(step)
        return self._manager.save(checkpoint_number=step)

    def restore(self):
        """Restores the newest usable backup; returns its step (0 if none).

        With several workers, all restore the same step: the newest that
        every worker has (one may have been killed while saving). A backup
        that fails to restore leaves every variable as it was.

        Raises:
            BackupError: there are backups and none restores (another
                model's, or all damaged), or, under several workers, the
                agreed one does not: starting from step 0 would then
                rotate them away unasked.
        """
        available = {_step_of(path): path for path in self._manager.checkpoints}
        step = max(available, default=0)
        if distribute.is_multi_worker(self.strategy):
            step = _min_across_workers(self.strategy, step)
        candidates = sorted((s for s in available if s <= step), reverse=True)
        failures = []
        for candidate in candidates:
            try:
                self._restore_all_or_nothing(available[candidate])
                return candidate
            except Exception as error:  # A damaged file fails in many ways.
                failures.append((candidate, _first_line(error)))
                # Falling back alone would desynchronise the workers.
                if distribute.is_multi_worker(self.strategy):
                    break
                if candidate != candidates[-1]:
                    print(
                        f"Skipping unreadable backup {available[candidate]}: "
                        f"{failures[-1][1]}"
                    )
        if failures:
            step, reason = failures[0]
            raise BackupError(
                f"the backups in {self.directory} do not restore into this "
                f"model (step {step}: {reason}): rerun with the settings "
                "that wrote them, or pass --fresh to start over (deletes "
                "them), or use another --output-dir"
            )
        return 0

    def _restore_all_or_nothing(self, path):
        """Restores `path`, or raises with every variable as it was.

        TensorFlow assigns each variable as it is matched, so a checkpoint
        of another model would otherwise leave some variables (and the
        best accuracy) restored in this one.
        """
        self._check_fits(path)
        before = [variable.numpy() for variable in self._variables]
        try:
            self._checkpoint.restore(path).assert_consumed()
        except BaseException:
            for variable, value in zip(self._variables, before):
                variable.assign(value)
            raise

    def _check_fits(self, path):
        """Raises ValueError, touching nothing, if `path` holds other variables.

        Another architecture's backup is told by its variables' count and
        shapes, before TensorFlow starts assigning them.
        """
        saved = dict(tf.train.list_variables(path))
        for group, variables in self._groups.items():
            pattern = re.compile(rf"{group}/\d+/\.ATTRIBUTES/VARIABLE_VALUE")
            count = sum(1 for key in saved if pattern.fullmatch(key))
            if count != len(variables):
                raise ValueError(
                    f"it holds {count} {group} variables, this model has "
                    f"{len(variables)}"
                )
            for index, variable in enumerate(variables):
                shape = saved[f"{group}/{index}/.ATTRIBUTES/VARIABLE_VALUE"]
                if tuple(shape) != tuple(variable.shape):
                    raise ValueError(
                        f"its {group} variable {index} has shape "
                        f"{tuple(shape)}, this model's ({variable.path}) "
                        f"{tuple(variable.shape)}"
                    )


class BackupError(ValueError):
    """Backups that cannot be resumed from, reported as one line."""


def has_backups(directory):
    """Whether any worker has a backup under the run's backup `directory`."""
    return bool(glob.glob(os.path.join(directory, "*", "checkpoint")))


class BackupCallback(keras.callbacks.Callback):
    """Saves a backup every `save_steps` steps and at the end of every epoch.

    The epoch-end backup is written after validation, so it carries the
    updated best accuracy; a backup due on an epoch's last step waits for
    it.

    Args:
        backup: a `Backup`.
        start_step: the global step training starts (or resumes) at.
        save_steps: the interval between backups, in steps.
        steps_per_epoch: steps per epoch.
        monitor: the logged metric whose best value is kept.

    Attributes:
        step: the global step, counting the steps completed.
        common_step: the step of the newest backup that every worker is
            known to have (0: none). A worker knows that its peers have
            finished saving once a collective step after the save has
            completed, since each saves before its next step.
        unconfirmed_step: the step of a backup this worker has written but
            does not know its peers have (None if none).
    """

    def __init__(
        self,
        backup,
        start_step,
        save_steps,
        steps_per_epoch,
        monitor="val_accuracy",
    ):
        super().__init__()
        self.backup = backup
        self.step = start_step
        self.common_step = start_step
        self.save_steps = save_steps
        self.steps_per_epoch = steps_per_epoch
        self.monitor = monitor
        self.unconfirmed_step = None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self._confirm()
        if (
            self.step % self.save_steps == 0
            and self.step % self.steps_per_epoch
        ):
            self._save()

    def on_test_end(self, logs=None):
        self._confirm()

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.backup.best.numpy():
            self.backup.best.assign(value)
        self._save()

    def _save(self):
        path = self.backup.save(self.step)
        self.unconfirmed_step = self.step
        print(f"\nBackup saved at step {self.step}: {path}", flush=True)

    def _confirm(self):
        if self.unconfirmed_step is not None:
            self.common_step, self.unconfirmed_step = (
                self.unconfirmed_step,
                None,
            )


def _worker_name(strategy):
    if distribute.is_multi_worker(strategy):
        resolver = strategy.cluster_resolver
        return f"{resolver.task_type}-{resolver.task_id}"
    return "worker-0"


def _first_line(error):
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:300]


def _step_of(path):
    return int(re.search(r"-(\d+)$", path).group(1))


def _min_across_workers(strategy, value):
    """The smallest of every worker's `value` (a collective: all must call)."""

    @tf.function
    def gather():
        def replica_fn():
            local = tf.constant([value], tf.int64)
            return tf.distribute.get_replica_context().all_gather(local, axis=0)

        return strategy.run(replica_fn)

    gathered = strategy.experimental_local_results(gather())[0]
    return int(tf.reduce_min(gathered))
