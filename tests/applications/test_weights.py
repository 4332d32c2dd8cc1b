"""Loading reference PyTorch checkpoints: parity, layouts, errors, the command.

The fixture tests run everywhere (weights regenerated from the fixture's
seed, compared with the committed torch logits); the `needs_torch` tests
write real checkpoints with the PyTorch reference and skip without torch.
"""

import importlib.util
import os
import re
import sys

import keras
import numpy as np
import pytest

from keras_sge import applications
from keras_sge import convert
from keras_sge.applications import torch_checkpoint
from keras_sge.applications import torch_mapping
from tests import harness
from tests.applications import parity
from tests.fixtures.applications.make_parity_fixtures import CASES
from tests.fixtures.applications.make_parity_fixtures import fixture_path

HAS_TORCH = importlib.util.find_spec("torch") is not None
requires_torch = pytest.mark.skipif(
    not HAS_TORCH, reason="torch is not installed"
)


def load_fixture(depth):
    with np.load(fixture_path(depth)) as data:
        return {key: data[key] for key in data.files}


# --------------------------------------------------------------------------
# Parity from the committed fixtures (no torch needed)
# --------------------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("depth", [case[0] for case in CASES])
def test_parity_with_committed_torch_logits(depth):
    fixture = load_fixture(depth)
    groups, classes, seed = (
        int(fixture["groups"]),
        int(fixture["classes"]),
        int(fixture["seed"]),
    )
    model = parity.keras_model(depth, groups, classes)
    torch_mapping.set_weights_from_state_dict(
        model, parity.random_state_dict(depth, groups, classes, seed)
    )
    relative = parity.assert_logits_match(
        parity.keras_logits(model, fixture["images"]), fixture["torch_logits"]
    )
    print(f"ResNet-{depth}: max abs diff / max |logit| = {relative:.2e}")


def test_fixtures_are_small():
    for depth, *_ in CASES:
        assert os.path.getsize(fixture_path(depth)) < 500_000


# --------------------------------------------------------------------------
# Live parity through `weights=` (official layout, both torch formats)
# --------------------------------------------------------------------------


def reference_model(depth, groups=64, classes=1000, seed=0):
    return parity.torch_model(
        depth,
        groups,
        classes,
        parity.random_state_dict(depth, groups, classes, seed),
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("depth", [case[0] for case in CASES])
@pytest.mark.needs_torch
@requires_torch
def test_official_checkpoint_parity(depth, legacy, tmp_path):
    fixture = load_fixture(depth)
    groups, classes, seed = (
        int(fixture["groups"]),
        int(fixture["classes"]),
        int(fixture["seed"]),
    )
    torch_model = reference_model(depth, groups, classes, seed)
    expected = parity.torch_logits(torch_model, fixture["images"])
    # The committed fixture still describes the reference.
    parity.assert_logits_match(fixture["torch_logits"], expected, relative=1e-5)

    path = tmp_path / f"sge_resnet{depth}.pth.tar"
    parity.save_official_checkpoint(torch_model, path, legacy=legacy)
    model = applications.resnet.SGEResNet(
        depth,
        weights=str(path),
        input_shape=(64, 64, 3),
        classes=classes,
        classifier_activation=None,
    )
    relative = parity.assert_logits_match(
        parity.keras_logits(model, fixture["images"]), expected
    )
    print(
        f"ResNet-{depth} ({'legacy' if legacy else 'zip'}): "
        f"max abs diff / max |logit| = {relative:.2e}"
    )


@pytest.mark.needs_torch
@requires_torch
def test_bare_state_dict_and_torchvision_resnet(tmp_path):
    # 64x64: at 32x32 the last stage is 1x1, where the reference SGE gives NaN.
    images = parity.random_images(3)
    for groups in (64, None):  # None: a plain torchvision ResNet-18 state_dict.
        torch_model = reference_model(18, groups=groups, classes=10, seed=5)
        path = str(tmp_path / f"bare_{groups}.pth")
        import torch

        torch.save(torch_model.state_dict(), path)
        model = applications.SGEResNet18(
            weights=path,
            groups=groups,
            classes=10,
            input_shape=(64, 64, 3),
            classifier_activation=None,
        )
        parity.assert_logits_match(
            parity.keras_logits(model, images),
            parity.torch_logits(torch_model, images),
        )


@pytest.mark.needs_torch
@requires_torch
def test_include_top_false_drops_the_classifier(tmp_path):
    import torch

    torch_model = reference_model(18, classes=1000, seed=6)
    path = tmp_path / "ckpt.pth.tar"
    parity.save_official_checkpoint(torch_model, path)
    backbone = applications.SGEResNet18(
        include_top=False,
        pooling="avg",
        weights=str(path),
        input_shape=(64, 64, 3),
    )
    images = parity.random_images(4)
    x = torch.from_numpy(
        np.ascontiguousarray(
            applications.preprocess_input(images).transpose(0, 3, 1, 2)
        )
    )
    with torch.no_grad():
        m = torch_model
        features = m.avgpool(
            m.layer4(
                m.layer3(
                    m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))
                )
            )
        ).flatten(1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(
            backbone(applications.preprocess_input(images))
        ),
        features.numpy(),
        rtol=1e-4,
        atol=1e-4 * float(features.abs().max()),
    )


# --------------------------------------------------------------------------
# Errors, each naming the keys
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_state():
    return parity.random_state_dict(18, 64, 1000, seed=7)


@pytest.mark.parametrize(
    "edit,kwargs,patterns",
    [
        (
            lambda sd: sd,
            {"classes": 10},
            [
                r"shape mismatches: fc\.weight: checkpoint \(1000, 512\), model \(10, 512\)",
                r"fc\.bias",
            ],
        ),
        (
            lambda sd: {
                k: v for k, v in sd.items() if k != "layer1.0.sge.weight"
            },
            {},
            [r"missing keys .*layer1\.0\.sge\.weight"],
        ),
        (
            lambda sd: sd,
            {"groups": None},
            [
                r"unexpected keys .*layer1\.0\.sge\.weight",
                r"looks like SGE-ResNet-18 \(groups=64, 1000 classes\)",
            ],
        ),
        (
            lambda sd: {
                **sd,
                "layer4.2.conv1.weight": sd["layer4.1.conv1.weight"],
            },
            {},
            [r"unexpected keys .*layer4\.2\.conv1\.weight"],
        ),
    ],
    ids=["classes", "missing", "sge_into_plain", "unexpected"],
)
def test_mismatch_errors_name_the_keys(resnet18_state, edit, kwargs, patterns):
    model = applications.SGEResNet18(
        input_shape=(32, 32, 3), **{"classes": 1000, **kwargs}
    )
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    with pytest.raises(ValueError) as info:
        torch_mapping.set_weights_from_state_dict(
            model, edit(dict(resnet18_state))
        )
    for pattern in patterns:
        assert re.search(pattern, str(info.value)), str(info.value)
    # Nothing was assigned.
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, keras.ops.convert_to_numpy(w))


@pytest.mark.timeout(300)
@pytest.mark.needs_torch
@requires_torch
def test_resnet101_checkpoint_into_resnet50(tmp_path):
    import torch

    # Only keys and shapes matter: expanded scalars keep the file tiny.
    shapes = parity.state_dict_shapes(101, 64, 1000)
    path = str(tmp_path / "r101.pth")
    torch.save(
        {key: torch.zeros(()).expand(shape) for key, shape in shapes.items()},
        path,
    )
    with pytest.raises(ValueError) as info:
        applications.SGEResNet50(weights=path, input_shape=(32, 32, 3))
    message = str(info.value)
    assert "unexpected keys" in message and "layer3.6.conv1.weight" in message
    assert "looks like SGE-ResNet-101" in message
    assert path in message


@pytest.mark.needs_torch
@requires_torch
def test_not_a_checkpoint(tmp_path):
    import torch

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint" * 10)
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint"):
        applications.SGEResNet18(weights=str(junk), input_shape=(32, 32, 3))
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="not a model checkpoint.*Tensor"):
        torch_checkpoint.load_state_dict(tensor)
    opts = tmp_path / "opts.pth"
    torch.save({"epoch": 3, "lr": 0.1}, opts)
    with pytest.raises(ValueError, match=r"'epoch' is a int, not a tensor"):
        torch_checkpoint.load_state_dict(opts)


@pytest.mark.needs_torch
@requires_torch
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_checkpoints_cannot_run_code(tmp_path, legacy):
    import argparse

    import torch

    path = tmp_path / "with_args.pth.tar"
    torch.save({"state_dict": {"fc.bias": torch.zeros(2)},
                "args": argparse.Namespace(lr=0.1)},
               path, _use_new_zipfile_serialization=not legacy)  # fmt: skip
    with pytest.raises(
        ValueError, match=r"weights_only=True.*Refused: argparse\.Namespace"
    ):
        torch_checkpoint.load_state_dict(path)


@pytest.mark.needs_torch
@requires_torch
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_numpy_scalars_are_allowed(tmp_path, legacy):
    import torch

    path = tmp_path / "ckpt.pth.tar"
    torch.save(
        {
            "state_dict": {"module.fc.bias": torch.ones(2)},
            "best_acc": np.float64(77.5),
            "epoch": np.int64(3),
        },
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    state = torch_checkpoint.load_state_dict(path)
    assert list(state) == ["fc.bias"] and state["fc.bias"].dtype == np.float32


def test_missing_torch_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    path.write_bytes(b"PK\x03\x04 not read")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="needs torch"):
        applications.SGEResNet18(weights=str(path), input_shape=(32, 32, 3))


# --------------------------------------------------------------------------
# Architecture inference and the command
# --------------------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_infer_architecture(depth):
    # Only keys and shapes matter: broadcast scalars stand in for weights.
    shapes = parity.state_dict_shapes(depth, 64, 1000)
    state = {
        key: np.broadcast_to(np.float32(0), shape)
        for key, shape in shapes.items()
    }
    assert torch_checkpoint.infer_architecture(state) == {
        "depth": depth,
        "groups": 64,
        "classes": 1000,
    }
    plain = {
        k: v
        for k, v in state.items()
        if ".sge." not in k and not k.startswith("fc.")
    }
    assert torch_checkpoint.infer_architecture(plain) == {
        "depth": depth,
        "groups": None,
        "classes": None,
    }


def test_infer_architecture_rejects_unknown_layouts():
    with pytest.raises(
        ValueError,
        match=r"match no SGE-ResNet/ResNet architecture.*\[1, 0, 0, 0\]",
    ):
        torch_checkpoint.infer_architecture(
            {
                "conv1.weight": np.zeros((64, 3, 7, 7)),
                "layer1.0.conv1.weight": np.zeros(1),
            }
        )


@pytest.mark.timeout(300)
@pytest.mark.needs_torch
@requires_torch
def test_convert_command(tmp_path, capsys):
    torch_model = reference_model(18, classes=10, seed=11)
    src = tmp_path / "sge_resnet18.pth.tar"
    parity.save_official_checkpoint(torch_model, src, legacy=True)
    dst = tmp_path / "sge_resnet18.weights.h5"
    assert convert.main([str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "Architecture: SGE-ResNet-18 (groups=64, 10 classes)" in out
    assert "layer" in out and str(dst) in out  # progress bar and destination
    images = parity.random_images(12)
    model = applications.SGEResNet18(
        weights=str(dst),
        classes=10,
        input_shape=(64, 64, 3),
        classifier_activation=None,
    )
    parity.assert_logits_match(
        parity.keras_logits(model, images),
        parity.torch_logits(torch_model, images),
    )
    # The Keras file also serves a backbone.
    applications.SGEResNet18(
        weights=str(dst), include_top=False, input_shape=(32, 32, 3)
    )

    # Overrides: a wrong depth fails with the keys, and a clear exit status.
    assert (
        convert.main(
            [
                str(src),
                str(tmp_path / "x.weights.h5"),
                "--depth",
                "34",
                "--quiet",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "missing keys" in err and "layer1.2.conv1.weight" in err
    assert convert.main([str(src), str(tmp_path / "x.h5")]) == 1
    assert "'.weights.h5'" in capsys.readouterr().err


@pytest.mark.timeout(300)
@pytest.mark.needs_torch
@requires_torch
def test_convert_module_entry_point(tmp_path):
    import torch

    src = tmp_path / "resnet18.pth"
    torch.save(
        reference_model(18, groups=None, classes=4, seed=2).state_dict(), src
    )
    dst = tmp_path / "resnet18.weights.h5"
    stdout = harness.run_in_fresh_process(
        f"""
        import runpy, sys
        sys.argv = ["keras_sge.convert", {str(src)!r}, {str(dst)!r}, "--classes", "4"]
        try:
            runpy.run_module("keras_sge.convert", run_name="__main__")
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        """
    )
    assert "Architecture: ResNet-18 (no SGE, 4 classes)" in stdout
    assert dst.exists()
