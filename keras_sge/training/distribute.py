"""Choosing the `tf.distribute` strategy of a run, and what follows from it.

- `TF_CONFIG` naming a cluster of several tasks: `MultiWorkerMirroredStrategy`
  (one replica per local GPU, or the CPU), synchronous all-reduce across
  machines.
- Otherwise `MirroredStrategy` over every visible GPU, or over `cpu_devices`
  logical CPU devices when asked (the mirrored path without GPUs: how the
  tests exercise it).
- Otherwise TensorFlow's default strategy: plain CPU.
"""

import json
import os

import tensorflow as tf


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
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
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
    line = f"Strategy: {name}, {strategy.num_replicas_in_sync} replica(s) in sync"
    if is_multi_worker(strategy):
        resolver = strategy.cluster_resolver
        line += f"; this is {resolver.task_type} {resolver.task_id} of {cluster_size()} tasks"
        line += " (chief)" if is_chief(strategy) else ""
    return line


def check_global_batch(global_batch, replicas):
    """Raises a one-line ValueError unless the batch splits evenly."""
    if global_batch % replicas:
        raise ValueError(
            f"--batch-size {global_batch} (the global batch) must be divisible by the "
            f"number of replicas ({replicas}); try {max(1, global_batch // replicas) * replicas}"
        )
