"""The command line of `examples/train.py`: its options, their help and parsers."""

import argparse

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
