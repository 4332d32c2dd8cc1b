"""Fine-tuning with examples/train.py: a pretrained checkpoint onto new classes.

Real image files in a 3-class folder, real subprocess runs; the checkpoints
are an official-layout PyTorch file made by the tests' reference and Keras
files saved by the applications.
"""

import csv
import os
import re

import keras
import numpy as np
import pytest

from keras_sge import applications
from tests.applications import parity
from tests.examples import runner

pytestmark = [pytest.mark.tensorflow_only, pytest.mark.slow]

CLASSES = ("red", "green", "blue")
# The default head rate; the whole network at the paper's rate (not the
# fine-tuning default of a tenth of it), so that 2 short epochs show it learn.
RUN = runner.QUICK + [
    "--steps-per-epoch",
    "4",
    "--batch-size",
    "8",
    "--base-lr",
    "0.1",
    "--save-steps",
    "2",
]


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """An ImageNet-layout folder of JPEGs whose class is their dominant colour."""
    from PIL import Image

    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 4)):
        for label, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for i in range(count):
                image = rng.integers(0, 96, (36, 40, 3))
                image[..., label] += 140
                Image.fromarray(image.astype("uint8")).save(
                    root / split / name / f"{i}.jpg", quality=95
                )
    return str(root)


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    """SGE-ResNet-18 with a 1000-class head, saved as PytorchInsight saves it.

    torch's own initialisation (BN statistics 0 and 1), so that the frozen
    backbone's features have a sensible scale.
    """
    torch = pytest.importorskip("torch")
    from keras_sge.testing import torch_reference

    path = str(tmp_path_factory.mktemp("checkpoint") / "sge_resnet18.pth.tar")
    torch.manual_seed(3)
    parity.save_official_checkpoint(
        torch_reference.sge_resnet18(num_classes=1000), path
    )
    return path


@pytest.mark.timeout(900)
def test_fine_tune_an_official_checkpoint_head_first_then_everything(
    colour_folder, official_checkpoint, tmp_path
):
    output_dir = str(tmp_path / "run")
    args = RUN + [
        "--data",
        colour_folder,
        "--weights",
        official_checkpoint,
        "--output-dir",
        output_dir,
    ]

    # Phase 1 alone: the classifier learns; the backbone is the checkpoint's, bit for bit.
    output = runner.run(
        args + ["--epochs", "2", "--head-epochs", "2"], timeout=400
    )
    assert re.search(
        r"Loaded \d+ weights of sge_resnet18 from sge_resnet18\.pth\.tar "
        r"\(all but the classifier\); "
        r"new classifier 'predictions' for 3 classes \(the checkpoint's has 1000\)",
        output,
    ), output[-3000:]
    assert "Epochs 1-2: the classifier alone" in output
    losses = _losses(output_dir)
    assert len(losses) == 2 and losses[1] < losses[0], losses
    pretrained = applications.SGEResNet18(
        include_top=False, weights=official_checkpoint, input_shape=(32, 32, 3)
    )
    model = runner.final_model(output_dir)
    for layer in pretrained.layers:
        for expected, actual in zip(
            layer.weights, model.get_layer(layer.name).weights
        ):
            np.testing.assert_array_equal(
                np.asarray(actual), np.asarray(expected), err_msg=actual.path
            )

    # Phase 2, the same command with more epochs: killed after its first
    # backup, then resumed to the end. The whole network trains.
    args += ["--epochs", "4", "--head-epochs", "2"]
    output = runner.run_until(runner.start(args), "Backup saved at step 10")
    assert (
        "Resumed from backup at step 8 " in output
        and "Epochs 3-4: the whole network" in output
    )
    output = runner.run(args, timeout=400)
    assert (
        "Resumed from backup at step 10 " in output
        and "Trained steps 10-16" in output
    )
    # Epoch 3's row covers the steps after the resume only (train_steps 2).
    with open(os.path.join(output_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(row["train_steps"]) for row in rows] == [4, 4, 2, 4], rows
    losses = [float(row["loss"]) for row in rows]
    assert losses[3] < losses[2], losses
    model = runner.final_model(output_dir)
    moved = [
        layer.name
        for layer in pretrained.layers
        if layer.weights and not _equal(layer, model.get_layer(layer.name))
    ]
    assert len(moved) > len(pretrained.layers) // 4, moved


@pytest.mark.timeout(600)
@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_fine_tune_a_keras_file(colour_folder, tmp_path, suffix):
    keras.utils.set_random_seed(1)
    source = applications.SGEResNet18(input_shape=(32, 32, 3), classes=10)
    path = str(tmp_path / f"sge_resnet18{suffix}")
    source.save(path) if suffix == ".keras" else source.save_weights(path)
    output_dir = str(tmp_path / "run")
    output = runner.run(
        RUN
        + [
            "--data",
            colour_folder,
            "--weights",
            path,
            "--epochs",
            "1",
            "--head-epochs",
            "1",
            "--output-dir",
            output_dir,
        ]
    )
    assert (
        f"from sge_resnet18{suffix} (all but the classifier); "
        "new classifier 'predictions' for 3 classes (the checkpoint's has 10)"
    ) in output
    model = runner.final_model(output_dir)
    for layer in source.layers:
        if layer.weights and layer.name != "predictions":
            assert _equal(layer, model.get_layer(layer.name)), layer.name


@pytest.mark.timeout(300)
def test_another_architecture_still_fails_with_the_keys_named(
    colour_folder, official_checkpoint, tmp_path
):
    process = runner.start(
        RUN
        + [
            "--data",
            colour_folder,
            "--weights",
            official_checkpoint,
            "--arch",
            "resnet34",
            "--output-dir",
            str(tmp_path),
        ]
    )
    output, _ = process.communicate(timeout=240)
    assert process.returncode != 0
    assert re.search(r"missing keys .*layer1\.2\.", output), output[-3000:]


def _losses(output_dir):
    with open(os.path.join(output_dir, "log.csv")) as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def _equal(layer, other):
    return all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(layer.weights, other.weights)
    )


@pytest.mark.timeout(300)
def test_evaluate_only_scores_the_checkpoints_own_classifier(
    colour_folder, official_checkpoint, tmp_path
):
    torch = pytest.importorskip("torch")
    from keras_sge.testing import torch_reference

    path = str(tmp_path / "three_classes.pth.tar")
    torch.manual_seed(5)
    parity.save_official_checkpoint(
        torch_reference.sge_resnet18(num_classes=3), path
    )
    output = runner.run(
        RUN
        + [
            "--data",
            colour_folder,
            "--weights",
            path,
            "--evaluate-only",
            "--output-dir",
            str(tmp_path / "a"),
        ]
    )
    assert re.search(
        r"Validation: .*accuracy \d\.\d{4}.*top3_accuracy 1\.0000", output
    ), output[-2000:]
    assert "Trained" not in output

    # A classifier for other classes cannot be evaluated: one line, the fix named.
    process = runner.start(
        RUN
        + [
            "--data",
            colour_folder,
            "--weights",
            official_checkpoint,
            "--evaluate-only",
            "--output-dir",
            str(tmp_path / "b"),
        ]
    )
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 2, output[-2000:]
    assert re.search(
        r"train\.py: error: The weights in .* have a 1000-class classifier; "
        r"the model has 3 classes",
        output,
    ), output[-2000:]
    assert "Traceback" not in output


def test_arch_defaults_to_the_pytorch_checkpoints(
    colour_folder, official_checkpoint
):
    train = runner.import_train_script()
    args = train.parse_args(
        ["--data", colour_folder, "--weights", official_checkpoint]
    )
    assert (
        args.arch == "resnet18"
    )  # the folder profile's default would be resnet50
    assert train.parse_args(["--data", colour_folder]).arch == "resnet50"


@pytest.mark.timeout(600)
def test_a_small_folder_caps_the_default_batch_and_refuses_a_given_one(
    colour_folder, tmp_path
):
    keras.utils.set_random_seed(1)
    path = str(tmp_path / "sge_resnet18.weights.h5")
    applications.SGEResNet18(input_shape=(32, 32, 3), classes=10).save_weights(
        path
    )
    # The fine-tuning command as the README gives it, on 48 training
    # images: its default batch of 64 does not fit.
    command = runner.QUICK + ["--data", colour_folder, "--weights", path]
    command += ["--epochs", "1", "--head-epochs", "1"]

    output = runner.run(command + ["--output-dir", str(tmp_path / "a")])
    assert (
        "Batch size 48: the default of 64 is more than the 48 training images"
    ) in output
    # The learning rates scale with the batch that is used.
    assert (
        "peak learning rate 0.001875; head learning rate 0.01875 (epochs 1-1)"
    ) in output
    assert "Trained steps 0-1" in output
    assert os.path.isfile(tmp_path / "a" / "model.keras")

    # A batch the user asked for is not changed behind their back.
    process = runner.start(
        command + ["--batch-size", "64", "--output-dir", str(tmp_path / "b")]
    )
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 2, output[-3000:]
    assert (
        "train.py: error: --batch-size 64 exceeds the 48 training images: "
        "pass --batch-size 48 or less"
    ) in output
    assert "Traceback" not in output
    assert not os.path.exists(tmp_path / "b" / "backup")
