"""`python -m keras_sge.convert`: official PyTorch checkpoints to Keras files.

    python -m keras_sge.convert sge_resnet50.pth.tar sge_resnet50.weights.h5
    python -m keras_sge.convert sge_resnet50.pth.tar --preset sge_resnet50_preset

reads an official PytorchInsight checkpoint (a training-checkpoint dict with
a `state_dict` of `module.`-prefixed keys), a bare `state_dict`, or a
torchvision ResNet `state_dict`; infers the depth, the SGE groups and the
number of classes from its keys and shapes (`--depth`, `--groups`,
`--classes` override); builds the matching `keras_sge.applications` model
and writes its Keras weights file, loadable with
`SGEResNet50(weights="sge_resnet50.weights.h5")`, and/or a KerasHub preset
directory (`--preset`, needs the `hub` extra). The reading and the name
mapping live in `keras_sge.applications` (`torch_checkpoint`,
`torch_mapping`, `from_checkpoint`); this module is the command.
"""

import argparse
import os
import sys

import keras

from keras_sge.applications import architectures
from keras_sge.applications.checkpoint_model import INFER
from keras_sge.applications.checkpoint_model import checkpoint_architecture
from keras_sge.applications.checkpoint_model import from_checkpoint
from keras_sge.applications.weights import WeightsFile


def convert(src, dst, depth=None, groups=INFER, classes=None, verbose=True):
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
    dst = os.fspath(dst)
    if not dst.endswith(".weights.h5"):
        raise ValueError(
            "The output must be a Keras weights file ending in '.weights.h5'. "
            f"Received: dst={dst!r}"
        )
    say = print if verbose else (lambda *args, **kwargs: None)
    say(f"Reading {os.fspath(src)} ...")
    checkpoint = WeightsFile(src)
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
    model.save_weights(dst)
    say(
        f"Wrote {dst}: load it with "
        f"keras_sge.applications.SGEResNet{arch['depth']}(weights={dst!r}, ...)"
    )
    return model


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
        overrides = {
            "depth": args.depth,
            "groups": groups,
            "classes": args.classes,
        }
        if args.dst is not None:
            convert(args.src, args.dst, verbose=not args.quiet, **overrides)
        if args.preset is not None:
            from keras_sge import hub

            hub.convert_to_preset(args.src, args.preset, verbose=not args.quiet)
    except (ValueError, ImportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
