"""SGE-ResNet vs the plain ResNet on cluttered digits, and where SGE's gates point.

    python examples/ablation.py --out docs/study  # the full study (about 25 minutes on 2 CPU cores)

Trains SGE-ResNet-18 and the same network without SGE (`groups=None`) under
one recipe, once per seed, on the cluttered digits of
`examples.training.cluttered` (a digit among fragments of other digits, with
the digit's box known). A third variant is SGE-ResNet-18 with every gamma
frozen at 0: its gates are `sigmoid(beta)`, one learned scale per group and
no spatial term, so it tells what SGE's spatial attention adds over a plain
rescaling of each residual branch. With the same seed all variants start
from the same convolution and classifier weights and see the same batches.
Then, on held-out images:

1. accuracy per variant, mean and spread over the seeds, and the paired
   differences with their 95% confidence intervals (do they exceed
   seed-to-seed noise?);
2. per SGE layer, where the gates point (`examples.study.localisation`): the mean
   gate on the digit's box over the mean gate off it, and the gate's AUC as a
   digit-vs-rest detector, trained vs the same network at initialisation
   (where every gate is sigmoid(1): ratio 1, AUC 0.5);
3. the paper's feature-norm view: the group feature norms on the digit over
   those off it, before and after SGE (`keras_sge.inspect` gives both).

It writes to `--out`: `RESULTS.md` (the tables), `results.json` (every
number, the configuration, the machine and the wall time; rewritten after
each run, so a long study can be watched), `gate_maps.png` (the trained SGE
network on held-out images: input, gates per stage, feature norms before
and after SGE) and `localisation.png` (the measures per seed). `--report`
rewrites the table and `localisation.png` from `results.json` alone.
"""

import argparse
import concurrent.futures
import datetime
import json
import math
import multiprocessing
import os
import re
import sys
import time

# The scripts' TensorFlow-only pieces are the `examples` package of this
# clone (not installed with keras_sge): put the clone on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples.training import cli  # noqa: E402

# The models are trained with TensorFlow's kernels; the measures are NumPy.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
cli.tensorflow_defaults()

import numpy as np  # noqa: E402

from examples.study import ablation_report  # noqa: E402
from examples.study import common  # noqa: E402
from examples.study.ablation_summary import VARIANT_NAMES  # noqa: E402
from examples.study.ablation_summary import VARIANTS  # noqa: E402
from examples.study.ablation_summary import stage_stride  # noqa: E402
from examples.study.ablation_summary import summarise  # noqa: E402


def build_parser():
    p = cli.OneLineParser(
        prog="ablation.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out",
        default=os.path.join("docs", "study"),
        help="where the table, figures and raw JSON go",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=4,
        help="runs per variant, seeds 0..N-1 (initialisation and batch order)",
    )
    p.add_argument("--epochs", type=int, default=3, help="epochs per run")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument(
        "--base-lr",
        type=float,
        default=0.1,
        help=(
            "learning rate per 256 images "
            "(the run uses base-lr * batch-size / 256), cosine-decayed to 0"
        ),
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=1e-4,
        help="coupled L2 weight decay on every weight, as in the paper",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=32,
        help="side of the cluttered canvas",
    )
    p.add_argument(
        "--clutter",
        type=int,
        default=6,
        help="fragments of other digits per canvas",
    )
    p.add_argument(
        "--train-images", type=int, default=6000, help="training canvases"
    )
    p.add_argument(
        "--val-images",
        type=int,
        default=2000,
        help="held-out canvases for the accuracy",
    )
    p.add_argument(
        "--inspect-images",
        type=int,
        default=500,
        help="held-out canvases for the localisation measures (the first ones)",
    )
    p.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="seed of the dataset (the same for every run)",
    )
    p.add_argument(
        "--figure-layers",
        default="conv2_block2_sge,conv3_block2_sge",
        help="SGE layers whose feature norms the figure shows, comma-separated",
    )
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=(
            "which variants to train, comma-separated: sge (SGE-ResNet-18), "
            "plain (groups=None), flat (SGE with gamma frozen at 0)"
        ),
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help=(
            "runs trained at once, each in its own process with cpu_count / "
            "jobs TensorFlow threads; a seed's two variants run side by side, "
            "under the same load (1: one after the other, in this process)"
        ),
    )
    p.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=2,
        help="Keras progress output",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="train nothing: rewrite RESULTS.md and localisation.png from --out's results.json",
    )
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in (
        "seeds",
        "epochs",
        "batch_size",
        "train_images",
        "val_images",
        "inspect_images",
        "jobs",
    ):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')} must be positive. Received: {getattr(args, name)}"
            )
    if args.base_lr <= 0:
        parser.error(f"--base-lr must be positive. Received: {args.base_lr}")
    if args.inspect_images > args.val_images:
        parser.error(
            f"--inspect-images {args.inspect_images} exceeds --val-images {args.val_images}"
        )
    if args.batch_size > args.train_images:
        parser.error(
            f"--batch-size {args.batch_size} exceeds --train-images {args.train_images}"
        )
    args.variants = [name.strip() for name in args.variants.split(",")]
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown or not args.variants:
        parser.error(
            f"--variants must be a comma-separated subset of {','.join(VARIANTS)}. "
            f"Received: {unknown[0] if unknown else ''!r}"
        )
    args.figure_layers = [
        name.strip() for name in args.figure_layers.split(",")
    ]
    for name in args.figure_layers:
        if not re.fullmatch(r"conv[2-5]_block[12]_sge", name):
            parser.error(
                "--figure-layers must name SGE layers of SGE-ResNet-18, "
                f"conv[2-5]_block[12]_sge. Received: {name!r}"
            )
    return args


# --------------------------------------------------------------------------
# Data and models
# --------------------------------------------------------------------------


def load_task(args):
    """The cluttered digits (the same for every run: `--data-seed`)."""
    from examples.training import cluttered

    try:
        return cluttered.load_cluttered_digits(
            args.image_size,
            args.train_images,
            args.val_images,
            args.clutter,
            seed=args.data_seed,
        )
    except ValueError as error:
        raise SystemExit(f"ablation.py: error: {error}")


def build_model(variant, seed, args):
    """One variant of ResNet-18, compiled with the study's recipe.

    The same seed gives every variant the same initial weights: SGE's own
    initialisers are constants and draw no random numbers.
    """
    import keras

    from examples.training import recipe
    from keras_sge import applications
    from keras_sge import inspect

    keras.utils.set_random_seed(seed)
    model = applications.SGEResNet18(
        input_shape=(args.image_size, args.image_size, 3),
        classes=10,
        groups=None if variant == "plain" else 64,
    )
    if variant == "flat":
        for layer in inspect.sge_layers(model, "all"):
            layer.gamma.trainable = (
                False  # stays 0: the gate is sigmoid(beta) everywhere
            )
    recipe.add_l2_penalty(model, args.weight_decay)
    schedule = recipe.learning_rate_schedule(
        recipe.scaled_learning_rate(args.batch_size, args.base_lr),
        # What `fit` runs: the last, partial batch is a step too.
        steps_per_epoch=math.ceil(args.train_images / args.batch_size),
        epochs=args.epochs,
        schedule="cosine",
    )
    recipe.compile_model(model, recipe.sgd(schedule, momentum=0.9))
    return model


def train(model, dataset, seed, args):
    """Trains on every training canvas for `args.epochs` epochs; seconds taken."""
    import keras

    from keras_sge.applications import preprocess_input

    images = preprocess_input(dataset.train.images)
    labels = keras.utils.to_categorical(dataset.train.labels, 10)
    # Seeded again here, so every variant sees the same batches.
    keras.utils.set_random_seed(seed)
    start = time.time()
    history = model.fit(
        images,
        labels,
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        verbose=args.verbose,
    )
    return time.time() - start, {
        name: [float(v) for v in values]
        for name, values in history.history.items()
    }


def accuracy(model, split):
    from keras_sge.applications import preprocess_input

    probabilities = model.predict(
        preprocess_input(split.images), batch_size=250, verbose=0
    )
    return float(np.mean(np.argmax(probabilities, axis=-1) == split.labels))


# --------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------


def localisation(model, split, count):
    """Per SGE layer, the localisation measures on the first `count` images."""
    from examples.study import localisation as measures
    from keras_sge import inspect
    from keras_sge.applications import preprocess_input

    maps = inspect.inspect_sge(
        model,
        preprocess_input(split.images[:count]),
        layers="all",
        batch_size=50,
    )
    size = split.images.shape[1]
    return {
        name: measures.measure_layer(
            layer_maps,
            split.boxes[:count],
            size,
            split.clutter_boxes[:count],
            stride=stage_stride(name),
        )
        for name, layer_maps in maps.items()
    }


def sge_parameters(model):
    """Per SGE layer: the mean gamma, mean |gamma| and mean beta."""
    from keras_sge import inspect

    return {
        layer.name: {
            "gamma_mean": float(np.mean(layer.gamma.numpy())),
            "gamma_abs_mean": float(np.mean(np.abs(layer.gamma.numpy()))),
            "beta_mean": float(np.mean(layer.beta.numpy())),
        }
        for layer in inspect.sge_layers(model, "all")
    }


def run_one(variant, seed, dataset, args):
    """Builds, measures at init (SGE), trains, measures; returns the record."""
    import keras

    model = build_model(variant, seed, args)
    record = {"variant": variant, "seed": seed}
    if variant == "sge":
        record["localisation_init"] = localisation(
            model, dataset.val, args.inspect_images
        )
    record["train_seconds"], record["history"] = train(
        model, dataset, seed, args
    )
    record["accuracy"] = accuracy(model, dataset.val)
    if variant != "plain":
        record["sge_parameters"] = sge_parameters(model)
    if variant == "sge":
        record["localisation"] = localisation(
            model, dataset.val, args.inspect_images
        )
        if seed == args.seed_list[0]:
            ablation_report.draw_gate_maps(
                model,
                dataset.val,
                args.figure_layers,
                os.path.join(args.out, "gate_maps.png"),
            )
    del model
    keras.backend.clear_session()
    return record


def run_all(dataset, args, on_record):
    """Every (variant, seed) run; `on_record(record)` as each one ends."""
    runs = [
        (variant, seed)
        for seed in args.seed_list
        for variant in VARIANTS
        if variant in args.variants
    ]
    if args.jobs == 1:
        for variant, seed in runs:
            on_record(run_one(variant, seed, dataset, args))
        return
    # Fresh processes ("spawn", one per run): TensorFlow's thread pools are
    # sized before it starts, and nothing leaks from one run to the next.
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    with concurrent.futures.ProcessPoolExecutor(
        args.jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_limit_threads,
        initargs=(threads,),
        max_tasks_per_child=1,
    ) as pool:
        futures = [
            pool.submit(_run_in_worker, variant, seed, args)
            for variant, seed in runs
        ]
        for future in concurrent.futures.as_completed(futures):
            on_record(future.result())


def _limit_threads(threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _run_in_worker(variant, seed, args):
    # Each worker makes the dataset again (deterministic, about a second)
    # rather than receiving it pickled.
    return run_one(variant, seed, load_task(args), args)


# --------------------------------------------------------------------------
# Raw results
# --------------------------------------------------------------------------


def configuration(args):
    """The study's settings and the command that reruns it, for the raw results."""
    names = (
        "seeds",
        "epochs",
        "batch_size",
        "base_lr",
        "weight_decay",
        "image_size",
        "clutter",
        "train_images",
        "val_images",
        "inspect_images",
        "data_seed",
        "variants",
        "jobs",
    )
    config = {name: getattr(args, name) for name in names}
    config["learning_rate"] = args.base_lr * args.batch_size / 256
    config["recipe"] = (
        "SGD momentum 0.9, coupled L2 weight decay on every weight, "
        "cosine decay to 0, no augmentation, float32"
    )
    config["command"] = " ".join(
        ["python", "examples/ablation.py"] + sys.argv[1:]
    )
    return config


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def write_results(results, args):
    with open(
        os.path.join(args.out, "results.json"), "w", encoding="utf-8"
    ) as f:
        json.dump(results, f, indent=1)


def rewrite_report(args):
    """RESULTS.md and localisation.png again, from the raw results."""
    path = os.path.join(args.out, "results.json")
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (OSError, ValueError) as error:
        raise SystemExit(f"ablation.py: error: cannot read {path}: {error}")
    results["summary"] = summarise(results["runs"])
    for path in (
        ablation_report.write_markdown(
            results, os.path.join(args.out, "RESULTS.md")
        ),
        ablation_report.draw_summary(
            results, os.path.join(args.out, "localisation.png")
        ),
    ):
        print(f"Wrote {path}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        return rewrite_report(args)
    args.seed_list = list(range(args.seeds))
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    dataset = load_task(args)
    print(dataset.describe(), flush=True)
    results = {
        "config": configuration(args),
        "machine": common.machine(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "runs": [],
    }

    def on_record(record):
        print(
            f"{VARIANT_NAMES[record['variant']]}, seed {record['seed']}: "
            f"held-out accuracy {record['accuracy']:.4f} "
            f"({record['train_seconds']:.0f} s of training)",
            flush=True,
        )
        results["runs"] = sorted(
            results["runs"] + [record],
            key=lambda r: (r["seed"], VARIANTS.index(r["variant"])),
        )
        results["summary"] = summarise(results["runs"])
        results["wall_seconds"] = time.time() - start
        results["complete"] = False
        write_results(results, args)

    # Variants alternate within each seed (side by side with --jobs 2), so
    # a change in the machine's load during the study falls on both alike.
    run_all(dataset, args, on_record)
    results["complete"] = True
    results["wall_seconds"] = time.time() - start
    written = [
        ablation_report.write_markdown(
            results, os.path.join(args.out, "RESULTS.md")
        ),
        ablation_report.draw_summary(
            results, os.path.join(args.out, "localisation.png")
        ),
        os.path.join(args.out, "gate_maps.png"),
    ]
    write_results(results, args)
    written.append(os.path.join(args.out, "results.json"))
    print(f"Study done in {results['wall_seconds'] / 60:.1f} minutes. Wrote:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
