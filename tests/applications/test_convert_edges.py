"""`python -m keras_sge.convert` against the mistakes its users make.

Each mistake ends in a one-line refusal (what is wrong, the value, what to
do) with exit status 1, or in the right result; no output is ever
half-written, and an existing one is replaced only with `--overwrite`.
The commands run in-process through `convert.main`; the checkpoints are
written here with torch (the tests that read one skip without it, those
that write a preset without keras_hub).
"""

import importlib.util
import os

import keras
import numpy as np
import pytest

from keras_sge import applications
from keras_sge import convert
from tests.applications import parity

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_HUB = importlib.util.find_spec("keras_hub") is not None
requires_torch = pytest.mark.skipif(
    not HAS_TORCH, reason="torch is not installed"
)
requires_hub = pytest.mark.skipif(
    not HAS_HUB, reason="keras_hub is not installed"
)

CLASSES = 10  # the test checkpoint's; ImageNet's 1000 would add nothing.


def save_checkpoint(path, state_dict, legacy=False):
    """Saves `state_dict` as PytorchInsight does: `module.` keys in a dict."""
    import torch

    tensors = {
        f"module.{key}": torch.from_numpy(value)
        for key, value in state_dict.items()
    }
    torch.save(
        {"epoch": 100, "state_dict": tensors},
        path,
        _use_new_zipfile_serialization=not legacy,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An official-layout SGE-ResNet-18 checkpoint with random weights."""
    if not HAS_TORCH:
        pytest.skip("torch is not installed")
    path = tmp_path_factory.mktemp("checkpoint") / "sge_resnet18.pth.tar"
    save_checkpoint(path, parity.random_state_dict(18, 64, CLASSES, seed=4))
    return path


def run(capsys, *argv):
    """`(exit status, stdout, stderr)` of the command, run quietly."""
    status = convert.main([str(arg) for arg in argv] + ["--quiet"])
    out, err = capsys.readouterr()
    return status, out, err


def files(folder):
    """Every path under `folder`, hidden ones too: what a command left."""
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, dirs, names in os.walk(folder)
        for name in dirs + names
    )


def assert_refused(status, err, *fragments):
    assert status == 1
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


# --------------------------------------------------------------------------
# Overrides: the same for --preset as for the weights file
# --------------------------------------------------------------------------


@pytest.mark.timeout(300)
@requires_hub
@pytest.mark.parametrize(
    "override,fragments",
    [
        (["--depth", "34"], ["missing keys", "layer1.2.conv1.weight"]),
        (["--groups", "none"], ["unexpected keys", "layer1.0.sge.weight"]),
        (["--classes", "5"], ["shape mismatches", "fc.weight"]),
    ],
    ids=["depth", "groups", "classes"],
)
def test_overrides_that_do_not_fit_are_refused_for_both_outputs(
    checkpoint, tmp_path, capsys, override, fragments
):
    # They used to be ignored by --preset, which wrote the checkpoint's own
    # SGE-ResNet-18 and exited 0.
    for output in (["--preset", tmp_path / "p"], [tmp_path / "w.weights.h5"]):
        status, _, err = run(capsys, checkpoint, *output, *override)
        assert_refused(status, err, *fragments, "SGE-ResNet-18")
        assert files(tmp_path) == []


@pytest.mark.parametrize("classes", ["0", "-3"])
def test_non_positive_classes_are_refused(tmp_path, capsys, classes):
    # Refused before the file is read: any file will do, no torch needed.
    src = tmp_path / "sge_resnet18.pth.tar"
    src.write_bytes(b"PK\x03\x04 not read")
    status, _, err = run(
        capsys, src, tmp_path / "w.weights.h5", "--classes", classes
    )
    assert_refused(status, err, f"Received: classes={classes}")
    assert files(tmp_path) == ["sge_resnet18.pth.tar"]
    with pytest.raises(ValueError, match="classes=0"):
        convert.convert(src, tmp_path / "w.weights.h5", classes=0)
    if HAS_HUB:
        from keras_sge import hub

        with pytest.raises(ValueError, match="classes=0"):
            hub.convert_to_preset(src, tmp_path / "p", classes=0)
    assert files(tmp_path) == ["sge_resnet18.pth.tar"]


# --------------------------------------------------------------------------
# Existing outputs and interrupted saves
# --------------------------------------------------------------------------


def interrupted_save(self, path, *args, **kwargs):
    """A save that dies half-way (Ctrl-C, a kill): a partial HDF5 file."""
    path = str(path)
    if not path.endswith(".h5"):  # a preset folder
        os.makedirs(path, exist_ok=True)
        path = os.path.join(path, "model.weights.h5")
    with open(path, "wb") as file:
        file.write(b"\x89HDF\r\n\x1a\n half")
    raise KeyboardInterrupt


@pytest.mark.timeout(300)
@requires_torch
def test_existing_weights_file_needs_overwrite(
    checkpoint, tmp_path, capsys, monkeypatch
):
    dst = tmp_path / "out" / "sge_resnet18.weights.h5"
    dst.parent.mkdir()
    dst.write_bytes(b"the user's old file")
    status, _, err = run(capsys, checkpoint, dst)
    assert_refused(status, err, str(dst), "already exists", "--overwrite")
    assert dst.read_bytes() == b"the user's old file"

    # Killed mid-save: the old file stays, and no temporary file.
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "save_weights", interrupted_save)
        with pytest.raises(KeyboardInterrupt):
            run(capsys, checkpoint, dst, "--overwrite")
    assert dst.read_bytes() == b"the user's old file"
    assert files(tmp_path) == ["out", "out/sge_resnet18.weights.h5"]

    assert run(capsys, checkpoint, dst, "--overwrite")[0] == 0
    assert files(tmp_path) == ["out", "out/sge_resnet18.weights.h5"]
    applications.SGEResNet18(
        weights=str(dst), classes=CLASSES, input_shape=(32, 32, 3)
    )


@pytest.mark.timeout(300)
@requires_torch
def test_interrupted_save_writes_nothing(
    checkpoint, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(keras.Model, "save_weights", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        run(capsys, checkpoint, tmp_path / "new.weights.h5")
    assert files(tmp_path) == []


@pytest.mark.timeout(300)
@requires_hub
def test_existing_preset_needs_overwrite(
    checkpoint, tmp_path, capsys, monkeypatch
):
    from keras_sge.hub import SGEResNetImageClassifier

    preset = tmp_path / "preset"
    # Overrides that fit the checkpoint apply, and write its preset.
    fitting = ["--depth", "18", "--groups", "64", "--classes", str(CLASSES)]
    assert run(capsys, checkpoint, "--preset", preset, *fitting)[0] == 0
    written = files(tmp_path)
    assert "preset/task.weights.h5" in written, written
    task_weights = (preset / "task.weights.h5").read_bytes()

    # Refused before anything is written, the weights file included.
    status, _, err = run(
        capsys, checkpoint, tmp_path / "w.weights.h5", "--preset", preset
    )
    assert_refused(status, err, str(preset), "--overwrite")
    assert files(tmp_path) == written

    # Killed mid-save: the old preset stays whole, and no temporary folder.
    with monkeypatch.context() as patch:
        patch.setattr(
            SGEResNetImageClassifier, "save_to_preset", interrupted_save
        )
        with pytest.raises(KeyboardInterrupt):
            run(capsys, checkpoint, "--preset", preset, "--overwrite")
    assert files(tmp_path) == written
    assert (preset / "task.weights.h5").read_bytes() == task_weights

    assert run(capsys, checkpoint, "--preset", preset, "--overwrite")[0] == 0
    assert files(tmp_path) == written


@requires_hub
def test_overwrite_never_deletes_a_folder_that_is_no_preset(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"a cat")
    src = tmp_path / "sge_resnet18.pth.tar"
    src.write_bytes(b"not read")
    status, _, err = run(capsys, src, "--preset", folder, "--overwrite")
    assert_refused(status, err, "only a KerasHub preset", "cat.jpg")
    assert (folder / "cat.jpg").read_bytes() == b"a cat"


# --------------------------------------------------------------------------
# Non-finite weights
# --------------------------------------------------------------------------


@pytest.mark.timeout(300)
@requires_torch
def test_non_finite_weights_are_refused(tmp_path, capsys):
    state = parity.random_state_dict(18, 64, CLASSES, seed=4)
    state["layer2.0.conv1.weight"][0, 0, 0, :2] = np.nan
    state["fc.bias"][3] = np.inf
    src = tmp_path / "diverged.pth.tar"
    save_checkpoint(src, state)
    dst = tmp_path / "diverged.weights.h5"
    status, _, err = run(capsys, src, dst)
    assert_refused(
        status, err, "'layer2.0.conv1.weight' has 2 NaN/Inf", "1 more tensor"
    )
    assert files(tmp_path) == ["diverged.pth.tar"]
    # The builders read checkpoints the same way.
    with pytest.raises(ValueError, match="non-finite weights"):
        applications.SGEResNet18(
            weights=str(src), classes=CLASSES, input_shape=(32, 32, 3)
        )


# --------------------------------------------------------------------------
# Sources that are not checkpoints
# --------------------------------------------------------------------------


def test_missing_checkpoint(tmp_path, capsys):
    src = tmp_path / "sge_resnet50.pth.tar"
    status, _, err = run(capsys, src, tmp_path / "w.weights.h5")
    assert_refused(status, err, f"checkpoint file not found: {str(src)!r}")
    assert "`weights` argument" not in err
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        convert.convert(src, tmp_path / "w.weights.h5")
    assert files(tmp_path) == []


def test_directory_as_checkpoint(tmp_path, capsys):
    (tmp_path / "model_best.pth.tar").write_bytes(b"not read")
    status, _, err = run(capsys, tmp_path, tmp_path / "w.weights.h5")
    assert_refused(status, err, "is a directory", "model_best.pth.tar")
    assert "No such file" not in err
    with pytest.raises(IsADirectoryError, match="is a directory"):
        convert.convert(tmp_path, tmp_path / "w.weights.h5")
    assert files(tmp_path) == ["model_best.pth.tar"]


def truncated(path, checkpoint, kind):
    """`path`: a download or copy that stopped short."""
    if kind == "zip_truncated":
        data = checkpoint.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return
    # torch's pre-1.6 format, cut in its tensor data or inside the pickle
    # (mid-name: "torch._utils._rebui" must not read as a refused class).
    fc = {"fc.weight": np.ones((CLASSES, 512), "float32")}
    save_checkpoint(path, fc, legacy=True)
    data = path.read_bytes()
    end = data.index(b"_rebuild_tensor") + 5 if "pickle" in kind else -100
    path.write_bytes(data[:end])


@requires_torch
@pytest.mark.parametrize(
    "kind", ["text", "zip_truncated", "legacy_truncated", "legacy_pickle_cut"]
)
def test_unreadable_checkpoint(checkpoint, tmp_path, capsys, kind):
    src = tmp_path / "sge_resnet18.pth.tar"
    if kind == "text":
        src.write_text("not a checkpoint, just notes\n")
    else:
        truncated(src, checkpoint, kind)
    status, _, err = run(capsys, src, tmp_path / "w.weights.h5")
    assert_refused(
        status,
        err,
        f"{str(src)!r} is not a PyTorch checkpoint",
        "torch.load(weights_only=True)",
    )
    # Loading with weights_only=False would let the file run code.
    assert "weights_only=False" not in err and "`False`" not in err
    with pytest.raises(ValueError, match="not a PyTorch checkpoint") as info:
        convert.convert(src, tmp_path / "w.weights.h5")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert files(tmp_path) == ["sge_resnet18.pth.tar"]
