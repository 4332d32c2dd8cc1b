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
import sys

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


# What a checkpoint file is usually called, for pointing into a folder.
_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar")
# A Git LFS pointer: what a clone without `git lfs` holds instead of the file.
_LFS_POINTER = b"version https://git-lfs"


def check_checkpoint_path(path):
    """Returns `path` if it names a file; refuses a missing path or a folder.

    Checked before torch sees the path, whose own errors for these say
    neither what is wrong nor which argument it was.

    Raises:
        FileNotFoundError: nothing is at `path`.
        IsADirectoryError: `path` is a folder.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        inside = sorted(
            name for name in os.listdir(path) if name.endswith(_SUFFIXES)
        )[:5]
        raise IsADirectoryError(
            f"{path!r} is a directory, not a checkpoint file: give the path of "
            "the .pth/.pth.tar/.pt file"
            + (f" (it holds {inside})." if inside else ".")
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    return path


def read_checkpoint(path):
    """Loads a torch checkpoint safely: CPU, `weights_only=True`.

    Raises:
        FileNotFoundError, IsADirectoryError: see `check_checkpoint_path`.
        ValueError: the file is not a PyTorch checkpoint, or it holds
            objects that `weights_only=True` does not allow.
    """
    torch = _import_torch()
    path = check_checkpoint_path(path)
    try:
        with _allow_numpy_scalars(torch):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # e.g. permission denied: the system's message says it all.
    except Exception as error:  # torch raises many types for a bad file.
        # `from None`: torch's own message advises `weights_only=False`,
        # which would let the file run code; ours says what to do instead.
        raise _unreadable(path, error) from None


def _unreadable(path, error):
    """The ValueError for a file `torch.load(weights_only=True)` refused."""
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if refused and not _cut_short(refused.group(1)):
        return ValueError(
            f"The PyTorch checkpoint {path!r} holds an object that keras_sge "
            "will not unpickle (it loads checkpoints with weights_only=True "
            "so that a file cannot run code; only tensors, plain Python "
            "values and numpy scalars are allowed). Refused: "
            f"{refused.group(1)}. If you trust the "
            "file, re-save just its state_dict with torch and convert that."
        )
    with open(path, "rb") as file:
        lfs = file.read(len(_LFS_POINTER)) == _LFS_POINTER
    # torch's first sentence, unless it is the advice to drop weights_only.
    sentence = str(error).strip().split("\n")[0].split(". ")[0][:160]
    detail = type(error).__name__ + (
        f": {sentence}" if sentence and "weights_only" not in sentence else ""
    )
    advice = (
        "it is a Git LFS pointer, not the file: fetch it with `git lfs pull`"
        if lfs
        else "it may be truncated or not a checkpoint at all: copy or "
        "download it again"
    )
    return ValueError(
        f"{path!r} is not a PyTorch checkpoint (could not be read by "
        f"torch.load(weights_only=True): {detail}); {advice}."
    )


def _cut_short(name):
    """Whether a refused global's name was cut by the end of a truncated file.

    A legacy (pre-zip) file cut inside its pickle ends mid-name, e.g.
    `torch._utils._rebui` or `collectio.`: told apart from a real class by
    an empty part or by an already imported module that lacks it. Nothing
    is imported to find out.
    """
    module, _, attribute = name.rpartition(".")
    if not module or not attribute:
        return True
    return module in sys.modules and not hasattr(sys.modules[module], attribute)


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
    _check_finite(state, source)
    return state


def _check_finite(state, source):
    """Refuses NaN/Inf weights, which a diverged training run saves.

    They would convert and load silently, and show only as NaN outputs.
    """
    bad = {
        key: int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        for key, value in state.items()
    }
    bad = {key: count for key, count in bad.items() if count}
    if not bad:
        return
    key, count = next(iter(bad.items()))
    others = len(bad) - 1
    others = (
        f" ({others} more tensor{'s' * (others > 1)} too)" if others else ""
    )
    raise ValueError(
        f"The {source} holds non-finite weights: {key!r} has {count} NaN/Inf "
        f"values (of {np.size(state[key])}){others}. The training run diverged "
        "or the file is damaged: convert an earlier checkpoint of the run."
    )


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
