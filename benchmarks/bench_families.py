"""`add_attention` across model families: parameters, multiply-adds, time.

Run from the repository root (about 10 minutes on 2 CPU cores with the
defaults, the optional families aside; `--quick`: a smoke run of half a
minute):

    python -m benchmarks.bench_families
    python -m benchmarks.bench_families --families resnet50,mobilenetv2
    python -m benchmarks.bench_families --all --batch 8 --rounds 5
    python -m benchmarks.bench_families --render results/families_X.json \
        --note "..."    # rewrite a saved result's table, with a note

For each family, three models with random weights (`weights=None`), each
family in turn and freed before the next:

- `plain`: the family's classifier as Keras builds it (`include_top=True`,
  1000 classes), at `--size` (224 by default, for every family; `--size 0`
  takes each family's own default size: EfficientNetB1 240, ...). KerasHub's
  `ResNetBackbone` (ResNet-50's configuration, when keras_hub is installed)
  is a backbone: no classifier, the last feature map is its output;
- `sge`: `keras_sge.add_attention(plain, "sge")` (groups 64 at most);
- `se`: `keras_sge.add_attention(plain, "se", fold=False)`: SE's initial
  gate depends on the data, so there is nothing to fold (`fold=False`
  inserts the same layers without the warning that says so).

Per variant: trainable parameters and multiply-adds per image by
`keras_sge.model_cost` under the `standard` and the `paper` conventions
(keras_sge/cost.py). Inference time: `model.predict_step` under
`tf.function` (TensorFlow; what `predict` and `predict_on_batch` run per
batch) or `jax.jit` (JAX), at `--batch`, the three variants interleaved
(benchmarks/common.py), `--reps` calls per timing (by default as many as
fill `--min-time` seconds for the plain model); ratios are per round, the
table gives median [min-max]. The raw seconds of every round are saved in
benchmarks/results/families_<tag>.json (tag: backend, device, dtype), the
table in results/families.md (TensorFlow, CPU, float32) or
results/families_<tag>.md.
"""

import argparse
import gc
import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from benchmarks import common

# id -> (display name, builder name in keras.applications)
APPLICATIONS = {
    "resnet50": ("ResNet50", "ResNet50"),
    "resnet101": ("ResNet101", "ResNet101"),
    "resnet152": ("ResNet152", "ResNet152"),
    "resnet50v2": ("ResNet50V2", "ResNet50V2"),
    "resnet101v2": ("ResNet101V2", "ResNet101V2"),
    "resnet152v2": ("ResNet152V2", "ResNet152V2"),
    "mobilenetv2": ("MobileNetV2", "MobileNetV2"),
    "efficientnetb0": ("EfficientNetB0", "EfficientNetB0"),
    "efficientnetv2b0": ("EfficientNetV2B0", "EfficientNetV2B0"),
    "convnexttiny": ("ConvNeXtTiny", "ConvNeXtTiny"),
}
OPTIONAL_APPLICATIONS = {
    **{f"efficientnetb{i}": (f"EfficientNetB{i}",) * 2 for i in range(1, 8)},
    **{
        f"efficientnetv2{v.lower()}": (f"EfficientNetV2{v}",) * 2
        for v in ("B1", "B2", "B3", "S", "M", "L")
    },
}
HUB_FAMILY = "hub_resnet50"
DEFAULT_FAMILIES = (*APPLICATIONS, HUB_FAMILY)
ALL_FAMILIES = (*DEFAULT_FAMILIES, *OPTIONAL_APPLICATIONS)
QUICK_FAMILIES = ("resnet50", "mobilenetv2", "efficientnetb0")
# id -> display label of the variants; ratios are "<id>/plain".
VARIANTS = {"plain": "plain", "sge": "+SGE", "se": "+SE"}
CONVENTIONS = ("standard", "paper")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--families",
        default=None,
        help="comma-separated ids (default: "
        f"{','.join(DEFAULT_FAMILIES)}); also {','.join(OPTIONAL_APPLICATIONS)}",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="the defaults and EfficientNetB1-B7, EfficientNetV2B1-L",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{','.join(QUICK_FAMILIES)}, batch 2, 2 rounds: a smoke run",
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--reps",
        type=int,
        default=0,
        help="calls per timing (0: as many as fill --min-time)",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=1.0,
        help="seconds per timing of the plain model when --reps is 0",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=224,
        help="input side (0: each family's default)",
    )
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument(
        "--dtype",
        default="float32",
        help="Keras policy: float32, mixed_float16, mixed_bfloat16",
    )
    parser.add_argument("--out-dir", default=None)
    parser.add_argument(
        "--note",
        default=None,
        help="a line on the conditions, saved and printed under the table",
    )
    parser.add_argument(
        "--render",
        metavar="JSON",
        default=None,
        help="rewrite the markdown of a saved result (and its --note); no timing",
    )
    parser.add_argument(
        "--tag", default=None, help="results file suffix (default: derived)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.rounds = 2, 2
        args.families = args.families or ",".join(QUICK_FAMILIES)
    if args.families:
        families = tuple(f for f in args.families.split(",") if f)
    else:
        families = ALL_FAMILIES if args.all else DEFAULT_FAMILIES
    unknown = sorted(set(families) - set(ALL_FAMILIES))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {ALL_FAMILIES}")
    args.families = families
    return args


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def build_plain(family, size):
    """(model, display name, input side) of a family, random weights."""
    if family == HUB_FAMILY:
        import keras_hub

        side = size or 224
        model = keras_hub.models.ResNetBackbone(
            # ResNet-50's configuration (keras_hub's resnet_50 presets).
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 128, 256, 512],
            stackwise_num_blocks=[3, 4, 6, 3],
            stackwise_num_strides=[1, 2, 2, 2],
            block_type="bottleneck_block",
            use_pre_activation=False,
            image_shape=(side, side, 3),
        )
        return model, "KerasHub ResNetBackbone (ResNet-50, no head)", side
    name, builder = {**APPLICATIONS, **OPTIONAL_APPLICATIONS}[family]
    builder = getattr(keras.applications, builder)
    kwargs = {"input_shape": (size, size, 3)} if size else {}
    model = builder(weights=None, include_top=True, classes=1000, **kwargs)
    return model, name, int(model.input_shape[1])


def hub_available():
    try:
        import keras_hub  # noqa: F401
    except ImportError:
        return False
    return True


def variants_of(plain, groups):
    import keras_sge

    return {
        "plain": plain,
        "sge": keras_sge.add_attention(plain, "sge", groups=groups),
        # SE's initial gate depends on the data: nothing folds, and
        # fold=False says so instead of the warning.
        "se": keras_sge.add_attention(plain, "se", fold=False),
    }


def costs(model):
    import keras_sge

    out = {"non_trainable_params": None}
    for convention in CONVENTIONS:
        cost = keras_sge.model_cost(model, convention)
        out["params"] = cost.params
        out["non_trainable_params"] = cost.non_trainable_params
        out[f"macs_{convention}"] = cost.macs
    return out


def inference_fn(model):
    """`x -> outputs` as Keras's predict runs it, compiled once."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # As bench_resnet: `predict_step` under tf.function, what
        # `predict` and `predict_on_batch` run per batch.
        return tf.function(model.predict_step)
    if backend == "jax":
        import jax

        @jax.jit
        def infer(tv, ntv, x):
            return model.stateless_call(tv, ntv, x, training=False)[0]

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        return lambda x: infer(tv, ntv, x)
    raise SystemExit("bench_families supports the tensorflow and jax backends")


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def measure_family(family, args, log):
    started = time.perf_counter()
    keras.utils.set_random_seed(0)
    plain, name, side = build_plain(family, args.size)
    models = variants_of(plain, args.groups)
    entry = {
        "id": family,
        "family": name,
        "size": side,
        "batch": args.batch,
        "variants": {},
        "ratios": {},
    }
    for vid, model in models.items():
        entry["variants"][vid] = {"id": vid, "label": VARIANTS[vid]}
        entry["variants"][vid].update(costs(model))
    images = np.random.default_rng(0).uniform(
        -2, 2, (args.batch, side, side, 3)
    )
    x = keras.ops.convert_to_tensor(images.astype("float32"))
    fns = {vid: inference_fn(model) for vid, model in models.items()}
    calls = {vid: (lambda f=f: f(x)) for vid, f in fns.items()}
    built_s = time.perf_counter() - started
    reps = args.reps
    if not reps:
        # Also traces / compiles the plain model before it is timed.
        common.sync(calls["plain"]())
        one = common.time_call(calls["plain"], 1)
        reps = max(1, math.ceil(args.min_time / one))
    log(f"  built in {built_s:.0f} s; {reps} call(s) per timing")
    times = common.interleaved(calls, args.rounds, reps, warmup=2, log=log)
    for vid in models:
        entry["variants"][vid]["time_s"] = common.summary(times[vid])
        entry["variants"][vid]["times_s"] = times[vid]
    for vid in ("sge", "se"):
        per_round = common.ratios(times, vid, "plain")
        entry["ratios"][f"{vid}/plain"] = {
            "id": f"{vid}/plain",
            "label": f"{VARIANTS[vid]} / plain",
            "summary": common.summary(per_round),
            "per_round": per_round,
        }
    entry["reps"] = reps
    entry["build_s"] = built_s
    entry["wall_s"] = time.perf_counter() - started
    del models, fns, calls, plain
    keras.backend.clear_session()
    gc.collect()
    return entry


def fmt_params(v):
    return f"{v / 1e6:.3f}"


def fmt_gmacs(v):
    return f"{v / 1e9:.3f}"


def markdown_table(payload):
    lines = [
        "| family | input | params (M) plain / +SGE / +SE "
        "| multiply-adds (G), standard: plain / +SGE / +SE "
        "| multiply-adds (G), paper: plain / +SGE / +SE "
        "| plain ms | time SGE / plain | time SE / plain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in payload["results"].values():
        v = entry["variants"]
        cells = [
            entry["family"],
            str(entry["size"]),
            " / ".join(fmt_params(v[k]["params"]) for k in VARIANTS),
            " / ".join(fmt_gmacs(v[k]["macs_standard"]) for k in VARIANTS),
            " / ".join(fmt_gmacs(v[k]["macs_paper"]) for k in VARIANTS),
            f"{v['plain']['time_s']['median'] * 1e3:.0f}",
            common.fmt_ratio(entry["ratios"]["sge/plain"]["summary"]),
            common.fmt_ratio(entry["ratios"]["se/plain"]["summary"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def conditions_line(payload):
    m = payload["machine"]
    versions = ", ".join(
        f"{k} {m[k]}"
        for k in ("python", "keras", "tensorflow", "jax", "keras_hub")
        if m.get(k)
    )
    gpu = f"; GPU: {m['gpu']}" if m.get("gpu") else ""
    return (
        f"Batch {payload['batch']}, {payload['rounds']} interleaved rounds, "
        f"policy `{payload['dtype']}`, random weights; {payload['date']}. "
        f"Machine: {m.get('cpu')} ({m.get('cpu_count')} logical cores{gpu}), "
        f"load average {m.get('load_average_at_start') or 0:.1f} at start"
        + (
            f", {payload['load_average_max']:.1f} at most after a family; "
            if payload.get("load_average_max") is not None
            else "; "
        )
        + f"Keras backend {m.get('keras_backend')}; {versions}. "
        f"Run took {payload.get('wall_s', 0) / 60:.1f} min."
    )


def markdown(payload):
    return (
        "# `add_attention` across families\n\n"
        "Generated by `python -m benchmarks.bench_families` "
        f"(`{payload['file']}`).\n\n"
        + markdown_table(payload)
        + "\n\nParameters: trainable. Multiply-adds per image by "
        "`keras_sge.model_cost` (keras_sge/cost.py). Time: "
        "`predict_step` compiled, the three models interleaved; ratios per "
        "round, median [min-max].\n\n"
        + conditions_line(payload)
        + (f"\n\n{payload['note']}" if payload.get("note") else "")
        + "\n"
    )


def markdown_path(json_path):
    """results/families.md for the CPU float32 run, else families_<tag>.md."""
    json_path = Path(json_path)
    tag = json_path.stem.removeprefix("families_")
    # The CPU float32 run is the reference table; others name their tag.
    name = (
        "families.md"
        if tag == "tensorflow_cpu_float32"
        else f"families_{tag}.md"
    )
    return json_path.parent / name


def render(json_path, note=None):
    """Rewrites a saved result's markdown (and its note): no timing."""
    payload = json.loads(Path(json_path).read_text())
    if note is not None:
        payload["note"] = note
        Path(json_path).write_text(json.dumps(payload, indent=1, default=str))
    md_path = markdown_path(json_path)
    md_path.write_text(markdown(payload))
    common.log(markdown_table(payload) + "\n\n" + conditions_line(payload))
    common.log(f"\nwrote {md_path}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.render:
        return render(args.render, args.note)
    started = time.perf_counter()
    if args.dtype != "float32":
        keras.mixed_precision.set_global_policy(args.dtype)
    info = common.machine()
    if hub_available():
        import keras_hub

        info["keras_hub"] = keras_hub.__version__
    common.log(f"machine: {info}")
    families = [f for f in args.families if f != HUB_FAMILY or hub_available()]
    skipped = [f for f in args.families if f not in families]
    if skipped:
        common.log(f"skipped (keras_hub not installed): {skipped}")
    tag = args.tag or (
        "quick"
        if args.quick
        else f"{keras.backend.backend()}_{'gpu' if info.get('gpu') else 'cpu'}_"
        f"{args.dtype}"
    )
    payload = {
        "benchmark": "families",
        "file": f"families_{tag}.json",
        "batch": args.batch,
        "rounds": args.rounds,
        "size": args.size,
        "groups": args.groups,
        "dtype": args.dtype,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": info,
        "skipped": skipped,
        "note": args.note,
        "load_average_max": None,
        "results": {},
    }
    path = None
    for family in families:
        common.log(f"{family} ...")
        entry = measure_family(family, args, common.log)
        payload["results"][family] = entry
        common.log(
            f"  SGE / plain {common.fmt_ratio(entry['ratios']['sge/plain']['summary'])}, "
            f"SE / plain {common.fmt_ratio(entry['ratios']['se/plain']['summary'])} "
            f"({entry['wall_s']:.0f} s)"
        )
        payload["wall_s"] = time.perf_counter() - started
        payload["load_average_max"] = max(
            payload["load_average_max"] or 0.0, os.getloadavg()[0]
        )
        path = common.save_result(f"families_{tag}", payload, args.out_dir)
    if path is None:
        common.log("no family measured")
        return 1
    table = markdown_table(payload)
    common.log("\n" + table + "\n\n" + conditions_line(payload))
    md_path = markdown_path(path)
    md_path.write_text(markdown(payload))
    common.log(f"\nwrote {path} and {md_path}")
    return 0


if __name__ == "__main__":
    main()
