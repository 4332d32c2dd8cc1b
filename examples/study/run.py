"""Do SGE's gates pick out the object? The second cluttered-digits study.

    python -m examples.study.run --out docs/study/v2            # the full study
    python -m examples.study.run --out /tmp/s --tiny             # seconds: a smoke test
    python -m examples.study.run --out docs/study/v2 --report    # tables again from the JSON

Trains the study's small ResNet (`examples.study.network`) in the arms
asked for (A: SGE, weight decay on everything; B: SGE, none on gamma and
beta; C: plain; D: plain with branches x 0.731 at init), once per seed,
seed-major (every arm of seed 0, then seed 1, ...). Per epoch it records the
training loss and accuracy, the held-out accuracy and, per SGE layer, the
mean and median |gamma| and the mean beta. For the SGE arms it then
measures the gates and c_hat on the first `--inspect-images` held-out
images (`examples.study.measures`), before and after training, and knocks
SGE out (gate -> its spatial mean; gamma -> 0) to measure the accuracy
each costs on every held-out image.

Each (arm, seed) is written to `--out/runs/` as it ends, and a rerun with
the same settings skips what is there (resume after an interruption).
`--out/results.json` (every number, the configuration, machine, versions
and wall time) and `--out/RESULTS.md` are rewritten after each run; the
decision rule of docs/study/DESIGN.md (`examples.study.decision`) is
applied to what is complete.
"""

import argparse
import datetime
import json
import os
import sys
import time

from examples.training import cli

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
cli.tensorflow_defaults()

import numpy as np  # noqa: E402

from examples.study import common  # noqa: E402

ARMS = ("A", "B", "C", "D")
TINY = {
    "train_images": 64,
    "val_images": 32,
    "inspect_images": 16,
    "batch_size": 16,
}
FIGURE_IMAGES = 4
# The settings that make a run what it is: a resumed study must match.
RUN_KEYS = (
    "epochs",
    "batch_size",
    "peak_lr",
    "warmup_epochs",
    "weight_decay",
    "momentum",
    "image_size",
    "clutter",
    "train_images",
    "val_images",
    "inspect_images",
    "data_seed",
)


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m examples.study.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default=os.path.join("docs", "study", "v2"))
    p.add_argument("--epochs", type=int, default=18)
    p.add_argument(
        "--seeds",
        default="3",
        help="N (seeds 0..N-1) or a comma-separated list of seeds",
    )
    p.add_argument(
        "--arms",
        default=",".join(ARMS),
        help="comma-separated subset of A,B,C,D",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--peak-lr", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--clutter", type=int, default=6)
    p.add_argument("--train-images", type=int, default=6000)
    p.add_argument("--val-images", type=int, default=2000)
    p.add_argument(
        "--inspect-images",
        type=int,
        default=1000,
        help="the first N held-out images, for the gate measures",
    )
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="TensorFlow threads")
    p.add_argument(
        "--no-jit",
        action="store_true",
        help="train without XLA (slower; the same maths)",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help=(
            "a smoke test: "
            + ", ".join(f"{k}={v}" for k, v in TINY.items())
            + " (overrides those options)"
        ),
    )
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0)
    p.add_argument(
        "--report",
        action="store_true",
        help="train nothing: results.json and RESULTS.md again from runs/",
    )
    p.add_argument(
        "--no-figure", action="store_true", help="skip the gate-map figure"
    )
    p.add_argument(
        "--weights-dir",
        default=None,
        help="also save each trained network's weights there (not in --out)",
    )
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    try:
        if "," in args.seeds:
            args.seed_list = [int(s) for s in args.seeds.split(",")]
        else:
            args.seed_list = list(range(int(args.seeds)))
    except ValueError:
        parser.error(
            f"--seeds: N or a list of integers. Received: {args.seeds!r}"
        )
    args.arm_list = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in args.arm_list if a not in ARMS]
    if bad or not args.arm_list or not args.seed_list:
        parser.error(
            f"--arms: a subset of {','.join(ARMS)}. Received: {args.arms!r}"
        )
    for name in ("epochs", "batch_size", "train_images", "val_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if not 2 <= args.inspect_images <= args.val_images:
        parser.error("--inspect-images must be in [2, --val-images]")
    if args.warmup_epochs >= args.epochs and args.epochs > 1:
        parser.error("--warmup-epochs must be below --epochs")
    return args


def configuration(args):
    steps = -(-args.train_images // args.batch_size)
    config = {key: getattr(args, key) for key in RUN_KEYS}
    config.update(
        steps_per_epoch=steps,
        warmup_epochs=min(args.warmup_epochs, args.epochs),
        seeds=args.seed_list,
        arms=args.arm_list,
        threads=args.threads,
        jit_compile=not args.no_jit,
        tiny=args.tiny,
        recipe=(
            "SGD momentum 0.9, coupled L2 weight decay (gradient + wd * w) on "
            "every weight (arm B: none on SGE's gamma and beta), linear "
            "warm-up then cosine to 0 per step, no augmentation, float32"
        ),
        command="python -m examples.study.run " + " ".join(sys.argv[1:]),
    )
    return config


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def load_task(config):
    from examples.training import cluttered

    data = cluttered.load_cluttered_digits(
        config["image_size"],
        config["train_images"],
        config["val_images"],
        config["clutter"],
        seed=config["data_seed"],
    )
    # Gray canvases repeated over RGB; standardised with the training
    # images' mean and std (one number each).
    scaled = data.train.images.astype("float32") / 255.0
    mean, std = float(scaled.mean()), float(scaled.std())

    def prepare(images):
        return ((images.astype("float32") / 255.0) - mean) / std

    return data, prepare, {"pixel_mean": mean, "pixel_std": std}


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------


def _sge_state(model):
    from examples.study import network

    return {
        layer.name: {
            "gamma_abs_mean": float(np.abs(layer.gamma.numpy()).mean()),
            "gamma_abs_median": float(np.median(np.abs(layer.gamma.numpy()))),
            "gamma_mean": float(layer.gamma.numpy().mean()),
            "beta_mean": float(layer.beta.numpy().mean()),
        }
        for layer in network.sge_layers(model)
    }


def _epoch_logger(model, history):
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.time()
            history.append({"epoch": 0, "sge": _sge_state(model)})

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            history.append(
                {
                    "epoch": epoch + 1,
                    "seconds": time.time() - self.start,
                    "loss": float(logs.get("loss", np.nan)),
                    "accuracy": float(logs.get("accuracy", np.nan)),
                    "val_accuracy": float(logs.get("val_accuracy", np.nan)),
                    "val_loss": float(logs.get("val_loss", np.nan)),
                    "sge": _sge_state(model),
                }
            )

    return EpochLog()


def gate_measures(model, images, split, count):
    """`measures.layer_measures` for every SGE layer on the first images."""
    from examples.study import measures
    from examples.study import network
    from keras_sge import inspect

    maps = inspect.inspect_sge(
        model, images[:count], layers="all", batch_size=100
    )
    result = {}
    for layer in network.sge_layers(model):
        m = maps[layer.name]
        result[layer.name] = measures.layer_measures(
            m.inputs,
            m.gate,
            layer.gamma.numpy(),
            layer.beta.numpy(),
            split.boxes[:count],
            split.clutter_boxes[:count],
            network.layer_stride(layer.name),
        )
    return result


def correct_per_image(model, images, labels):
    predictions = model.predict(images, batch_size=500, verbose=0)
    return np.argmax(predictions, -1) == labels


def run_one(arm, seed, config, data, prepare, out, weights_dir=None):
    """Trains and measures one (arm, seed); returns its record."""
    import keras

    from examples.study import measures
    from examples.study import network

    start = time.time()
    model = network.compiled_network(arm, seed, config)
    train_x, val_x = prepare(data.train.images), prepare(data.val.images)
    record = {"arm": arm, "seed": seed, "arm_name": network.ARM_NAMES[arm]}
    sge = arm in network.SGE_ARMS
    count = config["inspect_images"]
    if sge:
        record["measures_init"] = gate_measures(model, val_x, data.val, count)
    history = []
    keras.utils.set_random_seed(seed)  # the same batches in every arm
    fit_start = time.time()
    model.fit(
        train_x,
        data.train.labels,
        batch_size=config["batch_size"],
        epochs=config["epochs"],
        shuffle=True,
        validation_data=(val_x, data.val.labels),
        validation_batch_size=500,
        callbacks=[_epoch_logger(model, history)],
        verbose=config.get("verbose", 0),
    )
    record["train_seconds"] = time.time() - fit_start
    record["history"] = history
    correct = correct_per_image(model, val_x, data.val.labels)
    record["val_accuracy"] = float(correct.mean())
    if weights_dir:
        os.makedirs(weights_dir, exist_ok=True)
        model.save_weights(
            os.path.join(weights_dir, f"{arm}_seed{seed}.weights.h5")
        )
    if sge:
        record["measures"] = gate_measures(model, val_x, data.val, count)
        record["knockouts"] = {}
        for kind in ("gate_mean", "gamma_zero"):
            knocked = network.knockout(model, arm, kind, config["image_size"])
            record["knockouts"][kind] = measures.paired_drop(
                correct, correct_per_image(knocked, val_x, data.val.labels)
            )
            del knocked
        if seed == config["seeds"][0] and out is not None:
            from examples.study import report

            record["figure"] = report.draw_gate_maps(
                model,
                val_x[:FIGURE_IMAGES],
                data.val,
                os.path.join(out, f"gate_maps_{arm}_seed{seed}.png"),
                arm,
            )
    record["seconds"] = time.time() - start
    keras.backend.clear_session()
    return record


# ---------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------


def run_path(out, arm, seed):
    return os.path.join(out, "runs", f"{arm}_seed{seed}.json")


def load_runs(out, config):
    """The finished runs under `out/runs` (all of them must match `config`)."""
    folder = os.path.join(out, "runs")
    runs = []
    if not os.path.isdir(folder):
        return runs
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            record = json.load(f)
        if config is not None:
            differ = [
                k for k in RUN_KEYS if record["config"].get(k) != config[k]
            ]
            if differ:
                raise SystemExit(
                    f"{folder}/{name} was made with other settings "
                    f"({', '.join(differ)}): use another --out"
                )
        runs.append(record)
    return runs


def write_json(path, value):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
    os.replace(temporary, path)


def write_results(out, config, machine_info, runs, invocations):
    """results.json, summary.png and RESULTS.md from the finished runs.

    `invocations`: one `{"command", "started", "seconds"}` per call of
    the script that trained some of `runs` (a resumed study has several);
    the wall time is their sum.
    """
    from examples.study import decision
    from examples.study import report

    expected = [(a, s) for s in config["seeds"] for a in config["arms"]]
    done = {(r["arm"], r["seed"]) for r in runs}
    results = {
        "config": config,
        "machine": machine_info,
        "started": invocations[0]["started"],
        "wall_seconds": sum(i["seconds"] for i in invocations),
        "invocations": invocations,
        "complete": all(key in done for key in expected),
        "summary": decision.summarise(runs, config),
        "runs": runs,
    }
    write_json(os.path.join(out, "results.json"), results)
    report.draw_summary(results, os.path.join(out, "summary.png"))
    report.write_markdown(results, os.path.join(out, "RESULTS.md"))
    return results


def main(argv=None):
    args = parse_args(argv)
    config = configuration(args)
    os.makedirs(os.path.join(args.out, "runs"), exist_ok=True)
    if args.report:
        path = os.path.join(args.out, "results.json")
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        runs = load_runs(args.out, None)
        write_results(
            args.out,
            previous["config"],
            previous["machine"],
            runs,
            _invocations(previous),
        )
        print(f"Wrote {args.out}/results.json and RESULTS.md")
        return 0
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    except RuntimeError:
        # TensorFlow already started in this process (e.g. under pytest):
        # its thread pools stay as they are, and the config says so.
        config["threads"] = "unchanged (TensorFlow already initialised)"
    start = time.time()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    info = common.machine()
    data, prepare, pixel_stats = load_task(config)
    config.update(pixel_stats, verbose=args.verbose)
    out_for_figure = None if args.no_figure else args.out
    runs = load_runs(args.out, config)
    invocations = []
    previous_path = os.path.join(args.out, "results.json")
    if runs and os.path.exists(previous_path):
        with open(previous_path, encoding="utf-8") as f:
            invocations = _invocations(json.load(f))
    invocations.append(
        {"command": config["command"], "started": started, "seconds": 0.0}
    )
    done = {(r["arm"], r["seed"]) for r in runs}
    for seed in config["seeds"]:
        for arm in config["arms"]:
            if (arm, seed) in done:
                print(f"arm {arm}, seed {seed}: done before, kept", flush=True)
                continue
            record = run_one(
                arm,
                seed,
                config,
                data,
                prepare,
                out_for_figure,
                args.weights_dir,
            )
            record["config"] = {k: config[k] for k in RUN_KEYS}
            record["finished"] = datetime.datetime.now().isoformat(
                timespec="seconds"
            )
            write_json(run_path(args.out, arm, seed), record)
            runs.append(record)
            print(
                f"arm {arm}, seed {seed}: val accuracy "
                f"{record['val_accuracy']:.4f}, {record['seconds']:.0f} s",
                flush=True,
            )
            invocations[-1]["seconds"] = time.time() - start
            write_results(args.out, config, info, runs, invocations)
    invocations[-1]["seconds"] = time.time() - start
    results = write_results(args.out, config, info, runs, invocations)
    print(
        f"Done in {(time.time() - start) / 60:.1f} min "
        f"(complete: {results['complete']}); wrote {args.out}/results.json "
        "and RESULTS.md"
    )
    return 0


def _invocations(results):
    """The invocations recorded in a results.json (older files: one)."""
    return results.get(
        "invocations",
        [
            {
                "command": results["config"]["command"],
                "started": results["started"],
                "seconds": results["wall_seconds"],
            }
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
