"""Fine-tuning with examples/train.py: a pretrained checkpoint onto new classes.

Real image files in a 3-class folder; the script's main runs in this
process, and in a subprocess where one is killed. The checkpoints are an
official-layout PyTorch file made by the tests' reference and Keras files
saved by the applications.
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
    colour_folder, official_checkpoint, tmp_path, capsys
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
    output = runner.run_in_process(
        args + ["--epochs", "2", "--head-epochs", "2"], capsys
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
    output = runner.run_in_process(args, capsys)
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
def test_fine_tune_a_keras_file(colour_folder, tmp_path, capsys):
    # The `.weights.h5` format is fine-tuned from in
    # test_a_small_folder_caps_the_default_batch_and_refuses_a_given_one.
    keras.utils.set_random_seed(1)
    source = applications.SGEResNet18(input_shape=(32, 32, 3), classes=10)
    path = str(tmp_path / "sge_resnet18.keras")
    source.save(path)
    output_dir = str(tmp_path / "run")
    output = runner.run_in_process(
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
        ],
        capsys,
    )
    _assert_backbone_loaded(source, "sge_resnet18.keras", output, output_dir)


def _assert_backbone_loaded(source, file_name, output, output_dir):
    """The run loaded all of `source` but its 10-class classifier, and
    trained the new classifier alone."""
    assert (
        f"from {file_name} (all but the classifier); "
        "new classifier 'predictions' for 3 classes (the checkpoint's has 10)"
    ) in output
    model = runner.final_model(output_dir)
    for layer in source.layers:
        if layer.weights and layer.name != "predictions":
            assert _equal(layer, model.get_layer(layer.name)), layer.name


@pytest.mark.timeout(300)
def test_another_architecture_still_fails_with_the_keys_named(
    colour_folder, official_checkpoint, tmp_path, capsys
):
    status, output = runner.main_in_process(
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
        ],
        capsys,
    )
    assert status == 2, output[-3000:]
    assert re.search(
        r"train\.py: error: .*missing keys .*layer1\.2\.", output
    ), output[-3000:]


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
    colour_folder, official_checkpoint, tmp_path, capsys
):
    torch = pytest.importorskip("torch")
    from keras_sge.testing import torch_reference

    path = str(tmp_path / "three_classes.pth.tar")
    torch.manual_seed(5)
    parity.save_official_checkpoint(
        torch_reference.sge_resnet18(num_classes=3), path
    )
    status, output = runner.main_in_process(
        RUN
        + [
            "--data",
            colour_folder,
            "--weights",
            path,
            "--evaluate-only",
            "--output-dir",
            str(tmp_path / "a"),
        ],
        capsys,
    )
    assert status == 0, output[-2000:]
    assert re.search(
        r"Validation: .*accuracy \d\.\d{4}.*top3_accuracy 1\.0000", output
    ), output[-2000:]
    assert "Trained" not in output

    # A classifier for other classes cannot be evaluated: one line, the fix named.
    status, output = runner.main_in_process(
        RUN
        + [
            "--data",
            colour_folder,
            "--weights",
            official_checkpoint,
            "--evaluate-only",
            "--output-dir",
            str(tmp_path / "b"),
        ],
        capsys,
    )
    assert status == 2, output[-2000:]
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
    colour_folder, tmp_path, capsys
):
    keras.utils.set_random_seed(1)
    path = str(tmp_path / "sge_resnet18.weights.h5")
    source = applications.SGEResNet18(input_shape=(32, 32, 3), classes=10)
    source.save_weights(path)
    # The fine-tuning command as the README gives it, on 48 training
    # images: its default batch of 64 does not fit.
    command = runner.QUICK + ["--data", colour_folder, "--weights", path]
    command += ["--epochs", "1", "--head-epochs", "1"]

    output = runner.run_in_process(
        command + ["--output-dir", str(tmp_path / "a")], capsys
    )
    assert (
        "Batch size 48: the default of 64 is more than the 48 training images"
    ) in output
    # The learning rates scale with the batch that is used.
    assert (
        "peak learning rate 0.001875; head learning rate 0.01875 (epochs 1-1)"
    ) in output
    assert "Trained steps 0-1" in output
    _assert_backbone_loaded(
        source, "sge_resnet18.weights.h5", output, str(tmp_path / "a")
    )

    # A batch the user asked for is not changed behind their back.
    status, output = runner.main_in_process(
        command + ["--batch-size", "64", "--output-dir", str(tmp_path / "b")],
        capsys,
    )
    assert status == 2, output[-3000:]
    assert (
        "train.py: error: --batch-size 64 exceeds the 48 training images: "
        "pass --batch-size 48 or less"
    ) in output
    assert "Traceback" not in output
    assert not os.path.exists(tmp_path / "b" / "backup")


# --------------------------------------------------------------------------
# --arch keras:NAME: a keras.applications network with SGE
# --------------------------------------------------------------------------

KERAS_RUN = [
    "--arch",
    "keras:MobileNetV2",
    "--image-size",
    "32",
    "--verbose",
    "2",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "8",
]


@pytest.fixture(scope="module")
def mobilenet_v2_files(tmp_path_factory):
    """keras.applications' MobileNetV2 weights, with and without its top.

    The top model as a legacy `.h5` (the format of keras.applications'
    ImageNet downloads, whose top Keras cannot load into a model without
    one), the model without top as a `.weights.h5`. Random kernels; the
    BatchNormalization statistics are those of one batch of images, as a
    pretrained network's are those of its data: a random MobileNetV2's
    features otherwise vanish, and so would any effect of the input scaling.
    """
    root = tmp_path_factory.mktemp("mobilenet_v2")
    keras.utils.set_random_seed(2)
    top = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3))
    norms = [
        layer
        for layer in top.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in norms:
        layer.momentum = 0.0  # One training-mode call sets the statistics.
    images = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3))
    top(keras.applications.mobilenet_v2.preprocess_input(images), training=True)
    notop = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3)
    )
    for layer in notop.layers:
        if layer.weights:
            layer.set_weights(top.get_layer(layer.name).get_weights())
    files = {
        "top": str(root / "mobilenet_v2.h5"),
        "notop": str(root / "mobilenet_v2_notop.weights.h5"),
    }
    top.save(files["top"])
    notop.save_weights(files["notop"])
    return files


@pytest.mark.timeout(600)
def test_fine_tune_a_keras_applications_network_with_sge(
    colour_folder, mobilenet_v2_files, tmp_path, capsys
):
    output_dir = str(tmp_path / "run")
    command = KERAS_RUN + ["--data", colour_folder, "--output-dir", output_dir]
    output = runner.run_in_process(
        command
        + ["--weights", mobilenet_v2_files["top"]]
        + ["--epochs", "2", "--head-epochs", "1"],
        capsys,
    )
    assert (
        "Loaded 260 weights of keras.applications.MobileNetV2 "
        "(include_top=False) from mobilenet_v2.h5; 10 SGE layers, one per "
        "residual block, the same function at insertion; new classifier "
        "'predictions' for 3 classes"
    ) in output, output[-3000:]
    assert (
        "Input scaling: as keras.applications.mobilenet_v2.preprocess_input"
    ) in output
    assert "Epochs 1-1: the classifier alone" in output
    assert "Epochs 2-2: the whole network" in output
    assert len(_losses(output_dir)) == 2
    for path in ("model.keras", "best.keras", "saved_model/saved_model.pb"):
        assert os.path.exists(os.path.join(output_dir, path)), path
    model = runner.final_model(output_dir)
    assert _count(model, "SGE") == _count(model, "Add") == 10

    # The SavedModel scales images as MobileNetV2 expects (to [-1, 1], not
    # the SGE-ResNets' mean and std), and serves without keras_sge.
    from examples.training import data
    from keras_sge.applications import center_crop_resize
    from tests.examples.test_train_data_and_export import (
        _serve_in_fresh_process,
    )

    def expected(images):
        scaled = keras.applications.mobilenet_v2.preprocess_input(
            np.array(center_crop_resize(images, 32))
        )
        return model.predict(scaled, verbose=0)

    files = sorted(
        os.path.join(colour_folder, "val", c, f)
        for c in CLASSES
        for f in os.listdir(os.path.join(colour_folder, "val", c))
    )
    blobs = [open(f, "rb").read() for f in files]
    uint8_batch = np.random.default_rng(1).integers(0, 256, (3, 40, 48, 3))
    uint8_batch = uint8_batch.astype("uint8")
    served = _serve_in_fresh_process(
        os.path.join(output_dir, "saved_model"), files, uint8_batch, tmp_path
    )
    np.testing.assert_allclose(
        served["uint8_probabilities"], expected(uint8_batch), atol=1e-4
    )
    decoded = np.stack([data.decode(blob) for blob in blobs])  # All 36x40.
    np.testing.assert_allclose(
        served["encoded_probabilities"], expected(decoded), atol=1e-4
    )
    wrong = model.predict(data.eval_image(uint8_batch, 32, "torch"), verbose=0)
    assert not np.allclose(wrong, expected(uint8_batch), atol=1e-3)

    # Evaluating the run's last backup gives the run's final validation.
    train = runner.import_train_script()
    final = re.search(r"Validation: .*", output)[0]
    assert train.main(command + ["--evaluate-only"]) == 0
    printed = capsys.readouterr().out
    assert "Evaluating the backup of step 4" in printed
    assert final in printed, (final, printed[-2000:])
    # So does the saved model, given as --weights.
    saved = os.path.join(output_dir, "model.keras")
    argv = command + ["--evaluate-only", "--weights", saved]
    assert train.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"Loaded all 282 weights of sge_mobilenetv2 from {saved}" in printed
    assert final in printed, (final, printed[-2000:])


@pytest.mark.parametrize("kind", ["top", "notop"])
def test_sge_keeps_the_pretrained_function_at_insertion(
    mobilenet_v2_files, kind
):
    from examples.training import keras_apps

    path = mobilenet_v2_files[kind]
    model, line = keras_apps.build("keras:MobileNetV2", 32, 3, 64, path)
    assert line.startswith(
        "Loaded 260 weights of keras.applications.MobileNetV2 "
        f"(include_top=False) from {os.path.basename(path)}; 10 SGE layers"
    )
    assert _count(model, "SGE") == _count(model, "Add") == 10
    # Keras's own loading of the same file is the reference.
    plain = keras.applications.MobileNetV2(
        weights=None, include_top=kind == "top", input_shape=(32, 32, 3)
    )
    plain.load_weights(path)
    plain_features = keras.Model(
        plain.input, plain.get_layer("out_relu").output
    )
    sge_features = keras.Model(model.input, model.get_layer("avg_pool").input)
    images = keras.applications.mobilenet_v2.preprocess_input(
        np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3))
    )
    expected = np.asarray(plain_features(images))
    assert np.abs(expected).mean() > 0.1  # Features that would show a change.
    np.testing.assert_allclose(
        np.asarray(sge_features(images)), expected, rtol=1e-4, atol=1e-4
    )


def test_the_pipeline_scales_images_as_each_family_expects():
    from examples.training import data
    from examples.training import keras_apps

    images = np.random.default_rng(4).uniform(0, 255, (2, 5, 6, 3))
    for module, mode in keras_apps.FAMILIES.items():
        reference = getattr(keras.applications, module).preprocess_input
        np.testing.assert_allclose(
            np.asarray(data.preprocess(images, mode)),
            reference(images.copy()),
            rtol=1e-5,
            atol=1e-4,
            err_msg=module,
        )
    # Each family names a module that keras.applications still has.
    families = {
        keras_apps.family(getattr(keras.applications, name))
        for name in keras_apps.names()
    }
    assert families == set(keras_apps.FAMILIES)
    for arch, mode in [
        ("keras:ResNet50", "caffe"),
        ("keras:ResNet50V2", "tf"),
        ("keras:MobileNetV2", "tf"),
        ("keras:EfficientNetB0", "none"),
        ("keras:ConvNeXtTiny", "none"),
    ]:
        assert keras_apps.preprocessing(arch) == mode, arch


def test_keras_arch_and_groups_none_parse_and_bind_the_run(tmp_path):
    from examples.training import rundir

    train = runner.import_train_script()
    args = train.parse_args(["--arch", "keras:resnet50v2", "--groups", "none"])
    assert args.arch == "keras:ResNet50V2" and args.groups is None
    assert args.output_dir == os.path.join("runs", "keras_resnet50v2-digits")
    assert train.input_preprocessing(args) == "tf"
    settings = train.run_settings(args)
    assert settings["--arch"] == "keras:ResNet50V2"
    assert settings["--groups"] == "none"
    sge = train.run_settings(train.parse_args(["--arch", "keras:ResNet50V2"]))
    assert sge["--groups"] == 64
    assert train.input_preprocessing(train.parse_args([])) == "torch"

    # A run recorded when `--groups 0` meant no SGE resumes with `none`.
    plain = train.parse_args(
        ["--groups", "none", "--output-dir", str(tmp_path)]
    )
    rundir.record(str(tmp_path), {**train.run_settings(plain), "--groups": 0})
    train.check_run_directory(plain)
    with pytest.raises(
        rundir.RunDirectoryError, match="--groups was none, now 64"
    ):
        train.check_run_directory(
            train.parse_args(["--output-dir", str(tmp_path)])
        )


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--arch", "keras:ResNet51"],
            "argument --arch: 'keras:ResNet51' is not a keras.applications "
            "network this script takes; NAME in keras:NAME must be one of: "
            "ConvNeXtBase, ",
        ),
        (
            ["--groups", "0"],
            "argument --groups: expected a positive number of SGE groups, "
            "got 0: pass --groups none to train without SGE",
        ),
        (["--groups", "-4"], "got -4: pass --groups none"),
        (
            ["--arch", "keras:ResNet50V2", "--sync-bn"],
            "--sync-bn is for the SGE-ResNets (--arch resnetN), not --arch "
            "keras:ResNet50V2: leave it out",
        ),
    ],
)
def test_bad_keras_arch_or_groups_are_refused_in_one_line(
    capsys, argv, message
):
    train = runner.import_train_script()
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, message)


def test_the_accepted_keras_networks_are_listed():
    from examples.training import keras_apps

    names = keras_apps.names()
    for name in ("ResNet50", "ResNet50V2", "MobileNetV2", "EfficientNetB0"):
        assert name in names
    assert "ConvNeXtTiny" in names and "decode_predictions" not in names


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "kind, mismatch",
    [
        ("top", "(Layer count mismatch when loading weights from file"),
        ("notop", "layers do not load, the first 'conv1_conv': "),
        ("text", None),
    ],
)
def test_weights_that_do_not_fit_are_refused_in_one_line(
    colour_folder, mobilenet_v2_files, tmp_path, capsys, kind, mismatch
):
    if kind == "text":
        path = str(tmp_path / "weights.txt")
        with open(path, "w") as f:
            f.write("not weights\n")
    else:
        path = mobilenet_v2_files[kind]
    train = runner.import_train_script()
    argv = KERAS_RUN[2:] + ["--arch", "keras:ResNet50V2", "--weights", path]
    argv += ["--data", colour_folder, "--output-dir", str(tmp_path / "run")]
    if kind == "text":
        with pytest.raises(SystemExit) as exit_info:
            train.main(argv)
        assert exit_info.value.code == 2
        message = (
            f"--weights {path} is not a Keras weights file: --arch "
            "keras:ResNet50V2 takes that network's .h5, .weights.h5 or .keras"
        )
    else:
        assert train.main(argv) == 2
        message = (
            f"--weights {path} does not fit keras.applications.ResNet50V2 "
        )
    stderr = capsys.readouterr().err
    _assert_one_line_error(stderr, message)
    if mismatch:
        _assert_one_line_error(stderr, mismatch)
        assert (
            "pass a weights file of that network, with or without its top"
            in stderr
        )
    assert not os.path.exists(tmp_path / "run" / "backup")


def _assert_one_line_error(stderr, message):
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("train.py: error:")]
    assert len(errors) == 1 and message in errors[0], stderr[-3000:]
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr[-3000:]


def _count(model, kind):
    """The number of `model`'s layers of the class named `kind`."""
    return sum(1 for layer in model.layers if type(layer).__name__ == kind)
