"""`python -m keras_sge.convert`: official PyTorch checkpoints to Keras files.

    python -m keras_sge.convert sge_resnet50.pth.tar sge_resnet50.weights.h5
    python -m keras_sge.convert sge_resnet50.pth.tar --preset sge_resnet50_preset

reads an official PytorchInsight checkpoint (a training-checkpoint dict with
a `state_dict` of `module.`-prefixed keys), a bare `state_dict`, or a
torchvision ResNet `state_dict`; infers the depth, the SGE groups and the
number of classes from its keys and shapes (`--depth`, `--groups`,
`--classes` override, for both outputs); builds the matching
`keras_sge.applications` model and writes its Keras weights file, loadable
with `SGEResNet50(weights="sge_resnet50.weights.h5")`, and/or a KerasHub
preset directory (`--preset`, needs the `hub` extra). Each output is
written under a temporary name and renamed into place when complete, and
an existing one is refused unless `--overwrite` is given. The reading and
the name mapping live in `keras_sge.applications` (`torch_checkpoint`,
`torch_mapping`, `from_checkpoint`); this module is the command.
"""

import argparse
import os
import sys

import keras

from keras_sge.applications import architectures
from keras_sge.applications.checkpoint_model import INFER
from keras_sge.applications.checkpoint_model import check_overrides
from keras_sge.applications.checkpoint_model import checkpoint_architecture
from keras_sge.applications.checkpoint_model import from_checkpoint
from keras_sge.applications.checkpoint_model import open_checkpoint


def convert(
    src,
    dst,
    depth=None,
    groups=INFER,
    classes=None,
    verbose=True,
    overwrite=False,
):
    """Converts a reference checkpoint into a Keras `.weights.h5` file.

    The file is written under a temporary name beside `dst` and renamed
    into place once complete, so an interrupted conversion never leaves a
    partial file at `dst`.

    Args:
        src: path of the PyTorch checkpoint.
        dst: path of the Keras weights file to write (`.weights.h5`).
        depth, groups, classes: override what is inferred from the
            checkpoint (`groups=None` means no SGE).
        verbose: print what is inferred and a progress bar.
        overwrite: replace `dst` if it exists (else it is refused).

    Returns:
        The Keras model holding the converted weights.

    Raises:
        ValueError: `dst` exists (and `overwrite` is False) or is not a
            `.weights.h5` path, a wrong override, a file that is not a
            readable checkpoint, non-finite weights, or weights that do not
            fit the architecture (the message names the keys).
        FileNotFoundError, IsADirectoryError: `src` is not a file.
    """
    dst = check_weights_destination(dst, overwrite)
    check_overrides(depth, groups, classes)
    checkpoint = open_checkpoint(src)
    say = print if verbose else (lambda *args, **kwargs: None)
    say(f"Reading {checkpoint.path} ...")
    arch = checkpoint_architecture(checkpoint, depth, groups, classes)
    say(f"Architecture: {architectures.describe(**arch)}")
    # One progress step per layer: per torch module with parameters.
    modules = {
        key.rsplit(".", 1)[0]
        for key in checkpoint.state_dict
        if not key.endswith(".num_batches_tracked")
    }
    bar = (
        keras.utils.Progbar(len(modules), unit_name="layer")
        if verbose
        else None
    )
    model = from_checkpoint(
        checkpoint,
        classifier_activation=None,
        depth=arch["depth"],
        groups=arch["groups"],
        classes=arch["classes"],
        progress=bar.update if bar else None,
    )
    _save_weights(model, dst)
    say(
        f"Wrote {dst}: load it with "
        f"keras_sge.applications.SGEResNet{arch['depth']}(weights={dst!r}, ...)"
    )
    return model


def check_weights_destination(dst, overwrite=False):
    """Returns `dst` as a str if `convert` may write it; raises otherwise."""
    dst = os.fspath(dst)
    if not dst.endswith(".weights.h5"):
        raise ValueError(
            "The output must be a Keras weights file ending in '.weights.h5'. "
            f"Received: dst={dst!r}"
        )
    if os.path.isdir(dst):
        raise ValueError(
            f"The output {dst!r} is a directory: give the path of the "
            ".weights.h5 file to write."
        )
    if os.path.exists(dst) and not overwrite:
        raise ValueError(
            f"The output {dst!r} already exists: pass --overwrite "
            "(overwrite=True in Python) to replace it, or remove it."
        )
    return dst


def _save_weights(model, dst):
    """Saves under a temporary name in `dst`'s folder, then renames it to `dst`.

    A save killed half-way would otherwise leave a truncated HDF5 file at
    `dst` that fails much later, in h5py, naming no file. The rename is
    atomic within a folder; Keras needs the `.weights.h5` suffix.
    """
    folder, name = os.path.split(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    stem = name[: -len(".weights.h5")]
    temporary = os.path.join(folder, f".{stem}.tmp-{os.getpid()}.weights.h5")
    try:
        model.save_weights(temporary)
        os.replace(temporary, dst)
    except BaseException:  # Ctrl-C too: leave no temporary file behind.
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _parse_groups(value):
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"--groups must be an integer or 'none'. Received: {value!r}"
        ) from None


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_sge.convert",
        description="Convert a PyTorch SGE-ResNet/ResNet checkpoint (implus/PytorchInsight "
        "or torchvision layout) into a Keras .weights.h5 file for keras_sge.applications "
        "and/or a KerasHub preset directory.",
    )
    parser.add_argument("src", help="PyTorch checkpoint (.pth, .pth.tar, .pt)")
    parser.add_argument(
        "dst", nargs="?", help="Keras weights file to write (.weights.h5)"
    )
    parser.add_argument(
        "--preset",
        metavar="DIR",
        help="also write a KerasHub preset directory (needs keras-hub)",
    )
    parser.add_argument(
        "--depth",
        type=int,
        choices=sorted(architectures.ARCHITECTURES),
        help="override the depth",
    )
    parser.add_argument(
        "--groups",
        help="override the SGE groups ('none': a ResNet without SGE)",
    )
    parser.add_argument(
        "--classes", type=int, help="override the inferred number of classes"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace DST or the --preset directory if they exist",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress output"
    )
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.dst is None and args.preset is None:
        parser.error(
            "give a .weights.h5 file to write (DST), --preset DIR, or both"
        )
    try:
        groups = INFER if args.groups is None else _parse_groups(args.groups)
        options = {
            "depth": args.depth,
            "groups": groups,
            "classes": args.classes,
            "verbose": not args.quiet,
            "overwrite": args.overwrite,
        }
        _check_destinations(args)
        if args.dst is not None:
            convert(args.src, args.dst, **options)
        if args.preset is not None:
            from keras_sge import hub

            hub.convert_to_preset(args.src, args.preset, **options)
    except (ValueError, ImportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _check_destinations(args):
    # Both, before either is written: a refused --preset must not come
    # after a DST already written (or a missing keras-hub after either).
    if args.dst is not None:
        check_weights_destination(args.dst, args.overwrite)
    if args.preset is not None:
        from keras_sge.hub.preset_conversion import check_preset_directory

        check_preset_directory(args.preset, args.overwrite)


if __name__ == "__main__":
    sys.exit(main())
