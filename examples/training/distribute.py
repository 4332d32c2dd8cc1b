"""Choosing the `tf.distribute` strategy of a run, and what follows from it.

- `TF_CONFIG` naming a cluster of several tasks: `MultiWorkerMirroredStrategy`
  (one replica per local GPU, or the CPU), synchronous all-reduce across
  machines.
- Otherwise `MirroredStrategy` over every visible GPU, or over `cpu_devices`
  logical CPU devices when asked (the mirrored path without GPUs: how the
  tests exercise it).
- Otherwise TensorFlow's default strategy: plain CPU.

It also holds what a run under several replicas must do beyond the
strategy itself: average BatchNormalization's moving statistics over the
replicas (`ReplicaStatistics`), name the peer a worker lost
(`describe_lost_peer`) and let every worker end together (`end_run`).
"""

import json
import os
import re
import sys

import keras
import tensorflow as tf
from tensorflow.python.eager import context as tf_context

# tf.errors raised on a worker when a peer stops taking part in the
# collectives: its sockets close, its heartbeats stop, or the collective
# executor is aborted because of either.
PEER_FAILURES = (
    tf.errors.UnavailableError,
    tf.errors.AbortedError,
    tf.errors.CancelledError,
    tf.errors.DeadlineExceededError,
)
# How long the workers wait for each other at the end of a run (the chief
# may still be exporting the model), in seconds.
FINISH_TIMEOUT = 3600


def configure_runtime(cpu_devices=0, threads=0):
    """Sets device and thread options; must run before TensorFlow starts.

    Args:
        cpu_devices: if > 1, split the CPU into that many logical devices.
        threads: if > 0, the size of TensorFlow's intra-op and inter-op
            thread pools (per process).
    """
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices
        )


def cluster_size():
    """Number of chief and worker tasks that `TF_CONFIG` names (0 if unset)."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def make_strategy(cpu_devices=0):
    """Returns the strategy for this process; see the module docstring."""
    if cluster_size() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if cpu_devices > 1:
        return tf.distribute.MirroredStrategy(
            [d.name for d in tf.config.list_logical_devices("CPU")]
        )
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    return tf.distribute.get_strategy()


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy):
    """Whether this process writes the run's shared outputs."""
    return strategy.extended.should_checkpoint


def describe(strategy):
    """A one-line summary: strategy, replicas, and this worker's role."""
    if is_multi_worker(strategy):
        name = "MultiWorkerMirroredStrategy"  # The class is CollectiveAllReduceStrategy.
    elif strategy is tf.distribute.get_strategy():
        name = "default (no distribution)"
    else:
        name = type(strategy).__name__
    line = (
        f"Strategy: {name}, {strategy.num_replicas_in_sync} replica(s) in sync"
    )
    if is_multi_worker(strategy):
        line += f"; this is {task_name(strategy)} of {cluster_size()} tasks"
        line += " (chief)" if is_chief(strategy) else ""
    return line


def no_gpu_note():
    """One line explaining a CPU-only start of a CUDA build of TensorFlow, or None.

    Such a build looks for a GPU when it starts and, on a machine without an
    NVIDIA driver, logs "failed call to cuInit" as an error, although
    nothing is wrong. Call it once the strategy exists (TensorFlow has then
    looked).
    """
    if not tf.test.is_built_with_cuda() or tf.config.list_physical_devices(
        "GPU"
    ):
        return None
    return (
        "No GPU: running on the CPU (TensorFlow's CUDA/cuInit messages above "
        "are its GPU probe finding no driver: harmless on a machine without "
        "a GPU)"
    )


def check_global_batch(global_batch, replicas):
    """Raises a one-line ValueError unless the batch splits evenly."""
    if global_batch % replicas:
        raise ValueError(
            f"--batch-size {global_batch} (the global batch) must be divisible by the "
            f"number of replicas ({replicas}); try {max(1, global_batch // replicas) * replicas}"
        )


class ReplicaStatistics:
    """BatchNormalization's moving statistics, averaged over every replica.

    Keras updates each replica's copy of a BatchNormalization layer's moving
    mean and variance from that replica's batch alone (the variables have
    no cross-replica aggregation): after a step the copies differ, between
    the devices of one machine and between workers. What is evaluated or
    saved would then depend on which device or worker did it.

    `average()` sets every copy to the mean over all replicas of all
    workers. The moving statistics are linear in the batch statistics, so
    averaging now and then gives exactly what averaging after every step
    would, and it does not change training, which normalises with the
    batch's own statistics. Call it before every evaluation, backup and
    export; with `synchronized_bn` the copies are equal already and it
    changes nothing. Under several workers it is a collective: every worker
    must call it at the same point of the run.

    Args:
        model: the model, built under `strategy.scope()`.
        strategy: the run's `tf.distribute.Strategy`.
    """

    def __init__(self, model, strategy):
        self.strategy = strategy
        self.variables = [
            variable
            for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)
            for variable in (layer.moving_mean, layer.moving_variance)
        ]
        self._average = tf.function(self._average_in_replicas)

    def average(self):
        if self.variables and self.strategy.num_replicas_in_sync > 1:
            self._average()

    def _average_in_replicas(self):
        def replica_fn():
            # In a replica, reading or assigning a variable without
            # aggregation touches that replica's own copy.
            local = [tf.identity(variable.value) for variable in self.variables]
            means = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.MEAN, local
            )
            for variable, mean in zip(self.variables, means):
                variable.value.assign(mean)

        self.strategy.run(replica_fn)


class AverageReplicaStatistics(keras.callbacks.Callback):
    """Averages the replicas' BatchNormalization statistics before evaluation.

    Args:
        statistics: the run's `ReplicaStatistics`.
    """

    def __init__(self, statistics):
        super().__init__()
        self.statistics = statistics

    def on_test_begin(self, logs=None):
        self.statistics.average()


def task_name(strategy):
    """This worker as TensorFlow names it, e.g. "worker 1"."""
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type} {resolver.task_id}"


def describe_lost_peer(error, strategy):
    """The peers, other than this worker, that a collective's error names."""
    resolver = strategy.cluster_resolver
    here = f"/job:{resolver.task_type}/replica:0/task:{resolver.task_id}"
    tasks = set(re.findall(r"/job:\w+/replica:\d+/task:\d+", str(error))) - {
        here
    }
    names = sorted(
        re.sub(r"/job:(\w+)/replica:\d+/task:(\d+)", r"\1 \2", task)
        for task in tasks
    )
    return " and ".join(names) if names else "a peer worker"


def end_run(strategy, status):
    """Returns `status`; under several workers, exits with it once all are done.

    Each worker waits for the others at a barrier (the chief may still be
    exporting), then exits at once: a worker that lingered after a peer had
    gone would have TensorFlow's coordination service report that peer as
    crashed.
    """
    if not is_multi_worker(strategy):
        return status
    tf_context.context().wait_at_barrier(
        "keras_sge/end_run", FINISH_TIMEOUT * 1000
    )
    exit_now(status)


def exit_now(status):
    """Exits without tearing TensorFlow's runtime down (its collectives may
    be waiting on a peer that is gone)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def send_runtime_log_to(path):
    """Sends TensorFlow's C++ log to `path`; Python's stderr stays on the console.

    TensorFlow's runtime writes to file descriptor 2 directly. Under several
    workers it reports every lost connection at length there; the training
    script says what happened in one line and points here.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sys.stderr.flush()
    console = os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 2)
    os.close(log)
    sys.stderr = os.fdopen(console, "w", buffering=1)
