"""Converts reference PyTorch SGE-ResNet checkpoints to Keras.

Command line:

    python -m keras_sge.convert sge_resnet50.pth.tar sge_resnet50.weights.h5

reads an official PytorchInsight checkpoint (a training-checkpoint dict with
a `state_dict` of `module.`-prefixed keys), a bare `state_dict`, or a
torchvision ResNet `state_dict`; infers the depth, the SGE groups and the
number of classes from its keys and shapes (`--depth`, `--groups`,
`--classes` override); builds the matching `keras_sge.applications` model
and writes its Keras weights file, loadable with
`SGEResNet50(weights="sge_resnet50.weights.h5")`.

The same functions serve `weights="checkpoint.pth.tar"` in the application
builders. torch is imported only here, and only when a checkpoint is read;
every checkpoint is loaded with `weights_only=True`, so it cannot run code.

Layout differences handled here: torch convolution weights are
(out, in, kh, kw) and Keras kernels (kh, kw, in, out); `fc.weight` is
(classes, in) and the Keras kernel (in, classes); SGE's `weight`/`bias`
are (1, G, 1, 1) and Keras's `gamma`/`beta` (G,). BN `num_batches_tracked`
has no Keras counterpart and is skipped.
"""

import argparse
import contextlib
import os
import re
import sys

import numpy as np

# Keras layer name -> torch module path, for the names that
# keras_sge.applications.resnet gives its layers.
_STEM_MODULES = {"conv1_conv": "conv1", "conv1_bn": "bn1", "predictions": "fc"}
_BLOCK_LAYER = re.compile(r"^conv(?P<stage>[2-5])_block(?P<block>\d+)_(?:(?P<index>\d)_(?P<kind>conv|bn)|sge)$")


def torch_module_path(layer_name):
    """The torch module path for a Keras layer name, or None if it has none.

    `conv3_block1_2_conv` -> `layer2.0.conv2`; `conv3_block1_0_bn` (the
    shortcut) -> `layer2.0.downsample.1`; `conv3_block1_sge` ->
    `layer2.0.sge`; `predictions` -> `fc`.
    """
    if layer_name in _STEM_MODULES:
        return _STEM_MODULES[layer_name]
    match = _BLOCK_LAYER.match(layer_name)
    if match is None:
        return None
    prefix = f"layer{int(match['stage']) - 1}.{int(match['block']) - 1}"
    if match["index"] is None:
        return prefix + ".sge"
    if match["index"] == "0":
        return prefix + (".downsample.0" if match["kind"] == "conv" else ".downsample.1")
    return f"{prefix}.{match['kind']}{match['index']}"


# The torch->Keras layout changes.
def _conv_kernel(array):
    return np.transpose(array, (2, 3, 1, 0))


def _dense_kernel(array):
    return np.transpose(array)


def _sge_vector(array):
    return np.reshape(array, (-1,))


def _identity(array):
    return array


def torch_shape(keras_shape, to_keras):
    """The torch shape that `to_keras` turns into `keras_shape`."""
    if to_keras is _conv_kernel:
        kh, kw, cin, cout = keras_shape
        return (cout, cin, kh, kw)
    if to_keras is _dense_kernel:
        return tuple(reversed(keras_shape))
    if to_keras is _sge_vector:
        return (1, keras_shape[0], 1, 1)
    return tuple(keras_shape)


def _parameters(layer):
    """`((torch parameter, torch->Keras), ...)` in `layer.weights` order."""
    import keras

    from keras_sge.layers.sge import SGE

    if isinstance(layer, keras.layers.Conv2D):
        return (("weight", _conv_kernel),)
    if isinstance(layer, keras.layers.BatchNormalization):
        return (("weight", _identity), ("bias", _identity), ("running_mean", _identity), ("running_var", _identity))
    if isinstance(layer, SGE):
        return (("weight", _sge_vector), ("bias", _sge_vector))
    if isinstance(layer, keras.layers.Dense):
        return (("weight", _dense_kernel), ("bias", _identity))
    return None


# Torch state that has no Keras counterpart.
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def weight_mapping(model):
    """Yields `(layer, [(torch_key, to_keras), ...])` for each layer with weights.

    The list follows `layer.weights` order, ready for `layer.set_weights`.
    """
    for layer in model.layers:
        if not layer.weights:
            continue
        module = torch_module_path(layer.name)
        parameters = _parameters(layer)
        if module is None or parameters is None or len(parameters) != len(layer.weights):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) of model "
                f"{model.name!r} has no counterpart in the reference PyTorch "
                "network; only keras_sge.applications models can be converted."
            )
        yield layer, [(f"{module}.{param}", to_keras) for param, to_keras in parameters]


# ---------------------------------------------------------------------------
# Reading checkpoints
# ---------------------------------------------------------------------------


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
    whichever numpy runs here (numpy 1.x has no `numpy._core`).
    """
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    scalar = multiarray.scalar
    names = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [scalar, *((scalar, name) for name in names), np.dtype, *dtype_classes]


def _allow_numpy_scalars(torch):
    # `safe_globals` is torch >= 2.5; older versions refuse numpy scalars,
    # which then surfaces as the clear "will not unpickle" error below.
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return safe_globals(_numpy_scalar_globals()) if safe_globals else contextlib.nullcontext()


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
            + (f" with keys {sorted(map(str, checkpoint))[:10]}" if isinstance(checkpoint, dict) else "")
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
    return state_dict_from_checkpoint(read_checkpoint(path), source=f"file {os.fspath(path)!r}")


# ---------------------------------------------------------------------------
# Inferring the architecture
# ---------------------------------------------------------------------------


def infer_architecture(state_dict):
    """Infers `{"depth", "groups", "classes"}` from a state_dict's keys and shapes.

    Blocks per stage come from the `layer{1..4}.{i}` keys, the block kind
    from `conv3` (Bottleneck) being present, `groups` from the SGE weight
    shape (None without SGE) and `classes` from `fc.weight` (None without
    a classifier).

    Raises:
        ValueError: the keys match none of ResNet-18/34/50/101/152.
    """
    from keras_sge.applications.resnet import ARCHITECTURES

    blocks = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for key in state_dict for m in [re.match(rf"layer{stage}\.(\d+)\.", key)] if m}
        blocks.append(max(indices) + 1 if indices else 0)
    kind = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    depths = [d for d, arch in ARCHITECTURES.items() if arch == (kind, tuple(blocks))]
    if not depths:
        raise ValueError(
            "The checkpoint's keys match no SGE-ResNet/ResNet architecture: found "
            f"{kind} blocks per stage {blocks}; known: "
            + ", ".join(f"ResNet-{d} {k} {list(b)}" for d, (k, b) in ARCHITECTURES.items())
            + f". First keys: {sorted(state_dict)[:8]}"
        )
    sge = state_dict.get("layer1.0.sge.weight")
    fc = state_dict.get("fc.weight")
    return {
        "depth": depths[0],
        "groups": None if sge is None else int(np.size(sge)),
        "classes": None if fc is None else int(fc.shape[0]),
    }


def describe_architecture(arch):
    name = f"{'SGE-' if arch['groups'] is not None else ''}ResNet-{arch['depth']}"
    groups = f"groups={arch['groups']}" if arch["groups"] is not None else "no SGE"
    classes = f"{arch['classes']} classes" if arch["classes"] is not None else "no classifier"
    return f"{name} ({groups}, {classes})"


# ---------------------------------------------------------------------------
# Assigning the weights
# ---------------------------------------------------------------------------


def _mismatch_report(model, missing, unexpected, mismatched, state_dict, source):
    def listing(keys):
        shown = ", ".join(keys[:12])
        return shown + (f", ... ({len(keys)} in all)" if len(keys) > 12 else "")

    parts = [f"Cannot load the {source} into model {model.name!r}:"]
    if missing:
        parts.append(f"missing keys (the model needs them, the checkpoint lacks them): {listing(missing)}.")
    if unexpected:
        parts.append(f"unexpected keys (in the checkpoint, not in the model): {listing(unexpected)}.")
    if mismatched:
        parts.append("shape mismatches: " + listing(mismatched) + ".")
    try:
        parts.append(f"The checkpoint looks like {describe_architecture(infer_architecture(state_dict))}.")
    except ValueError:
        pass
    return " ".join(parts)


def set_weights_from_state_dict(model, state_dict, source="checkpoint", progress=None):
    """Assigns a reference state_dict to a keras_sge.applications model.

    Every key is checked before any weight is set: missing keys, unexpected
    keys and shape mismatches are all reported, by name, in one ValueError.
    A model without `predictions` (`include_top=False`) ignores the
    checkpoint's `fc.*` classifier.

    Args:
        model: a model built by `keras_sge.applications`.
        state_dict: `{torch key: array}`, `module.` prefixes removed.
        source: how to name the checkpoint in error messages.
        progress: optional callable, called once per assigned layer with
            the number of layers assigned so far.
    """
    mapping = list(weight_mapping(model))
    missing, mismatched, assignments = [], [], []
    used = set()
    for layer, parameters in mapping:
        values = []
        for (key, to_keras), variable in zip(parameters, layer.weights):
            used.add(key)
            if key not in state_dict:
                missing.append(key)
                continue
            expected = torch_shape(tuple(variable.shape), to_keras)
            if tuple(state_dict[key].shape) != expected:
                mismatched.append(f"{key}: checkpoint {tuple(state_dict[key].shape)}, model {expected}")
                continue
            values.append(to_keras(state_dict[key]))
        assignments.append((layer, values))

    has_classifier = any(layer.name == "predictions" for layer, _ in mapping)
    unexpected = [
        key
        for key in state_dict
        if key not in used
        and not key.endswith(_IGNORED_SUFFIXES)
        and (has_classifier or not key.startswith("fc."))
    ]
    if missing or unexpected or mismatched:
        raise ValueError(_mismatch_report(model, missing, unexpected, mismatched, state_dict, source))
    for count, (layer, values) in enumerate(assignments, 1):
        layer.set_weights(values)
        if progress is not None:
            progress(count)


def load_checkpoint_into(model, path):
    """Loads a PyTorch checkpoint file into a keras_sge.applications model."""
    state_dict = load_state_dict(path)
    set_weights_from_state_dict(model, state_dict, source=f"checkpoint {os.fspath(path)!r}")


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def convert(src, dst, depth=None, groups="infer", classes=None, verbose=True):
    """Converts a reference checkpoint into a Keras `.weights.h5` file.

    Args:
        src: path of the PyTorch checkpoint.
        dst: path of the Keras weights file to write (`.weights.h5`).
        depth, groups, classes: override what is inferred from the
            checkpoint (`groups=None` means no SGE).
        verbose: print what is inferred and a progress bar.

    Returns:
        The Keras model holding the converted weights.
    """
    import keras

    from keras_sge.applications.resnet import SGEResNet

    dst = os.fspath(dst)
    if not dst.endswith(".weights.h5"):
        raise ValueError(f"The output must be a Keras weights file ending in '.weights.h5'. Received: dst={dst!r}")
    say = print if verbose else (lambda *args, **kwargs: None)
    say(f"Reading {os.fspath(src)} ...")
    state_dict = load_state_dict(src)
    arch = infer_architecture(state_dict)
    arch.update({k: v for k, v in (("depth", depth), ("classes", classes)) if v is not None})
    if groups != "infer":
        arch["groups"] = groups
    say(f"Architecture: {describe_architecture(arch)}")
    model = SGEResNet(
        arch["depth"],
        include_top=arch["classes"] is not None,
        classes=arch["classes"] or 1000,
        classifier_activation=None,
        groups=arch["groups"],
        input_shape=(None, None, 3) if keras.config.image_data_format() == "channels_last" else (3, None, None),
    )
    layers = sum(1 for _ in weight_mapping(model))
    bar = keras.utils.Progbar(layers, unit_name="layer") if verbose else None
    set_weights_from_state_dict(
        model, state_dict, source=f"checkpoint {os.fspath(src)!r}", progress=bar.update if bar else None
    )
    model.save_weights(dst)
    say(f"Wrote {dst}: load it with keras_sge.applications.SGEResNet{arch['depth']}(weights={dst!r}, ...)")
    return model


def _parse_groups(value):
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--groups must be an integer or 'none'. Received: {value!r}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_sge.convert",
        description="Convert a PyTorch SGE-ResNet/ResNet checkpoint (implus/PytorchInsight "
        "or torchvision layout) into a Keras .weights.h5 file for keras_sge.applications.",
    )
    parser.add_argument("src", help="PyTorch checkpoint (.pth, .pth.tar, .pt)")
    parser.add_argument("dst", help="Keras weights file to write (.weights.h5)")
    parser.add_argument("--depth", type=int, choices=(18, 34, 50, 101, 152), help="override the inferred depth")
    parser.add_argument("--groups", help="override the SGE groups ('none': a ResNet without SGE)")
    parser.add_argument("--classes", type=int, help="override the inferred number of classes")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    try:
        groups = "infer" if args.groups is None else _parse_groups(args.groups)
        convert(args.src, args.dst, depth=args.depth, groups=groups, classes=args.classes, verbose=not args.quiet)
    except (ValueError, ImportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
