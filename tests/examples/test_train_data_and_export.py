"""examples/train.py on an image folder, its export, and its argument checks."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests.examples import runner

pytestmark = pytest.mark.tensorflow_only

CLASSES = ("disc", "square", "stripes")


@pytest.fixture(scope="module")
def train_script():
    """examples/train.py imported as a module."""
    return runner.import_train_script()


def _draw(kind, size, seed):
    """A small RGB image of a shape, of the given (width, height)."""
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 60, (size[1], size[0], 3)).astype("uint8")
    w, h = size
    if kind == "disc":
        yy, xx = np.mgrid[:h, :w]
        image[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(w, h) / 3) ** 2] = (
            250,
            40,
            40,
        )
    elif kind == "square":
        image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (40, 250, 40)
    else:
        image[:, ::6] = (40, 40, 250)
    return Image.fromarray(image)


def write_image_folder(root, train_per_class=6, val_per_class=2):
    """An ImageNet-layout folder of real JPEG (and a few PNG) files, sizes varied."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c, kind in enumerate(CLASSES):
            os.makedirs(os.path.join(root, split, kind))
            for i in range(count):
                size = (36 + 7 * i, 30 + 5 * ((i + c) % 4))
                fmt = "PNG" if i == 1 else "JPEG"
                path = os.path.join(root, split, kind, f"{i}.{fmt.lower()}")
                _draw(kind, size, seed=100 * c + i).save(path, fmt)
    return root


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_image_folder_trains_and_the_savedmodel_serves_without_keras_sge(
    train_script, tmp_path, capsys
):
    import keras

    from examples.training import data

    root = write_image_folder(str(tmp_path / "images"))
    out = str(tmp_path / "run")
    argv = [
        "--data",
        root,
        "--arch",
        "resnet18",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--batch-size",
        "6",
    ]
    assert (
        train_script.main(
            argv
            + ["--steps-per-epoch", "2", "--verbose", "0", "--output-dir", out]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Data: " + root + ": 18 train / 6 val images, 3 classes" in printed
    assert "Validation: accuracy" in printed
    for path in (
        "model.keras",
        "best.keras",
        "log.csv",
        "saved_model/saved_model.pb",
        "backup/worker-0/checkpoint",
    ):
        assert os.path.exists(os.path.join(out, path)), path
        assert os.path.abspath(os.path.join(out, path.split("/")[0])) in printed
    # TF Serving does not JIT XLA by default: the export must hold none.
    with open(os.path.join(out, "saved_model", "saved_model.pb"), "rb") as f:
        saved_model_bytes = f.read()
    assert b"XlaMustCompile" not in saved_model_bytes
    # The two signatures share one traced network: each convolution once.
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    assert _count_forward_convolutions(saved_model_bytes) == sum(
        isinstance(layer, keras.layers.Conv2D) for layer in model.layers
    )

    # The Keras model on the raw val files, with the pipeline's eval preprocessing.
    files = sorted(
        os.path.join(root, "val", c, f)
        for c in CLASSES
        for f in os.listdir(os.path.join(root, "val", c))
    )
    blobs = [open(f, "rb").read() for f in files]
    uint8_batch = (
        np.random.RandomState(0).randint(0, 256, (2, 40, 56, 3)).astype("uint8")
    )
    expected_encoded = model.predict(
        np.stack([data.eval_image(data.decode(b), 32) for b in blobs]),
        verbose=0,
    )
    expected_uint8 = model.predict(data.eval_image(uint8_batch, 32), verbose=0)

    served = _serve_in_fresh_process(
        os.path.join(out, "saved_model"), files, uint8_batch, tmp_path
    )
    np.testing.assert_allclose(
        served["encoded_probabilities"], expected_encoded, atol=1e-5
    )
    np.testing.assert_allclose(
        served["uint8_probabilities"], expected_uint8, atol=1e-5
    )
    top = np.argsort(-expected_encoded, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(served["encoded_top_k_indices"], top)
    assert served["encoded_top_k_names"].tolist() == [
        [CLASSES[i] for i in row] for row in top
    ]
    assert served["class_names"].tolist() == list(CLASSES)


def _count_forward_convolutions(saved_model_bytes):
    """Conv2D ops in every function a SavedModel holds."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel.FromString(saved_model_bytes)
    (meta_graph,) = saved_model.meta_graphs
    return sum(
        node.op == "Conv2D"
        for function in meta_graph.graph_def.library.function
        for node in function.node_def
    )


def _serve_in_fresh_process(saved_model, files, uint8_batch, tmp_path):
    """Runs both signatures in a process that imports TensorFlow only."""
    np.save(tmp_path / "uint8.npy", uint8_batch)
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import tensorflow as tf

        loaded = tf.saved_model.load({saved_model!r})
        files = json.loads({json.dumps(json.dumps(files))})
        blobs = tf.constant([open(f, "rb").read() for f in files])
        encoded = loaded.signatures["serving_default"](images=blobs)
        uint8 = loaded.signatures["serve_uint8"](
            images=tf.constant(np.load({str(tmp_path / "uint8.npy")!r}))
        )
        out = {{"encoded_" + k: v.numpy() for k, v in encoded.items()}}
        out.update({{"uint8_" + k: v.numpy() for k, v in uint8.items()}})
        out["class_names"] = loaded.class_names.numpy()
        out = {{k: v.astype(str) if v.dtype == object else v for k, v in out.items()}}
        np.savez({str(tmp_path / "served.npz")!r}, **out)
        assert not any(m.startswith("keras_sge") for m in sys.modules), "keras_sge was imported"
        """
    )
    env = runner.environment()
    env.pop("PYTHONPATH")  # keras_sge is not even importable there.
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return dict(np.load(tmp_path / "served.npz"))


def test_pipeline_resumes_mid_epoch_and_shards_by_replica():
    """The stream from step k is the tail of the stream from 0; shards interleave."""
    import tensorflow as tf

    from examples.training import data

    digits = data.load_digits(image_size=16)
    pipeline = data.Pipeline(
        image_size=16, num_classes=10, seed=3, crop_scale=(0.5, 1.0), flip=True
    )

    def batches(context, start_step, count):
        dataset = pipeline.train(
            digits.train,
            context,
            global_batch=8,
            steps_per_epoch=3,
            start_step=start_step,
        )
        return [images.numpy() for images, _ in dataset.take(count)]

    one_machine = batches(
        tf.distribute.InputContext(1, 0, 2), 0, 10
    )  # 2 replicas: 2 batches a step.
    np.testing.assert_array_equal(
        batches(tf.distribute.InputContext(1, 0, 2), 4, 2), one_machine[8:10]
    )
    workers = [
        batches(tf.distribute.InputContext(2, i, 2), 0, 5) for i in range(2)
    ]
    np.testing.assert_array_equal(
        np.stack(workers, 1).reshape(np.shape(one_machine)), one_machine
    )
    assert not np.array_equal(workers[0][0], workers[1][0])


def _missing(root):
    return os.path.join(root, "missing")


def _empty_class(root):
    os.makedirs(os.path.join(write_image_folder(root, 1, 1), "train", "empty"))
    return root


def _non_image(root):
    with open(
        os.path.join(
            write_image_folder(root, 1, 1), "train", "disc", "notes.jpg"
        ),
        "w",
    ) as f:
        f.write("not an image")
    return root


def _unknown_val_class(root):
    os.makedirs(os.path.join(write_image_folder(root, 1, 1), "val", "cat"))
    return root


def _one_class(root):
    for split in ("train", "val"):
        os.makedirs(os.path.join(root, split, "disc"))
        _draw("disc", (40, 36), seed=0).save(
            os.path.join(root, split, "disc", "0.jpg")
        )
    return root


@pytest.mark.parametrize(
    "make, message",
    [
        (_missing, "data directory not found"),
        (_empty_class, "empty class folder"),
        (_non_image, "not a JPEG/PNG/GIF/BMP image"),
        (_unknown_val_class, "has no counterpart in train/"),
        (_one_class, "has a single class folder, 'disc': a classifier needs"),
    ],
)
def test_bad_data_fails_in_one_line(
    train_script, tmp_path, capsys, make, message
):
    root = make(str(tmp_path / "images"))
    assert (
        train_script.main(
            ["--data", root, "--output-dir", str(tmp_path / "run")]
        )
        == 2
    )
    _assert_one_line_error(capsys.readouterr().err, message)
    assert not os.path.exists(tmp_path / "run" / "backup")


def test_unknown_architecture_fails_in_one_line(train_script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(["--arch", "resnet19"])
    assert exit_info.value.code == 2
    _assert_one_line_error(
        capsys.readouterr().err, "invalid choice: 'resnet19'"
    )


@pytest.mark.timeout(120)
def test_batch_not_divisible_by_replicas_fails_in_one_line(tmp_path):
    args = [
        "--cpu-devices",
        "2",
        "--batch-size",
        "15",
        "--output-dir",
        str(tmp_path),
    ]
    result = subprocess.run(
        [sys.executable, runner.TRAIN_PY] + args,
        env=runner.environment(),
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 2
    _assert_one_line_error(
        result.stderr, "must be divisible by the number of replicas (2)"
    )
    assert not os.path.exists(tmp_path / "backup")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--base-lr", "nan"], "--base-lr must be a positive number, got nan"),
        (["--base-lr", "-1"], "--base-lr must be a positive number, got -1"),
        (["--head-lr", "inf"], "--head-lr must be a positive number, got inf"),
        (
            ["--label-smoothing", "2"],
            "--label-smoothing must be in [0, 1), got 2",
        ),
        (["--momentum", "1"], "--momentum must be in [0, 1), got 1"),
        (
            ["--weight-decay", "-0.1"],
            "must be 0 or a positive number, got -0.1",
        ),
        (["--decoupled-weight-decay", "nan"], "got nan"),
        (["--warmup-epochs", "inf"], "--warmup-epochs must be 0 or a positive"),
        (["--crop-scale", "0"], "--crop-scale must be in (0, 1], got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--epochs", "-2"], "--epochs must be at least 1, got -2"),
        (["--save-steps", "0"], "--save-steps must be at least 1, got 0"),
        (["--steps-per-epoch", "0"], "--steps-per-epoch must be at least 1"),
        (
            ["--groups", "-1"],
            "--groups: expected a positive number of SGE groups, got -1: "
            "pass --groups none to train without SGE",
        ),
        (["--lr-decay-epochs", "0,30"], "positive epochs, got 0,30"),
        (["--val-fraction", "1"], "--val-fraction must be in (0, 1), got 1"),
        (["--cache-mb", "inf"], "--cache-mb must be 0 (off) or a positive"),
    ],
)
def test_invalid_values_are_refused_before_any_work_echoing_them(
    train_script, tmp_path, capsys, argv, message
):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(argv + ["--output-dir", str(out)])
    assert exit_info.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, message)
    assert not out.exists()


def _truncated_checkpoint(path):
    """An official-layout checkpoint cut off half-way, as a failed copy leaves it."""
    torch = pytest.importorskip("torch")
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}}, path)
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])


@pytest.mark.parametrize("name", ["notes.txt", "sge_resnet18.pth.tar"])
def test_unreadable_weights_are_refused_in_one_line(
    train_script, tmp_path, capsys, name
):
    path = str(tmp_path / name)
    if name.endswith(".txt"):
        with open(path, "w") as f:
            f.write("lr 0.1, 100 epochs\n")
    else:
        _truncated_checkpoint(path)
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(
            ["--weights", path, "--output-dir", str(tmp_path / "run")]
        )
    assert exit_info.value.code == 2
    _assert_one_line_error(
        capsys.readouterr().err,
        f"--weights {path} cannot be read (",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_dir_that_cannot_be_a_directory_is_refused(
    train_script, tmp_path, capsys, where
):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a directory")
    out = notes if where == "a file" else notes / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_script.main(["--output-dir", str(out)])
    assert exit_info.value.code == 2
    message = (
        "is a file, not a directory"
        if where == "a file"
        else f"cannot be created: {notes} is a file"
    )
    _assert_one_line_error(
        capsys.readouterr().err, f"--output-dir {out} {message}"
    )
    assert notes.read_text() == "not a directory"


def _keras_weights(path):
    """A (tiny) Keras weights file: enough for the arguments to be read."""
    import keras

    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="predictions")]
    )
    model.save_weights(path)
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            [],
            "--epochs 1 leaves no room for the 2 head epochs of the "
            "fine-tuning default: pass --head-epochs 1 or less as well",
        ),
        (
            ["--head-epochs", "3"],
            "--head-epochs must be in [0, --epochs 1], got 3",
        ),
    ],
)
def test_head_epochs_checks_blame_the_right_option(
    train_script, tmp_path, capsys, extra, message
):
    root = write_image_folder(str(tmp_path / "images"), 1, 1)
    weights = _keras_weights(str(tmp_path / "pretrained.weights.h5"))
    fine_tune = ["--data", root, "--weights", weights, "--epochs", "1"]

    # Evaluating trains nothing: the head epochs do not matter.
    args = train_script.parse_args(fine_tune + extra + ["--evaluate-only"])
    assert args.evaluate_only and args.epochs == 1

    with pytest.raises(SystemExit) as exit_info:
        train_script.parse_args(fine_tune + extra)
    assert exit_info.value.code == 2
    _assert_one_line_error(capsys.readouterr().err, message)


def test_evaluate_only_without_weights_needs_a_run_with_backups(
    train_script, tmp_path, capsys
):
    out = tmp_path / "run"
    assert train_script.main(["--evaluate-only", "--output-dir", str(out)]) == 2
    _assert_one_line_error(
        capsys.readouterr().err,
        "--evaluate-only needs a trained model, and there is no backup in "
        f"{out / 'backup'}: pass --weights FILE",
    )
    assert not out.exists()


def test_a_run_directory_is_bound_to_the_model_and_data_only(train_script):
    def settings(*argv):
        return train_script.run_settings(train_script.parse_args(list(argv)))

    base = settings()
    # Extending a run, or changing its recipe or machine, resumes it.
    for argv in (
        ["--epochs", "8"],
        ["--base-lr", "0.05"],
        ["--batch-size", "16"],
        ["--threads", "1"],
        ["--verbose", "0"],
        ["--cpu-devices", "2"],
        ["--seed", "3"],
    ):
        assert settings(*argv) == base, argv
    # Another model or other data does not.
    for argv in (
        ["--arch", "resnet34"],
        ["--groups", "none"],
        ["--image-size", "64"],
        ["--dataset", "cluttered-digits"],
        ["--mixed-precision", "bfloat16"],
    ):
        assert settings(*argv) != base, argv


def test_a_run_directory_names_what_differs(tmp_path):
    from examples.training import rundir

    recorded = {"--arch": "resnet18", "classes": ["cat", "dog", "owl"]}
    rundir.record(str(tmp_path), recorded)
    rundir.check(str(tmp_path), dict(recorded))
    with pytest.raises(rundir.RunDirectoryError) as error:
        rundir.check(
            str(tmp_path), {"--arch": "resnet50", "classes": ["cat", "dog"]}
        )
    assert str(error.value).startswith(
        f"{tmp_path} holds a run of another model or data: --arch was "
        "resnet18, now resnet50; classes differ (3 then, 2 now, gone: 'owl')"
    )
    assert "pass --fresh to start over" in str(error.value)


def test_help_documents_every_option(train_script):
    parser = train_script.build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
    text = parser.format_help()
    for phrase in (
        "COUPLED",
        "DECOUPLED",
        "GLOBAL batch",
        "TF_CONFIG",
        "resume",
    ):
        assert phrase in text


def _assert_one_line_error(stderr, message):
    lines = [
        line
        for line in stderr.splitlines()
        if line.startswith("train.py: error:")
    ]
    assert len(lines) == 1 and message in lines[0], stderr[-2000:]
    assert "Traceback" not in stderr
