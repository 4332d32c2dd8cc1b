"""The command line of `examples/train.py`.

Its options, their help and parsers, the defaults that depend on the data
(`PROFILE_DEFAULTS`), and the checks of the values given.
"""

import argparse
import math
import os

from examples.training import cli
from examples.training import data
from examples.training import keras_apps
from keras_sge import applications

# The SGE-ResNets `--arch` names, and their builders.
ARCHS = {
    "resnet18": applications.SGEResNet18,
    "resnet34": applications.SGEResNet34,
    "resnet50": applications.SGEResNet50,
    "resnet101": applications.SGEResNet101,
    "resnet152": applications.SGEResNet152,
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the data-dependent ones (given in the text)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser(description):
    """The parser of train.py's command line, its options in four groups."""
    p = cli.OneLineParser(
        prog="train.py",
        description=description,
        formatter_class=HelpFormatter,
        epilog=(
            "Defaults marked [folder ..., digits ...] depend on whether --data is given. "
            "Several machines: set TF_CONFIG on each (cluster and task) and run the same command; "
            "they train with MultiWorkerMirroredStrategy. Rerun a killed run with the same "
            "--output-dir to resume it from its last backup."
        ),
    )
    _add_data_options(p.add_argument_group("data"))
    _add_model_options(p.add_argument_group("model"))
    _add_recipe_options(
        p.add_argument_group(
            "recipe (the paper: SGD momentum 0.9, lr 0.1 per 256 images, "
            "L2 1e-4 on all weights, 100 epochs, x0.1 at 30/60/90)"
        )
    )
    _add_run_options(p.add_argument_group("run"))
    return p


def _add_data_options(group):
    """What to train on, and how the images are read."""
    group.add_argument(
        "--data",
        metavar="DIR",
        help=(
            "image folder: ImageNet layout, DIR/train/<class>/*.jpg and "
            "DIR/val/<class>/*.jpg, or one folder per class, DIR/<class>/*.jpg "
            "(val: --val-fraction of each class). JPEG/PNG/GIF/BMP, checked at "
            "start: images TensorFlow would misread are converted once to PNG in "
            "<output-dir>/converted/, unreadable files are listed in "
            "<output-dir>/bad_images.txt (see --bad-images). Default: "
            "scikit-learn's digits, embedded"
        ),
    )
    group.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help=(
            "a folder with one folder per class (no train/ and val/): the "
            "fraction of each class held out for validation, chosen by --seed"
        ),
    )
    group.add_argument(
        "--bad-images",
        choices=data.BAD_IMAGE_POLICIES,
        default="skip",
        help=(
            "files that cannot be decoded: skip them (listed on the console and "
            "in <output-dir>/bad_images.txt), or refuse to train"
        ),
    )
    group.add_argument(
        "--max-bad-fraction",
        type=float,
        default=0.01,
        metavar="F",
        help=(
            "with --bad-images skip, refuse anyway when more than this fraction "
            "of the files cannot be decoded (a broken copy or the wrong folder)"
        ),
    )
    group.add_argument(
        "--dataset",
        choices=["digits", "cluttered-digits"],
        default="digits",
        help=(
            "the embedded dataset used without --data: scikit-learn's digits, or "
            "cluttered digits (one digit at a random place among fragments of "
            "others; defaults: image size 32, 3 epochs, batch 32, base lr 0.1 "
            "cosine, no crop; the recipe of examples/ablation.py)"
        ),
    )
    group.add_argument(
        "--image-size",
        type=int,
        help="side of the square training and eval images [folder 224, digits 32]",
    )
    group.add_argument(
        "--crop-scale",
        type=float,
        metavar="MIN",
        help=(
            "smallest area fraction of the random-resized crop (the paper: 0.08); "
            "1 = no crop [folder 0.08, digits 0.5]"
        ),
    )
    group.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        help="random horizontal flips [folder on, digits off]",
    )
    group.add_argument(
        "--cache-mb",
        type=float,
        default=1024,
        help=(
            "in-memory cache budget per split, MB: training files whose total "
            "size fits are kept encoded in memory; the val set is cached decoded "
            "if it fits (0: off)"
        ),
    )


def _add_model_options(group):
    """The network, its initial weights and precision."""
    group.add_argument(
        "--arch",
        type=_arch,
        metavar="{resnet18,...,resnet152,keras:NAME}",
        help=(
            "SGE-ResNet depth, or keras:NAME, a keras.applications network "
            "(keras:ResNet50V2, keras:EfficientNetB0, ...) with SGE on its "
            "residual branches and a new classifier [a PyTorch --weights "
            "checkpoint's; folder resnet50, digits resnet18]"
        ),
    )
    group.add_argument(
        "--groups",
        type=_groups,
        default=64,
        metavar="{N,none}",
        help=(
            "SGE groups per block (at most, for keras:NAME); none trains "
            "the network without SGE (the ablation baseline)"
        ),
    )
    group.add_argument(
        "--weights",
        metavar="FILE",
        help=(
            "initial weights: a .keras / .weights.h5 file or a PyTorch "
            "checkpoint (.pth / .pth.tar); for keras:NAME, that network's "
            "Keras weights file (.h5, .weights.h5, .keras, with or without "
            "its top). A classifier that does not fit the "
            "data's classes starts anew (fine-tuning); with --data this also "
            "selects the fine-tuning defaults [fine-tune ...]"
        ),
    )
    group.add_argument(
        "--sync-bn",
        action="store_true",
        help="synchronise BatchNormalization's batch statistics across replicas",
    )
    group.add_argument(
        "--mixed-precision",
        choices=["float16", "bfloat16"],
        help=(
            "compute in mixed_float16 (with loss scaling) or mixed_bfloat16; "
            "variables stay float32"
        ),
    )


def _add_recipe_options(group):
    """The optimisation: epochs, batch, learning rates, augmentation."""
    group.add_argument(
        "--epochs",
        type=int,
        help="epochs, the head epochs included [folder 100, fine-tune 10, digits 4]",
    )
    group.add_argument(
        "--head-epochs",
        type=int,
        help=(
            "first train only the classifier for this many epochs, the rest of "
            "the network frozen (BatchNormalization in inference mode), then the "
            "whole network [folder 0, fine-tune 2, digits 0]"
        ),
    )
    group.add_argument(
        "--head-lr",
        type=float,
        default=0.1,
        help="learning rate per 256 images of the head epochs (constant)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        help=(
            "GLOBAL batch, over all replicas of all workers; must divide by the "
            "replica count [folder 256, fine-tune 64, digits 32]"
        ),
    )
    group.add_argument(
        "--steps-per-epoch",
        type=int,
        help="optimizer steps per epoch (default: train images // batch size)",
    )
    group.add_argument(
        "--base-lr",
        type=float,
        help=(
            "learning rate per 256 images after the head epochs; the run uses "
            "base-lr * batch-size / 256 [folder 0.1, fine-tune 0.01, digits 0.1]"
        ),
    )
    group.add_argument(
        "--momentum", type=float, default=0.9, help="SGD momentum"
    )
    group.add_argument(
        "--weight-decay",
        type=float,
        default=1e-4,
        help=(
            "torch-style COUPLED weight decay, as in the paper: an L2 penalty "
            "wd/2*|w|^2 on every trainable weight (kernels, biases, BN and SGE "
            "scales and shifts), i.e. wd*w added to each gradient"
        ),
    )
    group.add_argument(
        "--decoupled-weight-decay",
        type=float,
        default=0.0,
        help=(
            "Keras optimizer `weight_decay`: DECOUPLED (SGDW-style, "
            "w -= lr*wd*w each step, outside momentum); not the paper's"
        ),
    )
    group.add_argument(
        "--lr-schedule",
        choices=["step", "cosine", "constant"],
        help=(
            "step: x0.1 at each of --lr-decay-epochs; cosine: to 0 at the end "
            "[folder step, fine-tune cosine, digits step]"
        ),
    )
    group.add_argument(
        "--lr-decay-epochs",
        type=_int_list,
        default="30,60,90",
        metavar="E1,E2,...",
        help="epochs of the step schedule's x0.1 decays",
    )
    group.add_argument(
        "--warmup-epochs",
        type=float,
        default=0.0,
        help="linear learning-rate warmup from 0, in epochs (any schedule)",
    )
    group.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        help="label smoothing of the cross-entropy",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds initialisation, data order and augmentation",
    )


def _add_run_options(group):
    """Where the run is written, how it resumes, how it uses the machine."""
    group.add_argument(
        "--output-dir",
        metavar="DIR",
        help=(
            "where everything is written (default: runs/<model>-<data>); "
            "rerunning with the same directory resumes"
        ),
    )
    group.add_argument(
        "--save-steps",
        type=int,
        help=(
            "backup interval in steps (also at every epoch end); a kill loses "
            "at most this much [folder 1000, digits 20]"
        ),
    )
    group.add_argument(
        "--fresh",
        action="store_true",
        help=(
            "start over from step 0 in --output-dir: its backups are deleted, "
            "and it is bound to this command's model and data (run.json)"
        ),
    )
    group.add_argument(
        "--evaluate-only",
        action="store_true",
        help=(
            "evaluate on the val split and exit: --weights, or else the last "
            "backup of the run in --output-dir"
        ),
    )
    group.add_argument(
        "--cpu-devices",
        type=int,
        default=0,
        metavar="N",
        help=(
            "split the CPU into N logical devices and mirror over them "
            "(MirroredStrategy without GPUs)"
        ),
    )
    group.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow intra- and inter-op threads per process (0: TensorFlow's default)",
    )
    group.add_argument(
        "--verbose",
        type=int,
        choices=[0, 1, 2],
        default=1,
        help="Keras progress output (0 silent, 1 bar, 2 one line per epoch)",
    )


def _arch(text):
    """`--arch`: an SGE-ResNet depth, or `keras:NAME` (NAME in any case)."""
    if text in ARCHS:
        return text
    if not keras_apps.is_keras_arch(text):
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from "
            f"{', '.join(sorted(ARCHS, key=lambda a: int(a[6:])))}, or "
            "keras:NAME for a keras.applications network)"
        )
    try:
        return keras_apps.canonical(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _groups(text):
    """`--groups`: a positive number of SGE groups, or `none` for no SGE."""
    if text.lower() == "none":
        return None
    try:
        groups = int(text)
    except ValueError:
        groups = None
    if groups is None or groups < 1:
        # 0 used to mean no SGE; it must not pass for a number of groups.
        raise argparse.ArgumentTypeError(
            f"expected a positive number of SGE groups, got {text}: pass "
            "--groups none to train without SGE"
        )
    return groups


def _int_list(text):
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        )


# Defaults that depend on the run: the paper's recipe for an image folder;
# for a folder with --weights, fine-tuning as the keras.io transfer-learning
# guide does it (the new classifier alone for 2 epochs at the paper's rate,
# then the whole network at a tenth of it, cosine to 0, 10 epochs in all);
# a few quick epochs for the embedded digits (8x8 images upsampled to 32x32;
# flipping a digit changes its meaning, and small crops erase it), and for
# the cluttered digits (the digit sits anywhere: a crop could cut it out).
PROFILE_DEFAULTS = {
    "folder": dict(
        arch="resnet50",
        image_size=224,
        epochs=100,
        batch_size=256,
        crop_scale=0.08,
        flip=True,
        save_steps=1000,
        base_lr=0.1,
        lr_schedule="step",
        head_epochs=0,
    ),
    "fine-tune": dict(
        arch="resnet50",
        image_size=224,
        epochs=10,
        batch_size=64,
        crop_scale=0.08,
        flip=True,
        save_steps=500,
        base_lr=0.01,
        lr_schedule="cosine",
        head_epochs=2,
    ),
    "digits": dict(
        arch="resnet18",
        image_size=32,
        epochs=4,
        batch_size=32,
        crop_scale=0.5,
        flip=False,
        save_steps=20,
        base_lr=0.1,
        lr_schedule="step",
        head_epochs=0,
    ),
    "cluttered-digits": dict(
        arch="resnet18",
        image_size=32,
        epochs=3,
        batch_size=32,
        crop_scale=1.0,
        flip=False,
        save_steps=50,
        base_lr=0.1,
        lr_schedule="cosine",
        head_epochs=0,
    ),
}


def profile(args):
    """Which defaults apply: the embedded dataset's, "folder" or "fine-tune"."""
    if not args.data:
        return args.dataset
    return "fine-tune" if args.weights else "folder"


def fill_defaults(args):
    """Fills the options left out with their profile's defaults.

    `args.defaulted` names them: a default may be fitted to the data (the
    batch), and a message about one must not blame the user for it.
    """
    args.defaulted = set()
    for name, value in PROFILE_DEFAULTS[profile(args)].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
            args.defaulted.add(name)


def default_output_dir(args):
    """runs/MODEL-DATA, e.g. runs/sge_resnet18-digits."""
    # keras:NAME -> keras_name: no colon in a path (Windows).
    arch = args.arch.replace(":", "_").lower()
    model = f"{'sge_' if args.groups else ''}{arch}"
    data_name = (
        os.path.basename(os.path.normpath(args.data))
        if args.data
        else args.dataset
    )
    return os.path.join("runs", f"{model}-{data_name}")


def invalid_values(args):
    """One message per value out of its range, NaN and infinity included."""
    finite = math.isfinite
    rules = [
        ("--image-size", args.image_size, args.image_size >= 8, "at least 8"),
        ("--batch-size", args.batch_size, args.batch_size >= 1, "at least 1"),
        ("--epochs", args.epochs, args.epochs >= 1, "at least 1"),
        (
            "--steps-per-epoch",
            args.steps_per_epoch,
            args.steps_per_epoch is None or args.steps_per_epoch >= 1,
            "at least 1 (leave it out for one pass over the data)",
        ),
        ("--save-steps", args.save_steps, args.save_steps >= 1, "at least 1"),
        ("--cpu-devices", args.cpu_devices, args.cpu_devices >= 0, "0 or more"),
        ("--threads", args.threads, args.threads >= 0, "0 or more"),
        ("--seed", args.seed, args.seed >= 0, "0 or more"),
        (
            "--base-lr",
            args.base_lr,
            finite(args.base_lr) and args.base_lr > 0,
            "a positive number",
        ),
        (
            "--head-lr",
            args.head_lr,
            finite(args.head_lr) and args.head_lr > 0,
            "a positive number",
        ),
        ("--momentum", args.momentum, 0 <= args.momentum < 1, "in [0, 1)"),
        (
            "--weight-decay",
            args.weight_decay,
            finite(args.weight_decay) and args.weight_decay >= 0,
            "0 or a positive number",
        ),
        (
            "--decoupled-weight-decay",
            args.decoupled_weight_decay,
            finite(args.decoupled_weight_decay)
            and args.decoupled_weight_decay >= 0,
            "0 or a positive number",
        ),
        (
            "--label-smoothing",
            args.label_smoothing,
            0 <= args.label_smoothing < 1,
            "in [0, 1)",
        ),
        (
            "--warmup-epochs",
            args.warmup_epochs,
            finite(args.warmup_epochs) and args.warmup_epochs >= 0,
            "0 or a positive number",
        ),
        (
            "--lr-decay-epochs",
            ",".join(map(str, args.lr_decay_epochs)),
            all(epoch >= 1 for epoch in args.lr_decay_epochs),
            "positive epochs",
        ),
        (
            "--crop-scale",
            args.crop_scale,
            0 < args.crop_scale <= 1,
            "in (0, 1]",
        ),
        (
            "--val-fraction",
            args.val_fraction,
            0 < args.val_fraction < 1,
            "in (0, 1)",
        ),
        (
            "--max-bad-fraction",
            args.max_bad_fraction,
            0 <= args.max_bad_fraction <= 1,
            "in [0, 1]",
        ),
        (
            "--cache-mb",
            args.cache_mb,
            finite(args.cache_mb) and args.cache_mb >= 0,
            "0 (off) or a positive number",
        ),
    ]
    for option, value, ok, requirement in rules:
        if not ok:
            # `:g` echoes floats as typed: 2, -1, nan, inf.
            shown = f"{value:g}" if isinstance(value, float) else value
            yield f"{option} must be {requirement}, got {shown}"
    # Evaluating trains nothing: the fine-tuning default of head epochs
    # must not stop `--evaluate-only --epochs 1`.
    if not args.evaluate_only and not 0 <= args.head_epochs <= args.epochs:
        yield _head_epochs_message(args)
    if args.weights and not os.path.isfile(args.weights):
        yield f"--weights file not found: {args.weights}"
    if args.data and args.dataset != "digits":
        yield f"--dataset {args.dataset} is embedded: leave out --data"
    if args.sync_bn and keras_apps.is_keras_arch(args.arch):
        yield (
            f"--sync-bn is for the SGE-ResNets (--arch resnetN), not --arch "
            f"{args.arch}: leave it out"
        )


def _head_epochs_message(args):
    if "head_epochs" in args.defaulted:
        return (
            f"--epochs {args.epochs} leaves no room for the {args.head_epochs} "
            "head epochs of the fine-tuning default: pass --head-epochs "
            f"{args.epochs} or less as well, or --epochs {args.head_epochs} or more"
        )
    return (
        f"--head-epochs must be in [0, --epochs {args.epochs}], "
        f"got {args.head_epochs}"
    )


def output_dir_problem(path):
    """Why `path` cannot be the run directory (None if it can); creates nothing."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return (
                f"--output-dir {path} is a file, not a directory: pass a "
                "directory (it is created if missing)"
            )
        if not os.access(path, os.W_OK | os.X_OK):
            return f"--output-dir {path} is not writable: pass a directory you can write to"
        return None
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"--output-dir {path} cannot be created: {parent} is a file; pass a directory path"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--output-dir {path} cannot be created: no permission to write in {parent}"
    return None
