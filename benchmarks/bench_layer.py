"""Benchmark 1: one SGE layer against `x * y` on the same tensor.

Run from the repository root:

    python -m benchmarks.bench_layer                    # TF, float32, CPU
    python -m benchmarks.bench_layer --rounds 3 --reps 3   # quick
    KERAS_BACKEND=jax python -m benchmarks.bench_layer --dtype mixed_bfloat16

Variants, timed interleaved in one process (see benchmarks/common.py), by
display label (each result also carries its stable `id`, in parentheses;
benchmarks/ids.py):

- `x*y` (`xy`): a plain elementwise multiply of the input by a
  same-shaped tensor (2 reads, 1 write): the yardstick.
- `SGE (before)` (`sge_before`): benchmarks/baseline_sge.py, the first,
  straightforward layer (straightforward keras.ops, autodiff gradient).
- `SGE` (`sge`): keras_sge.SGE as it is now (one code path in plain ops,
  custom VJP), the same ops every mode and every exported graph runs.
- `SGE (other)` (`sge_other`, `--compare-with DIR`): the layer of another
  checkout of keras_sge (e.g. `git archive` of an earlier commit, unpacked
  in DIR), imported beside this one: a before/after comparison in one
  process.

Modes: TensorFlow `eager`, `function` (tf.function) and `xla`
(tf.function(jit_compile=True)); JAX `eager` and `jit`; PyTorch `eager`.
Forward, and forward+backward (gradient w.r.t. the input and the weights,
with a fixed upstream gradient). Ratios are per round against `x*y` in the
same mode and pass; the table gives median [min-max] over rounds.
"""

import argparse

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

import keras_sge  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks import ids  # noqa: E402
from benchmarks.baseline_sge import BaselineSGE  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--shape", default="8,56,56,256", help="N,H,W,C (channels_last)"
    )
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument(
        "--dtype",
        default="float32",
        help="float32, mixed_float16 or mixed_bfloat16",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=5, help="calls per timing")
    parser.add_argument(
        "--modes",
        default=None,
        help="comma list; default: all of the backend's",
    )
    parser.add_argument("--no-backward", action="store_true")
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where the JSON result goes (default benchmarks/results)",
    )
    parser.add_argument(
        "--tag",
        default=None,
        help="suffix of the result's name (default: backend, device, dtype)",
    )
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="do not rewrite RESULTS.md / the plot",
    )
    parser.add_argument(
        "--compare-with",
        metavar="DIR",
        help="another checkout of the repository: time its layer too",
    )
    return parser.parse_args(argv)


def backend_modes():
    return {
        "tensorflow": ["eager", "function", "xla"],
        "jax": ["eager", "jit"],
        "torch": ["eager"],
    }[keras.backend.backend()]


def device_name():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.devices()[0].platform
    if backend == "torch":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def grad_fn(fn):
    """fn(x, g, b) -> output; returns f(x, g, b, dy) -> (dx, dg, db)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def f(x, g, b, dy):
            with tf.GradientTape() as tape:
                tape.watch([x, g, b])
                y = fn(x, g, b)
            grads = tape.gradient(y, [x, g, b], output_gradients=dy)
            return [v for v in grads if v is not None]

        return f
    if backend == "jax":
        import jax

        def f(x, g, b, dy):
            _, vjp = jax.vjp(fn, x, g, b)
            return vjp(dy)

        return f

    import torch

    def f(x, g, b, dy):
        x = x.detach().requires_grad_(True)
        g = g.detach().requires_grad_(True)
        b = b.detach().requires_grad_(True)
        y = fn(x, g, b)
        grads = torch.autograd.grad(y, [x, g, b], dy, allow_unused=True)
        return [v for v in grads if v is not None]

    return f


def wrap(fn, mode):
    backend = keras.backend.backend()
    if backend == "tensorflow" and mode in ("function", "xla"):
        import tensorflow as tf

        return tf.function(fn, jit_compile=(mode == "xla"), autograph=False)
    if backend == "jax" and mode == "jit":
        import jax

        return jax.jit(fn)
    return fn


def build_variants(args, mode):
    shape = tuple(int(v) for v in args.shape.split(","))
    policy = keras.dtype_policies.get(args.dtype)
    dtype = policy.compute_dtype
    rng = np.random.default_rng(0)
    x = ops.cast(
        ops.convert_to_tensor(rng.standard_normal(shape).astype("float32")),
        dtype,
    )
    y_other = ops.cast(
        ops.convert_to_tensor(rng.standard_normal(shape).astype("float32")),
        dtype,
    )
    dy = ops.cast(
        ops.convert_to_tensor(rng.standard_normal(shape).astype("float32")),
        dtype,
    )
    gamma = ops.convert_to_tensor(
        rng.standard_normal(args.groups).astype("float32")
    )
    beta = ops.convert_to_tensor(
        rng.standard_normal(args.groups).astype("float32")
    )

    new = keras_sge.SGE(args.groups, data_format="channels_last", dtype=policy)
    old = BaselineSGE(args.groups, data_format="channels_last", dtype=policy)
    layers = [new, old]
    if args.compare_with:
        other_sge = common.import_other_checkout(
            args.compare_with, "layers.sge"
        )
        other = other_sge.SGE(
            args.groups, data_format="channels_last", dtype=policy
        )
        layers.append(other)
    for layer in layers:
        layer.build(shape)

    def xy(x, g, b):
        return x * y_other

    def layer_fn(layer):
        def f(x, g, b):
            return layer.stateless_call([g, b], [], x)[0]

        return f

    # By id (benchmarks/ids.py, LAYER_VARIANTS: the labels).
    forward = {
        "xy": xy,
        "sge_before": layer_fn(old),
        "sge": layer_fn(new),
    }
    if args.compare_with:
        # with that checkout's own defaults (an older one may compile)
        forward["sge_other"] = layer_fn(other)

    variants = {}
    for name, fn in forward.items():
        f = wrap(fn, mode)
        variants[("fwd", name)] = lambda f=f: f(x, gamma, beta)
        if not args.no_backward:
            g = wrap(grad_fn(fn), mode)
            variants[("fwd+bwd", name)] = lambda g=g: g(x, gamma, beta, dy)
    return variants


def check_numbers(args):
    """The new layer and the baseline agree on this benchmark's input."""
    shape = tuple(int(v) for v in args.shape.split(","))
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    new = keras_sge.SGE(
        args.groups,
        data_format="channels_last",
        gamma_initializer="random_normal",
    )
    old = BaselineSGE(args.groups, data_format="channels_last")
    new.build(shape)
    old.build(shape)
    old.set_weights(new.get_weights())
    a = ops.convert_to_numpy(new(x))
    b = ops.convert_to_numpy(old(x))
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main(argv=None):
    args = parse_args(argv)
    modes = args.modes.split(",") if args.modes else backend_modes()
    info = common.machine()
    info["device"] = device_name()
    common.log(f"machine: {info}")
    rel_err = check_numbers(args)
    common.log(
        f"max |new - before| / max|before| on the benchmark input: {rel_err:.2e}"
    )
    results = {}
    for mode in modes:
        common.log(f"mode {mode}: building and warming up")
        variants = build_variants(args, mode)
        names = {
            key: f"{key[0]} {ids.LAYER_VARIANTS[key[1]]}" for key in variants
        }
        times = common.interleaved(
            {names[k]: v for k, v in variants.items()},
            args.rounds,
            args.reps,
            log=common.log,
        )
        for (kind, vid), label in names.items():
            baseline = names[(kind, ids.LAYER_BASELINE)]
            results[f"{mode}|{kind}|{vid}"] = {
                "mode": mode,
                "pass": kind,
                "id": vid,
                "variant": ids.LAYER_VARIANTS[vid],
                "time_s": common.summary(times[label]),
                "ratio_vs_xy": common.summary(
                    common.ratios(times, label, baseline)
                ),
            }
        for key, r in results.items():
            if r["mode"] == mode:
                common.log(
                    f"{mode:9s} {r['pass']:8s} {r['variant']:16s} "
                    f"{common.fmt_ms(r['time_s']):>8s} ms  "
                    f"ratio {common.fmt_ratio(r['ratio_vs_xy'])}"
                )
    tag = args.tag or f"{keras.backend.backend()}_{info['device']}_{args.dtype}"
    payload = {
        "benchmark": "layer",
        "shape": args.shape,
        "groups": args.groups,
        "dtype": args.dtype,
        "rounds": args.rounds,
        "reps": args.reps,
        "machine": info,
        "max_rel_diff_new_vs_before": rel_err,
        "results": results,
    }
    path = common.save_result(f"layer_{tag}", payload, args.out_dir)
    common.log(f"wrote {path}")
    if not args.no_report:
        from benchmarks import report

        report.main([])


if __name__ == "__main__":
    main()
