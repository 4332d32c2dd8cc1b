"""examples/train.py survives SIGKILL, even in the middle of writing a backup."""

import os
import re
import textwrap

import pytest

from tests.examples import runner

pytestmark = [pytest.mark.tensorflow_only, pytest.mark.slow]

# 2 epochs of 4 steps, a backup every 2 steps: backups at 2, 4, 6, 8.
ARGS = runner.QUICK + [
    "--epochs",
    "2",
    "--steps-per-epoch",
    "4",
    "--batch-size",
    "16",
    "--save-steps",
    "2",
]

# train.py, with the backup of step 4 hanging after its files are written
# and before the directory's `checkpoint` state file records it.
HANG_IN_SAVE = textwrap.dedent(
    f"""
    import runpy, sys, time
    import tensorflow as tf

    record_state = tf.train.CheckpointManager._record_state

    def hanging_record_state(self):
        if self.latest_checkpoint.endswith("-4"):
            print("HANGING IN SAVE", flush=True)
            time.sleep(600)
        record_state(self)

    tf.train.CheckpointManager._record_state = hanging_record_state
    sys.argv = ["train.py"] + sys.argv[1:]
    runpy.run_path({runner.TRAIN_PY!r}, run_name="__main__")
    """
)


@pytest.fixture(scope="module")
def killed_twice_then_finished(tmp_path_factory):
    """One run, SIGKILLed while saving, then mid-training, then run to its end.

    Returns its output directory, command and the three runs' outputs. The
    finished run also serves the tests of what a rerun of it does.
    """
    output_dir = tmp_path_factory.mktemp("resumed")
    args = ARGS + ["--output-dir", str(output_dir)]
    # 1. Killed while writing the backup of step 4.
    hung = runner.run_until(
        runner.start(args, script=HANG_IN_SAVE), "HANGING IN SAVE"
    )
    step_4_written = any(
        name.startswith("ckpt-4")
        for name in os.listdir(output_dir / "backup" / "worker-0")
    )
    # 2. Killed mid-training after the backup of step 6.
    killed = runner.run_until(runner.start(args), "Backup saved at step 6")
    # 3. Run to the end.
    finished = runner.run(args)
    return output_dir, args, (hung, step_4_written, killed, finished)


@pytest.mark.timeout(600)
def test_kill_while_saving_then_mid_training_resumes_from_last_good_backup(
    killed_twice_then_finished,
):
    output_dir, _, outputs = killed_twice_then_finished
    hung, step_4_written, killed, finished = outputs

    # 1. Killed while writing the backup of step 4: step 2 is the last good one.
    assert "Backup saved at step 2" in hung
    assert step_4_written, "the step-4 files were not written"

    # 2. Resumes at step 2; killed mid-training after the backup of step 6.
    assert "Resumed from backup at step 2 " in killed
    last_good = max(
        int(step) for step in re.findall(r"Backup saved at step (\d+)", killed)
    )

    # 3. Resumes from the last backup written before the kill and finishes.
    assert f"Resumed from backup at step {last_good} " in finished
    assert f"Trained steps {last_good}-8" in finished
    assert "Validation: accuracy" in finished
    assert os.path.exists(output_dir / "saved_model" / "saved_model.pb")


# One short epoch: 2 steps, a backup after each.
SHORT = runner.QUICK + [
    "--epochs",
    "1",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "8",
    "--save-steps",
    "1",
]


def _listing(directory):
    """Every file under `directory` with its size and modification time."""
    return {
        os.path.join(folder, name): (
            os.stat(os.path.join(folder, name)).st_size,
            os.stat(os.path.join(folder, name)).st_mtime_ns,
        )
        for folder, _, names in os.walk(directory)
        for name in names
    }


def _refused(args, message, capsys):
    """`train.py args` must stop in one line holding `message`."""
    status, output = runner.main_in_process(args, capsys)
    assert status == 2, output[-3000:]
    errors = [
        line
        for line in output.splitlines()
        if line.startswith("train.py: error:")
    ]
    assert len(errors) == 1 and message in errors[0], output[-3000:]
    assert "Traceback" not in output
    return output


@pytest.mark.timeout(600)
def test_a_finished_run_is_bound_to_its_architecture(
    killed_twice_then_finished, capsys
):
    output_dir, args, (*_, output) = killed_twice_then_finished
    if "cuInit" in output:  # TensorFlow's GPU probe on a machine without one.
        assert "harmless on a machine without a GPU" in output
    finished = _listing(output_dir)

    # Another architecture in the same directory: refused, nothing touched.
    other = [value if value != "resnet18" else "resnet34" for value in args]
    _refused(
        other,
        f"{output_dir} holds a run of another model or data: --arch was "
        "resnet18, now resnet34",
        capsys,
    )
    assert _listing(output_dir) == finished

    # The same command again: nothing left to train, and it says so.
    status, output = runner.main_in_process(args, capsys)
    assert status == 0, output[-3000:]
    assert (
        "Already complete at step 8: nothing to train; pass --epochs 3 or "
        "more to extend it, or --fresh to start over"
    ) in output
    assert "Trained steps" not in output

    # Evaluating the run's last backup, not a random model.
    status, output = runner.main_in_process(args + ["--evaluate-only"], capsys)
    assert status == 0, output[-3000:]
    assert "Evaluating the backup of step 8 in " in output
    assert "Validation: accuracy" in output


def test_a_backup_of_another_model_restores_nothing(tmp_path, monkeypatch):
    import keras
    import numpy as np
    import tensorflow as tf

    from examples.training import backup
    from examples.training import distribute

    def backups(*widths):
        keras.utils.set_random_seed(len(widths))
        model = keras.Sequential(
            [keras.Input((4,))] + [keras.layers.Dense(w) for w in widths]
        )
        model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
        model.optimizer.build(model.trainable_variables)
        strategy = tf.distribute.get_strategy()
        statistics = distribute.ReplicaStatistics(model, strategy)
        return model, backup.Backup(str(tmp_path), model, strategy, statistics)

    def restore_fails_and_changes_nothing(widths):
        model, backups_of_model = backups(*widths)
        before = [v.numpy() for v in model.variables]
        with pytest.raises(backup.BackupError, match="do not restore into"):
            backups_of_model.restore()
        for variable, value in zip(model.variables, before):
            np.testing.assert_array_equal(variable.numpy(), value)
        assert float(backups_of_model.best.numpy()) == -float("inf")
        assert int(backups_of_model.step.numpy()) == 0

    _, saved = backups(8, 3)
    saved.best.assign(0.5)
    saved.save(4)

    # Another architecture: told by its shapes before anything is assigned.
    restore_fails_and_changes_nothing((8, 5, 3))
    # Should TensorFlow fail part-way (its first variables fit), every
    # variable assigned so far is put back.
    monkeypatch.setattr(backup.Backup, "_check_fits", lambda self, path: None)
    restore_fails_and_changes_nothing((8, 5, 3))
    # A damaged file: the same refusal, not a traceback.
    (data_file,) = [
        name for name in os.listdir(saved.directory) if ".data-" in name
    ]
    with open(os.path.join(saved.directory, data_file), "r+b") as f:
        f.truncate(64)
    restore_fails_and_changes_nothing((8, 3))


@pytest.mark.timeout(300)
def test_a_nan_loss_stops_the_run_and_exports_nothing(tmp_path, capsys):
    # A learning rate that is a number, and far too large: the loss is NaN
    # within a few steps.
    args = SHORT + ["--base-lr", "1e30", "--output-dir", str(tmp_path)]
    args[args.index("--steps-per-epoch") + 1] = "4"
    status, output = runner.main_in_process(args, capsys)
    assert status == 1, output[-3000:]
    assert "Traceback" not in output
    match = re.search(
        r"train\.py: error: the loss became (nan|inf) at step (\d+) \(epoch 1\): "
        r"training stopped, and nothing was saved or exported from the broken "
        r"weights; the backups up to step (\d+) are kept .*lower --base-lr "
        r"\(now 1e\+30\)",
        output,
    )
    assert match, output[-3000:]
    step, kept = int(match.group(2)), int(match.group(3))
    assert kept == step - 1
    for name in ("model.keras", "best.keras", "saved_model"):
        assert not os.path.exists(tmp_path / name), name
    assert f"ckpt-{kept}.index" in os.listdir(tmp_path / "backup" / "worker-0")
