"""examples/train.py trains on the cluttered digits."""

import os

import pytest

from tests.examples import runner

pytestmark = pytest.mark.tensorflow_only


@pytest.fixture(scope="module")
def train_script():
    """examples/train.py imported as a module."""
    return runner.import_train_script()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_py_trains_on_the_cluttered_digits(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = [
        "--dataset",
        "cluttered-digits",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        # Large batches: the whole validation split (2000 images) is
        # evaluated twice, in an eighth of the steps that batches of 8 take.
        "--batch-size",
        "64",
        "--verbose",
        "2",
        "--output-dir",
        out,
    ]
    output = runner.run_in_process(args, capsys)
    assert (
        "Data: cluttered digits" in output
        and "6000 train / 2000 val images, 10 classes" in output
    )
    assert "Validation: accuracy" in output
    assert os.path.exists(os.path.join(out, "model.keras"))


def test_cluttered_digits_defaults_and_output_dir(train_script):
    args = train_script.parse_args(["--dataset", "cluttered-digits"])
    assert (
        args.image_size,
        args.epochs,
        args.crop_scale,
        args.flip,
        args.arch,
    ) == (32, 3, 1.0, False, "resnet18")
    assert args.output_dir == os.path.join(
        "runs", "sge_resnet18-cluttered-digits"
    )
    assert train_script.parse_args([]).output_dir == os.path.join(
        "runs", "sge_resnet18-digits"
    )


def test_dataset_with_data_fails_in_one_line(train_script, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_script.parse_args(
            ["--dataset", "cluttered-digits", "--data", str(tmp_path)]
        )
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err.strip()
        == "train.py: error: --dataset cluttered-digits is embedded: leave out --data"
    )


def test_too_small_a_canvas_fails_in_one_line_naming_the_value(
    train_script, tmp_path, capsys
):
    argv = [
        "--dataset",
        "cluttered-digits",
        "--image-size",
        "16",
        "--output-dir",
        str(tmp_path / "run"),
    ]
    assert train_script.main(argv) == 2
    lines = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("train.py: error:")
    ]
    assert len(lines) == 1 and "Received: image_size=16" in lines[0]
