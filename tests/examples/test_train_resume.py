"""examples/train.py survives SIGKILL, even in the middle of writing a backup."""

import os
import re
import textwrap

import pytest

from tests.examples import runner

pytestmark = [pytest.mark.tensorflow_only, pytest.mark.slow]

# 2 epochs of 8 steps, a backup every 4 steps: backups at 4, 8, 12, 16.
ARGS = runner.QUICK + [
    "--epochs",
    "2",
    "--steps-per-epoch",
    "8",
    "--batch-size",
    "16",
    "--save-steps",
    "4",
]

# train.py, with the backup of step 8 hanging after its files are written
# and before the directory's `checkpoint` state file records it.
HANG_IN_SAVE = textwrap.dedent(
    f"""
    import runpy, sys, time
    import tensorflow as tf

    record_state = tf.train.CheckpointManager._record_state

    def hanging_record_state(self):
        if self.latest_checkpoint.endswith("-8"):
            print("HANGING IN SAVE", flush=True)
            time.sleep(600)
        record_state(self)

    tf.train.CheckpointManager._record_state = hanging_record_state
    sys.argv = ["train.py"] + sys.argv[1:]
    runpy.run_path({runner.TRAIN_PY!r}, run_name="__main__")
    """
)


@pytest.mark.timeout(600)
def test_kill_while_saving_then_mid_training_resumes_from_last_good_backup(
    tmp_path,
):
    args = ARGS + ["--output-dir", str(tmp_path)]
    backups = tmp_path / "backup" / "worker-0"

    # 1. Killed while writing the backup of step 8: step 4 is the last good one.
    output = runner.run_until(
        runner.start(args, script=HANG_IN_SAVE), "HANGING IN SAVE"
    )
    assert "Backup saved at step 4" in output
    assert any(name.startswith("ckpt-8") for name in os.listdir(backups)), (
        "the step-8 files were not written"
    )

    # 2. Resumes at step 4; killed mid-training after the backup of step 12.
    output = runner.run_until(runner.start(args), "Backup saved at step 12")
    assert "Resumed from backup at step 4 " in output
    last_good = max(
        int(step) for step in re.findall(r"Backup saved at step (\d+)", output)
    )

    # 3. Resumes from the last backup written before the kill and finishes.
    output = runner.run(args)
    assert f"Resumed from backup at step {last_good} " in output
    assert f"Trained steps {last_good}-16" in output
    assert "Validation: accuracy" in output
    assert os.path.exists(tmp_path / "saved_model" / "saved_model.pb")
