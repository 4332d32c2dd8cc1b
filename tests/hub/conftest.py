"""Fixtures of the KerasHub tests: an official-layout checkpoint, made once."""

import importlib.util

import pytest


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory):
    """`(path, torch model)`: an SGE-ResNet-18 checkpoint as PytorchInsight saves it.

    Random weights (the parity tests' seeded ones), 1000 classes, written
    by the PyTorch reference itself; skips without torch.
    """
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    from tests.applications import parity

    model = parity.torch_model(
        18, 64, 1000, parity.random_state_dict(18, seed=11)
    )
    path = tmp_path_factory.mktemp("checkpoint") / "sge_resnet18.pth.tar"
    parity.save_official_checkpoint(model, path)
    return path, model
