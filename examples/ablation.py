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
import platform
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

VARIANTS = ("sge", "plain", "flat")
VARIANT_NAMES = {
    "sge": "SGE-ResNet-18 (groups=64)",
    "plain": "ResNet-18 (groups=None)",
    "flat": "SGE-ResNet-18, gamma frozen at 0",
}
SHORT_NAMES = {"sge": "SGE", "plain": "plain", "flat": "SGE, gamma = 0"}
# The paired differences reported, (minuend, subtrahend).
COMPARISONS = (("sge", "plain"), ("flat", "plain"), ("sge", "flat"))
# Figures are drawn from the trained SGE network of the first seed, on the
# first held-out images: a fixed choice, not a selection.
FIGURE_IMAGES = 4


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


def stage_stride(layer_name):
    """The stride of an SGE-ResNet layer: 4 in conv2, 8 in conv3, ... 32 in conv5."""
    return 2 ** int(re.match(r"conv(\d)_", layer_name).group(1))


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
            draw_gate_maps(model, dataset.val, args)
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
# Summaries
# --------------------------------------------------------------------------


def spread(values):
    """Mean, sample standard deviation (0 for one value), min and max."""
    values = np.asarray(values, "float64")
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {
        "mean": float(values.mean()),
        "std": std,
        "min": float(values.min()),
        "max": float(values.max()),
        "values": values.tolist(),
    }


def paired_difference(first, second):
    """`first - second` (accuracies, paired by seed), with its 95% t interval."""
    from scipy import stats

    differences = np.asarray(first) - np.asarray(second)
    result = spread(differences)
    if len(differences) < 2:
        result.update(ci95=None, exceeds_noise=None)
        return result
    half = (
        stats.t.ppf(0.975, len(differences) - 1)
        * result["std"]
        / np.sqrt(len(differences))
    )
    result["ci95"] = [result["mean"] - half, result["mean"] + half]
    # The interval excludes 0: the difference exceeds seed-to-seed noise.
    result["exceeds_noise"] = bool(
        result["ci95"][0] > 0 or result["ci95"][1] < 0
    )
    return result


def summarise(runs):
    """Accuracy per variant, the paired differences, and the localisation
    measures and SGE parameters per layer, over the seeds."""
    by_variant = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    summary = {
        "accuracy": {
            v: spread([r["accuracy"] for r in rs])
            for v, rs in by_variant.items()
            if rs
        }
    }
    summary["differences"] = {}
    for first, second in COMPARISONS:
        paired = [
            (a["accuracy"], b["accuracy"])
            for a in by_variant[first]
            for b in by_variant[second]
            if a["seed"] == b["seed"]
        ]
        if paired:
            summary["differences"][f"{first}-{second}"] = paired_difference(
                *zip(*paired)
            )
    sge_runs = [r for r in by_variant["sge"] if "localisation" in r]
    if sge_runs:
        summary["localisation"] = {
            "trained": _over_seeds([r["localisation"] for r in sge_runs]),
            "init": _over_seeds([r["localisation_init"] for r in sge_runs]),
        }
        summary["sge_parameters"] = _over_seeds(
            [r["sge_parameters"] for r in sge_runs]
        )
    return summary


def _over_seeds(per_seed):
    """`[{layer: {measure: value}}]` over seeds -> `{layer: {measure: spread}}`."""
    summary = {}
    for layer, measures in per_seed[0].items():
        summary[layer] = (
            {"map_shape": measures["map_shape"]}
            if "map_shape" in measures
            else {}
        )
        for name in measures:
            if name != "map_shape":
                summary[layer][name] = spread(
                    [seed[layer][name] for seed in per_seed]
                )
    return summary


def machine():
    """What the study ran on, for the raw results."""
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "keras_backend": keras.backend.backend(),
    }


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                (
                    line.split(":", 1)[1].strip()
                    for line in f
                    if line.startswith("model name")
                ),
                platform.processor(),
            )
    except OSError:
        return platform.processor()


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
# Report
# --------------------------------------------------------------------------


def _pm(s, digits=3, scale=1):
    """`mean ± std` of a `spread`."""
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"


def write_markdown(results, path):
    """RESULTS.md: the setup, the accuracy table and the per-layer measures."""
    config, summary = results["config"], results["summary"]
    acc = summary["accuracy"]
    seeds = ", ".join(str(s) for s in range(config["seeds"]))
    lines = [
        "# SGE on cluttered digits: accuracy and where the gates point",
        "",
        f"Made by `{config['command']}` in {results['wall_seconds'] / 60:.1f} minutes on "
        f"{results['machine']['cpu_count']} CPU cores ({results['machine']['cpu_model']}; "
        f"TensorFlow {results['machine']['tensorflow']}, "
        f"Keras {results['machine']['keras']}); raw numbers in `results.json`.",
        "",
        f"Task: {config['train_images']} training and {config['val_images']} "
        f"held-out {config['image_size']}x{config['image_size']} "
        "cluttered digits (`examples.training.cluttered`, "
        f"dataset seed {config['data_seed']}, "
        f"{config['clutter']} fragments of other digits each). "
        f"Recipe, the same for every variant: batch {config['batch_size']}, "
        f"{config['epochs']} epochs, "
        f"lr {config['learning_rate']:g} ({config['recipe']}), "
        f"weight decay {config['weight_decay']:g}. "
        f"Seeds {seeds}: with the same seed every variant starts from the same "
        "weights and sees the same batches. "
        "*SGE-ResNet-18, gamma frozen at 0*: every gate is sigmoid(beta), "
        "a learned scale per group with no spatial term.",
        "",
        "## Accuracy on the held-out images",
        "",
        "| variant | mean ± std over seeds (%) | min-max (%) | per seed (%) |",
        "|---|---|---|---|",
    ]
    for variant in VARIANTS:
        if variant in acc:
            s = acc[variant]
            per_seed = ", ".join(f"{v * 100:.2f}" for v in s["values"])
            lines.append(
                f"| {VARIANT_NAMES[variant]} | {_pm(s, 2, scale=100)} "
                f"| {s['min'] * 100:.2f}-{s['max'] * 100:.2f} | {per_seed} |"
            )
    if summary["differences"]:
        lines += [
            "",
            "Paired by seed (same initial weights, same batches):",
            "",
        ]
    for key, d in summary["differences"].items():
        first, second = key.split("-")
        if d["ci95"] is None:
            verdict = "one seed: no estimate of the noise"
        else:
            ci = (
                f"95% CI {d['ci95'][0] * 100:+.2f} to {d['ci95'][1] * 100:+.2f}"
            )
            verdict = f"{ci}: {'exceeds' if d['exceeds_noise'] else 'within'} seed-to-seed noise"
        lines.append(
            f"- {SHORT_NAMES[first]} minus {SHORT_NAMES[second]}: {d['mean'] * 100:+.2f} points "
            f"(std over seeds {d['std'] * 100:.2f}); {verdict}."
        )
    if "localisation" in summary:
        lines += _localisation_tables(summary, config)
    return _write(path, "\n".join(lines) + "\n")


def _localisation_tables(summary, config):
    trained, init = (
        summary["localisation"]["trained"],
        summary["localisation"]["init"],
    )
    params = summary["sge_parameters"]
    lines = [
        "",
        "## Where the gates point",
        "",
        f"SGE-ResNet-18, the first {config['inspect_images']} held-out images, "
        "mean ± std over the seeds; *init*: the same networks before training. "
        "Each input pixel takes the gate of the cell centred nearest to it "
        "(`examples.study.localisation`). *Gate ratio*: mean gate on the digit's box "
        "/ off it (1: no preference); *vs clutter*: on the box / on the clutter "
        "fragments; *AUC*: the gate as a digit-vs-rest pixel detector, per image "
        "and group (0.5: no preference); *spread*: the gate's standard deviation "
        "over the positions of a map, mean over images and groups (0: a flat "
        "gate). At initialisation gamma = 0 and every gate is sigmoid(1) = 0.731.",
        "",
        "| layer | map | gate ratio, trained | init | vs clutter, trained "
        "| AUC, trained | init | spread, trained | init "
        "| mean gate | mean \\|gamma\\| | mean beta |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layer, t in trained.items():
        shape = "x".join(str(v) for v in t["map_shape"])
        lines.append(
            f"| {layer} | {shape} | {_pm(t['gate_ratio'], 5)} "
            f"| {init[layer]['gate_ratio']['mean']:.5f} | "
            f"{_pm(t['gate_ratio_vs_clutter'], 5)} | {_pm(t['gate_auc'])} "
            f"| {init[layer]['gate_auc']['mean']:.3f} | "
            f"{_pm(t['gate_spread'], 5)} "
            f"| {init[layer]['gate_spread']['mean']:.5f} | {_pm(t['gate_mean'])} | "
            f"{_pm(params[layer]['gamma_abs_mean'], 4)} | {_pm(params[layer]['beta_mean'])} |"
        )
    lines += [
        "",
        "## Feature norms on the digit vs off it, before and after SGE",
        "",
        "The mean per-group feature norm on the digit's box / off it (and / on "
        "the clutter), trained network, mean ± std over the seeds; SGE enhances "
        "the digit where *after* exceeds *before*. At initialisation SGE scales "
        "every position by the same sigmoid(1), so after = before there.",
        "",
        "| layer | digit/off, before SGE | after SGE | init (before = after) "
        "| digit/clutter, before SGE | after SGE |",
        "|---|---|---|---|---|---|",
    ]
    for layer, t in trained.items():
        lines.append(
            f"| {layer} | {_pm(t['norm_ratio_before'], 4)} "
            f"| {_pm(t['norm_ratio_after'], 4)} "
            f"| {_pm(init[layer]['norm_ratio_before'], 4)} | "
            f"{_pm(t['norm_ratio_before_vs_clutter'], 4)} "
            f"| {_pm(t['norm_ratio_after_vs_clutter'], 4)} |"
        )
    return lines


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _cell_edges(cells, stride, size):
    """Pixel edges of the cells, as `examples.study.localisation` assigns pixels:
    each pixel to the cell centred nearest (cell i is centred on stride * i)."""
    from examples.study import localisation

    first_pixels = np.searchsorted(
        localisation.pixel_cells(size, cells, stride), np.arange(cells)
    )
    return np.append(first_pixels, size) - 0.5


def _panel(axes, image, box, title):
    from matplotlib.patches import Rectangle

    axes.imshow(image, cmap="gray", vmin=0, vmax=255)
    top, left, bottom, right = box
    axes.add_patch(
        Rectangle(
            (left - 0.5, top - 0.5),
            right - left,
            bottom - top,
            fill=False,
            edgecolor="lime",
            linewidth=1.2,
            zorder=3,
        )
    )
    axes.set_xlim(-0.5, image.shape[1] - 0.5)
    axes.set_ylim(image.shape[0] - 0.5, -0.5)
    axes.set_title(title, fontsize=7)
    axes.set_xticks([])
    axes.set_yticks([])


def draw_gate_maps(model, split, args):
    """For the first held-out images: the input, the mean gate of the last SGE
    layer of stages conv2-conv4, and the feature norms before and after SGE
    at `--figure-layers`."""
    from keras_sge import inspect
    from keras_sge.applications import preprocess_input

    # conv5 is left out: at 32x32 its map is 1x1, one gate per group.
    stages = [f"conv{stage}_block2_sge" for stage in range(2, 5)]
    images = split.images[:FIGURE_IMAGES]
    maps = inspect.inspect_sge(
        model,
        preprocess_input(images),
        layers=list(dict.fromkeys(stages + args.figure_layers)),
    )
    columns = 1 + len(stages) + 2 * len(args.figure_layers)
    figure = _figure((1.45 * columns, 1.5 * len(images) + 0.5))
    grid = figure.subplots(len(images), columns, squeeze=False)
    for row, image in enumerate(images[..., 0]):
        box = split.boxes[row]
        _panel(grid[row, 0], image, box, f"input, label {split.labels[row]}")
        for column, name in enumerate(stages, start=1):
            gate = maps[name].gate[row].mean(-1)
            _panel(
                grid[row, column],
                image,
                box,
                f"{name.split('_')[0]} gate\n{gate.min():.2f}-{gate.max():.2f}",
            )
            _overlay(grid[row, column], gate, name, vmax=1.0)
        column = 1 + len(stages)
        for name in args.figure_layers:
            # L2 over all the layer's channels: sqrt of the sum over groups.
            before = np.sqrt((maps[name].norm_before[row] ** 2).sum(-1))
            after = np.sqrt((maps[name].norm_after[row] ** 2).sum(-1))
            scale = float(before.max()) or 1.0
            for values, label in (
                (before, "norm before"),
                (after, "norm after"),
            ):
                _panel(
                    grid[row, column],
                    image,
                    box,
                    f"{name.split('_')[0]} {label}\nmax {values.max():.3g}",
                )
                _overlay(grid[row, column], values, name, vmax=scale)
                column += 1
    figure.suptitle(
        "Trained SGE-ResNet-18, held-out cluttered digits (green: the digit's "
        "box). Gate: mean over the groups, colour scale 0-1;\n"
        "feature norm: L2 over all channels, before and after SGE on one colour "
        "scale per layer and row",
        fontsize=8,
    )
    return _save(figure, os.path.join(args.out, "gate_maps.png"))


def _overlay(axes, values, layer_name, vmax):
    """A map over the image, each pixel in the colour of its cell."""
    stride, size = (
        stage_stride(layer_name),
        axes.get_images()[0].get_array().shape[0],
    )
    rows, cols = (_cell_edges(cells, stride, size) for cells in values.shape)
    axes.pcolormesh(
        cols, rows, values, cmap="jet", alpha=0.55, vmin=0, vmax=vmax
    )


def draw_summary(results, path):
    """Accuracy per seed; per layer, the gate ratio and the norm ratios."""
    runs, summary = results["runs"], results["summary"]
    figure = _figure((13.5, 3.6))
    acc_axes, gate_axes, norm_axes = figure.subplots(
        1, 3, width_ratios=(1.3, 2.2, 2.2)
    )
    trained = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    for x, variant in enumerate(trained):
        values = [r["accuracy"] * 100 for r in runs if r["variant"] == variant]
        acc_axes.plot([x] * len(values), values, "o", alpha=0.6)
        acc_axes.errorbar(
            x + 0.2,
            np.mean(values),
            yerr=np.std(values, ddof=1) if len(values) > 1 else 0,
            fmt="k_",
            capsize=4,
        )
    acc_axes.set_xticks(
        range(len(trained)),
        [SHORT_NAMES[v].replace(", ", ",\n") for v in trained],
        fontsize=8,
    )
    acc_axes.set_xlim(-0.5, len(trained) - 0.5)
    acc_axes.set_ylabel("held-out accuracy (%)")
    acc_axes.set_title("accuracy, one dot per seed", fontsize=9)
    if "localisation" in summary:
        trained = summary["localisation"]["trained"]
        layers = list(trained)
        x = np.arange(len(layers))
        for values in zip(
            *[trained[layer]["gate_ratio"]["values"] for layer in layers]
        ):
            gate_axes.plot(x, values, "o", color="tab:blue", alpha=0.5)
        gate_axes.plot(
            x,
            [trained[layer]["gate_ratio"]["mean"] for layer in layers],
            "_",
            color="k",
            markersize=14,
            label="trained, mean",
        )
        gate_axes.axhline(
            1.0,
            color="gray",
            linestyle="--",
            label="initialisation (measured: 1)",
        )
        gate_axes.set_ylabel("mean gate on digit / off digit")
        gate_axes.set_title(
            "where the gates point, one dot per seed", fontsize=9
        )
        gate_axes.legend(fontsize=7)
        for offset, (key, label) in zip(
            (-0.12, 0.12),
            (
                ("norm_ratio_before", "before SGE"),
                ("norm_ratio_after", "after SGE"),
            ),
        ):
            means = [trained[layer][key]["mean"] for layer in layers]
            stds = [trained[layer][key]["std"] for layer in layers]
            norm_axes.errorbar(
                x + offset, means, yerr=stds, fmt="o", capsize=3, label=label
            )
        norm_axes.axhline(1.0, color="gray", linestyle="--")
        norm_axes.set_ylabel("feature norm on digit / off digit")
        norm_axes.set_title(
            "feature norms, trained, mean ± std over seeds", fontsize=9
        )
        norm_axes.legend(fontsize=7)
        for axes in (gate_axes, norm_axes):
            axes.set_xticks(
                x,
                [
                    layer.replace("_sge", "").replace("_block", "\nblock")
                    for layer in layers
                ],
                fontsize=7,
            )
    return _save(figure, path)


def _save(figure, path):
    figure.savefig(path, dpi=80)
    return path


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
        write_markdown(results, os.path.join(args.out, "RESULTS.md")),
        draw_summary(results, os.path.join(args.out, "localisation.png")),
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
        "machine": machine(),
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
        write_markdown(results, os.path.join(args.out, "RESULTS.md")),
        draw_summary(results, os.path.join(args.out, "localisation.png")),
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
