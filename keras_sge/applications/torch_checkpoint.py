"""Reading the reference PyTorch checkpoints: safely, and what they hold.

- `load_state_dict(path)`: an official PytorchInsight checkpoint (a
  training-checkpoint dict with a `state_dict` of `module.`-prefixed keys),
  a bare `state_dict` or a torchvision ResNet's, as `{key: float32 array}`.
- `infer_architecture(state_dict)`: its depth, SGE groups and classes.

torch is imported only when a file is read, and every file is loaded with
`weights_only=True`, so that a checkpoint cannot run code.
"""

import contextlib
import os
import re

import numpy as np

from keras_sge.applications.architectures import ARCHITECTURES
from keras_sge.applications.architectures import describe


def _import_torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading a PyTorch checkpoint needs torch, which keras_sge does not "
            "install by default: `pip install torch` (CPU is enough), or convert "
            "the checkpoint once on a machine with torch and use the Keras "
            "weights file it writes."
        ) from error
    return torch


def _numpy_scalar_globals():
    """Globals that numpy scalars in legacy checkpoints unpickle through.

    2019-era training checkpoints may hold e.g. `best_acc` as a numpy
    float64, which `weights_only=True` refuses unless allow-listed. These
    rebuild plain numbers and dtypes and cannot run code. Files written
    with numpy 1.x name the scalar constructor `numpy.core.multiarray`,
    files written with numpy 2 `numpy._core.multiarray`; both are allowed,
    whichever numpy runs here.
    """
    try:
        # numpy 2. numpy 1.26 has a `numpy._core` stub without `multiarray`,
        # so `hasattr(np, "_core")` is not the test.
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    scalar = multiarray.scalar
    names = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
    dtype_classes = [
        getattr(np.dtypes, name)
        for name in dir(np.dtypes)
        if name.endswith("DType")
    ]
    return [
        scalar,
        *((scalar, name) for name in names),
        np.dtype,
        *dtype_classes,
    ]


def _allow_numpy_scalars(torch):
    # `safe_globals` is torch >= 2.5; older versions refuse numpy scalars,
    # which then surfaces as the clear "will not unpickle" error below.
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return (
        safe_globals(_numpy_scalar_globals())
        if safe_globals
        else contextlib.nullcontext()
    )


def read_checkpoint(path):
    """Loads a torch checkpoint safely: CPU, `weights_only=True`.

    Raises:
        ValueError: the file is not a PyTorch checkpoint, or it holds
            objects that `weights_only=True` does not allow.
    """
    torch = _import_torch()
    path = os.fspath(path)
    try:
        with _allow_numpy_scalars(torch):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file.
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            raise ValueError(
                f"The PyTorch checkpoint {path!r} holds an object that keras_sge "
                "will not unpickle (it loads checkpoints with weights_only=True "
                "so that a file cannot run code; only tensors, plain Python "
                "values and numpy scalars are allowed). Refused: "
                f"{refused.group(1)}. If you trust the "
                "file, re-save just its state_dict with torch and convert that."
            ) from error
        raise ValueError(
            f"{path!r} is not a PyTorch checkpoint that torch.load can read "
            f"({type(error).__name__}: {error})."
        ) from error


def state_dict_from_checkpoint(checkpoint, source="checkpoint"):
    """The model's tensors as numpy float32 arrays, keys without `module.`.

    Accepts a training-checkpoint dict holding `state_dict` (the
    PytorchInsight layout; `model` is accepted too) or a bare `state_dict`.
    """
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ValueError(
            f"The {source} is not a model checkpoint: expected a state_dict (a "
            "dict of tensors) or a dict holding one under 'state_dict'. "
            f"Received: {type(checkpoint).__name__}"
            + (
                f" with keys {sorted(map(str, checkpoint))[:10]}"
                if isinstance(checkpoint, dict)
                else ""
            )
        )
    state = {}
    for key, value in checkpoint.items():
        if not hasattr(value, "detach"):
            raise ValueError(
                f"The {source} is not a model state_dict: the value of {key!r} is a "
                f"{type(value).__name__}, not a tensor."
            )
        # DataParallel / DistributedDataParallel wrap the model as `module`.
        name = key[len("module.") :] if key.startswith("module.") else key
        state[name] = value.detach().cpu().float().numpy()
    return state


def load_state_dict(path):
    """Reads a checkpoint file into `{torch key: float32 numpy array}`."""
    return state_dict_from_checkpoint(
        read_checkpoint(path), source=f"file {os.fspath(path)!r}"
    )


def infer_architecture(state_dict):
    """Infers `{"depth", "groups", "classes"}` from a state_dict's keys and shapes.

    Blocks per stage come from the `layer{1..4}.{i}` keys, the block kind
    from `conv3` (Bottleneck) being present, `groups` from the SGE weight
    shape (None without SGE) and `classes` from `fc.weight` (None without
    a classifier).

    Raises:
        ValueError: the keys match none of ResNet-18/34/50/101/152.
    """
    blocks = []
    for stage in range(1, 5):
        indices = {
            int(m.group(1))
            for key in state_dict
            for m in [re.match(rf"layer{stage}\.(\d+)\.", key)]
            if m
        }
        blocks.append(max(indices) + 1 if indices else 0)
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    depths = [
        d for d, arch in ARCHITECTURES.items() if arch == (kind, tuple(blocks))
    ]
    if not depths:
        raise ValueError(
            "The checkpoint's keys match no SGE-ResNet/ResNet architecture: found "
            f"{kind} blocks per stage {blocks}; known: "
            + ", ".join(
                f"ResNet-{d} {k} {list(b)}"
                for d, (k, b) in ARCHITECTURES.items()
            )
            + f". First keys: {sorted(state_dict)[:8]}"
        )
    sge = state_dict.get("layer1.0.sge.weight")
    fc = state_dict.get("fc.weight")
    return {
        "depth": depths[0],
        "groups": None if sge is None else int(np.size(sge)),
        "classes": None if fc is None else int(fc.shape[0]),
    }


def describe_state_dict(state_dict):
    """E.g. `"SGE-ResNet-50 (groups=64, 1000 classes)"`; None if unknown."""
    try:
        return describe(**infer_architecture(state_dict))
    except ValueError:
        return None
