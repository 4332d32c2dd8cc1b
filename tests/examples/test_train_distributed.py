"""examples/train.py under tf.distribute: mirrored CPUs and two workers.

Every run is SGE-ResNet-18 at 32x32 on the embedded digits, 2 epochs of 4
steps of global batch 16, one TensorFlow thread per process.

What "the same training" means here. Given the same per-replica batches,
the one-machine run (two logical CPU devices) and the two-worker run apply
the same all-reduced gradients, so their weights agree to rounding. Whether
rounding is all they differ by depends on the kernels: oneDNN splits a
convolution's reductions by thread count and instruction set, and this
training (per-replica batches of 8, BatchNormalization on 1x1 maps)
amplifies a last-bit difference to about 1e-2 within 4 steps. Measured
with oneDNN limited to AVX2: one machine with 1 vs 2 threads differs by
0.004 after 4 steps, while 1 thread there and 1 thread per worker agree
exactly. So the runs compared here use one thread per replica on both
sides, and the multi-worker loop gives each step the static batch shape
`fit` gives it (a step compiled for an unknown batch rounds differently):
then every replica computes the same arithmetic, and the runs must agree
on every weight, BatchNormalization statistics included.
"""

import concurrent.futures
import csv
import glob
import os
import re
import signal
import textwrap
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.examples import runner

pytestmark = [pytest.mark.tensorflow_only, pytest.mark.slow]

RUN = runner.QUICK + [
    "--epochs",
    "2",
    "--steps-per-epoch",
    "4",
    "--batch-size",
    "16",
    "--base-lr",
    "0.2",
    "--lr-schedule",
    "constant",
]
# The two workers' runs: a backup every 2 steps, at 2, 4, 6 and 8.
WORKER_RUN = RUN + ["--save-steps", "2"]


@pytest.fixture(scope="module")
def mirrored_process(tmp_path_factory):
    """One machine, two logical CPU devices: `model.fit` under MirroredStrategy.

    Started before the two-worker run and running beside it: the two
    workers spend much of their run waiting (for a lost peer to be noticed,
    for the chief's slowed export), and this run fills that time. Yields
    the output directory, the process and a future of its output.
    """
    output_dir = str(tmp_path_factory.mktemp("mirrored"))
    # One thread for both replicas: the same kernels as one worker's (see above).
    process = runner.start(
        RUN + ["--cpu-devices", "2", "--output-dir", output_dir]
    )
    # Its output is read as it comes: a full pipe would stall the run.
    with concurrent.futures.ThreadPoolExecutor(1) as reader:
        output = reader.submit(process.communicate, timeout=400)
        yield output_dir, process, output
        if process.poll() is None:  # the two-worker run failed first
            process.kill()


@pytest.fixture(scope="module")
def mirrored_run(mirrored_process, two_worker_run):
    """The one-machine run's output directory and output, once it has ended."""
    output_dir, process, output = mirrored_process
    output = output.result()[0]
    assert process.returncode == 0, f"mirrored run failed:\n{output[-4000:]}"
    return output_dir, output


@pytest.mark.timeout(600)
def test_fit_on_two_logical_cpu_devices_reduces_the_loss(mirrored_run):
    output_dir, output = mirrored_run
    assert "Strategy: MirroredStrategy, 2 replica(s) in sync" in output
    with open(os.path.join(output_dir, "log.csv")) as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 2 and losses[1] < losses[0], losses


@pytest.fixture(scope="module")
def two_worker_run(mirrored_process, tmp_path_factory):
    """Two workers on 127.0.0.1: one is lost mid-run, then both finish the run.

    1. Worker 1 is SIGKILLed after its backup of step 4; worker 0 must stop
       on its own, in one line.
    2. The same command on both workers resumes from a backup they both have
       and runs to the end, the chief's export slowed down. The slow export
       is what exposes an unclean end: a worker that exits while its peer
       still runs is reported by TensorFlow's coordination service as
       crashed once its heartbeats stop.

    Returns the output directory, what the lost run did (see
    `_lose_worker_1`), the finishing run's outputs, and how long each
    worker's runtime log was before the finishing run started. Takes
    `mirrored_process` to start the one-machine run first, beside this one.
    """
    output_dir = str(tmp_path_factory.mktemp("multi"))
    args = WORKER_RUN + ["--output-dir", output_dir]
    ports = runner.free_ports(2)
    env = [
        runner.environment(TF_CONFIG=runner.tf_config(ports, i))
        for i in range(2)
    ]
    lost = _lose_worker_1(args, env)
    logs = _runtime_logs(output_dir)
    logged_before = {path: os.path.getsize(path) for path in logs}
    workers = [runner.start(args, env[i], script=SLOW_EXPORT) for i in range(2)]
    outputs = [worker.communicate(timeout=500)[0] for worker in workers]
    for i, (worker, output) in enumerate(zip(workers, outputs)):
        assert worker.returncode == 0, f"worker {i} failed:\n{output[-4000:]}"
    return output_dir, lost, outputs, logged_before


def _lose_worker_1(args, env):
    """Starts both workers and SIGKILLs worker 1 after its backup of step 4.

    Returns worker 0's exit status, its output, and the seconds it ran on
    after the kill.
    """
    survivor, victim = [runner.start(args, env[i]) for i in range(2)]
    survivor_output = []
    reader = threading.Thread(
        target=lambda: survivor_output.extend(survivor.stdout)
    )
    reader.start()
    for line in victim.stdout:
        if "Backup saved at step 4" in line:
            victim.send_signal(signal.SIGKILL)
            break
    killed = time.time()
    victim.communicate(timeout=60)
    survivor.wait(timeout=LOST_PEER_BOUND + 30)
    stopped_after = time.time() - killed
    reader.join()
    return survivor.returncode, "".join(survivor_output), stopped_after


def _runtime_logs(output_dir):
    return sorted(glob.glob(os.path.join(output_dir, "logs", "*.log")))


# train.py, with the chief's SavedModel export taking 20 s longer.
SLOW_EXPORT = textwrap.dedent(
    f"""
    import runpy, sys, time
    from examples.training import export

    export_saved_model = export.export_saved_model

    def slow_export_saved_model(*args, **kwargs):
        time.sleep(20)
        return export_saved_model(*args, **kwargs)

    export.export_saved_model = slow_export_saved_model
    sys.argv = ["train.py"] + sys.argv[1:]
    runpy.run_path({runner.TRAIN_PY!r}, run_name="__main__")
    """
)


@pytest.mark.timeout(600)
def test_two_workers_match_one_machine_with_two_replicas(
    mirrored_run, two_worker_run
):
    """Same per-replica batches, same updates: the gradients were all-reduced.

    Without cross-worker aggregation each worker would apply its own
    shard's gradient, and the weights would differ from the one-machine run
    by about as much as they moved (checked: far more than the tolerance).
    The two-worker run lost a worker halfway and resumed from a backup, so
    this also holds resuming to its word: the same weights as a run that
    never stopped.
    """
    (reference_dir, _), (output_dir, _, outputs, _) = (
        mirrored_run,
        two_worker_run,
    )
    for i, output in enumerate(outputs):
        assert (
            "Strategy: MultiWorkerMirroredStrategy, 2 replica(s) in sync"
            in output
        )
        assert f"Input pipeline {i} of 2: per-replica batch 8" in output
    # Both workers computed the same global validation metrics.
    assert _last_line(outputs[0], "Validation:") == _last_line(
        outputs[1], "Validation:"
    )

    initial, expected, actual = (
        _initial_model(),
        runner.final_model(reference_dir),
        runner.final_model(output_dir),
    )
    travelled = _max_difference(
        expected.trainable_weights, initial.trainable_weights
    )
    difference = _max_difference(
        expected.trainable_weights, actual.trainable_weights
    )
    assert difference < 1e-5 and travelled > 0.05, (difference, travelled)
    # BatchNormalization statistics: averaged over the replicas on both sides.
    for e, a in zip(
        expected.non_trainable_weights, actual.non_trainable_weights
    ):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6, err_msg=e.path)


@pytest.mark.timeout(600)
def test_workers_hold_the_same_model_after_training_evaluation_and_backup(
    two_worker_run,
):
    """Every variable of the two workers' last backups is equal, BN statistics included.

    The last backup is written after the last evaluation; the export follows
    without further training, from the same variables.
    """
    output_dir = two_worker_run[0]
    readers = [
        tf.train.load_checkpoint(
            os.path.join(output_dir, "backup", f"worker-{i}")
        )
        for i in range(2)
    ]
    names = [
        name
        for name in readers[0].get_variable_to_shape_map()
        if name.endswith("VARIABLE_VALUE")
    ]
    assert sum(name.startswith("model/") for name in names) == len(
        _initial_model().weights
    )
    unequal = [
        name
        for name in names
        if np.any(readers[0].get_tensor(name) != readers[1].get_tensor(name))
    ]
    assert not unequal, f"the workers' backups differ in {unequal}"
    assert readers[0].get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 8


@pytest.mark.timeout(600)
def test_a_successful_multi_worker_run_ends_cleanly(two_worker_run):
    """No worker of the finishing run reports an error from TensorFlow's runtime.

    Neither on the console nor in its runtime log (from where the lost
    run's entries end).
    """
    output_dir, _, outputs, logged_before = two_worker_run
    logs = []
    for path in _runtime_logs(output_dir):
        with open(path) as f:
            f.seek(logged_before.get(path, 0))
            logs.append(f.read())
    assert len(logs) == 2
    for text in outputs + logs:
        errors = [
            line
            for line in text.splitlines()
            if COORDINATION_ERROR.search(line)
        ]
        assert not errors, errors


COORDINATION_ERROR = re.compile(
    r"unhealthy|heartbeat|StartAbort|UNAVAILABLE|Traceback"
)


@pytest.mark.timeout(600)
def test_a_lost_worker_stops_its_peer_in_one_line_and_the_rerun_resumes(
    two_worker_run,
):
    _, lost, outputs, _ = two_worker_run
    returncode, output, stopped_after = lost
    assert returncode == 3, output[-4000:]
    assert stopped_after < LOST_PEER_BOUND, stopped_after
    assert "Traceback" not in output, output[-4000:]
    message = output.strip().splitlines()[-1]
    match = LOST_PEER_LINE.fullmatch(message)
    assert match, message
    step, newer, older = (
        int(value) if value else None
        for value in match.group("step", "newer", "older")
    )
    assert step > 4 and older in (2, 4, 6) and newer in (None, older + 2), (
        message
    )

    # The same command on both workers resumed from a backup they both have.
    resumed = {
        int(re.search(r"Resumed from backup at step (\d+) ", output).group(1))
        for output in outputs
    }
    assert len(resumed) == 1 and resumed <= {older, newer}, (resumed, message)
    assert f"Trained steps {resumed.pop()}-8" in outputs[0]
    assert all("Validation: " in output for output in outputs)


# The survivor notices a lost peer when a collective fails: at once when
# the peer's sockets close, within TensorFlow's heartbeat timeout otherwise.
LOST_PEER_BOUND = 60
LOST_PEER_LINE = re.compile(
    r"train\.py: error: lost worker 1 at step (?P<step>\d+); "
    r"the last backup all workers have is step "
    r"(?:(?P<newer>\d+) if worker 1 finished saving it, else step )?(?P<older>\d+); "
    r"rerun the same command on every worker to resume from it \(details: .*worker-0\.log\)"
)


@pytest.mark.timeout(300)
def test_keras_fit_still_fails_under_multi_worker_mirrored_strategy():
    """Tells when keras-team/keras#20585 is fixed upstream.

    `examples.training.loop` runs a custom loop over `strategy.run` under
    MultiWorkerMirroredStrategy because `model.fit` fails there. If this
    test fails, `fit` works: `loop.train` can then call `fit` everywhere.
    """
    script = textwrap.dedent(
        """
        import tensorflow as tf, keras, numpy as np
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            model.compile(optimizer="sgd", loss="mse")
        data = tf.data.Dataset.from_tensor_slices(
            (np.ones((16, 4), "float32"), np.ones((16, 2), "float32"))
        )
        try:
            model.fit(data.batch(4), epochs=1, verbose=0)
            print("FIT_OK")
        except Exception as error:
            print("FIT_FAILED", type(error).__name__)
        """
    )
    ports = runner.free_ports(2)
    workers = [
        runner.start(
            [],
            runner.environment(TF_CONFIG=runner.tf_config(ports, i)),
            script=script,
        )
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    assert all("FIT_FAILED" in output for output in outputs), (
        "model.fit now works under MultiWorkerMirroredStrategy (keras-team/keras#20585 fixed?): "
        "examples/training/loop.py can drop its custom loop.\n"
        + outputs[0][-2000:]
    )


def _last_line(output, prefix):
    return [line for line in output.splitlines() if line.startswith(prefix)][-1]


def _max_difference(weights, others):
    return max(
        np.abs(np.asarray(w) - np.asarray(o)).max()
        for w, o in zip(weights, others)
    )


def _initial_model():
    """The runs' model, as seeded before training."""
    from keras_sge.applications import SGEResNet18

    keras.utils.set_random_seed(0)
    return SGEResNet18(input_shape=(32, 32, 3), classes=10)
