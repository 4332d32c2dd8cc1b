"""What SGE costs where models run: SGE-ResNet / ResNet in every runtime.

Run from the repository root (about 20 minutes on 2 CPU cores; `--quick`
for a smoke run of a few seconds per runtime):

    python -m benchmarks.bench_runtimes
    python -m benchmarks.bench_runtimes --runtimes jax_predict,jax_fit

Models, built once with random weights (same seed) and saved as `.keras`:

- `resnet`: the plain network (`groups=None`), the baseline of every ratio;
- `sge`: SGE-ResNet (the package's layer);
- `se`: SE-ResNet (`attention="se"`), which the paper shows costing more
  FLOPs than SGE: SGE should cost no more than it anywhere;
- `floor`: ResNet with every residual branch multiplied by its own spatial
  mean (`x * mean_hw(x)`, benchmarks/floor_attention.py): one read and one
  read-write pass over every block output, what any spatial gate costs
  before the maths. SGE needs one more read (the similarity map).

Runtimes, each in its own process (TensorFlow, JAX and PyTorch fight over
threads in one process), timing the models interleaved, round-robin with a
rotating order, one call per model per round:

- `tf_predict`, `tf_fit`: Keras on TensorFlow, `predict_on_batch` and
  `train_on_batch` (`fit`'s step; SGD momentum, cross-entropy);
- `tf_function`: `tf.function(lambda x: model(x, training=False))`;
- `savedmodel`: `model.export(dir)`, loaded by `tf.saved_model.load` in a
  process without keras_sge or Keras, `serve(x)`;
- `onnx_tf`: `model.export(f, format="onnx")` (tf2onnx) in onnxruntime;
- `onnx_tf_nchw`: the same models built with
  `data_format="channels_first"` (same weights), exported the same way:
  ONNX's convolutions are NCHW, so tf2onnx then needs no layout
  transposes around the convolutions, which it cannot move past SGE's
  reshapes in a channels_last graph;
- `litert`, `litert_dynamic`: `model.export(f, format="litert")`, float32
  and with `optimizations=[tf.lite.Optimize.DEFAULT]` (int8 weights);
- `jax_predict`, `jax_fit`, `torch_predict`, `torch_fit`: the `.keras`
  files on the JAX and PyTorch backends;
- `torch_reference`: the official PyTorch code (keras_sge/testing/
  torch_reference.py), eager, its own SGE-ResNet / ResNet / SE-less;
- `onnx_torch`: that reference exported by `torch.onnx.export`, in
  onnxruntime.

LiteRT and onnxruntime run with `--threads` threads. Ratios are per round
(model / resnet in the same round); the table gives median [min-max]; the
raw seconds are saved in benchmarks/results/runtimes_<tag>.json.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import common

RUNTIMES = (
    "tf_predict",
    "tf_fit",
    "tf_function",
    "savedmodel",
    "onnx_tf",
    "onnx_tf_nchw",
    "litert",
    "litert_dynamic",
    "jax_predict",
    "jax_fit",
    "torch_predict",
    "torch_fit",
    "torch_reference",
    "onnx_torch",
)
KERAS_MODELS = ("resnet", "sge", "se", "floor")
# The runtimes that run the official PyTorch code: it has no SE or floor.
REFERENCE_RUNTIMES = ("torch_reference", "onnx_torch")
TARGETS = {
    "tf_predict": 1.05,
    "tf_fit": 1.05,
    "jax_predict": 1.05,
    "jax_fit": 1.05,
    "torch_predict": 1.05,
    "torch_fit": 1.05,
    "tf_function": 1.10,
    "savedmodel": 1.10,
    "onnx_tf": 1.10,
    "litert": 1.10,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--reps", type=int, default=1, help="calls per model per round"
    )
    parser.add_argument(
        "--runtimes",
        default=",".join(RUNTIMES),
        help=f"comma-separated, from {','.join(RUNTIMES)}",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--dtype",
        default="float32",
        help="Keras dtype policy of the models, e.g. mixed_bfloat16 (GPU)",
    )
    parser.add_argument(
        "--out-dir",
        default=None,
        help="where the JSON goes (default: results/)",
    )
    parser.add_argument(
        "--tag", default=None, help="results file suffix (default: derived)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="ResNet-18 at 32x32, batch 2, 2 rounds: a smoke run",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.depth, args.size, args.batch, args.rounds = 18, 32, 2, 2
    unknown = set(args.runtimes.split(",")) - set(RUNTIMES)
    if unknown:
        parser.error(
            f"unknown runtimes {sorted(unknown)}; choose from {RUNTIMES}"
        )
    return args


# ---------------------------------------------------------------------------
# The parent: build and export the models, start one worker per runtime.
# ---------------------------------------------------------------------------


def build_models(
    depth, size, directory, data_format="channels_last", dtype="float32"
):
    """Saves the four Keras models as DIR/<name>.keras; returns the paths."""
    import keras

    from benchmarks.floor_attention import FloorAttention
    from keras_sge.applications.resnet import SGEResNet

    def floor(channels, name):
        return FloorAttention(data_format=data_format, dtype=dtype, name=name)

    attentions = {"resnet": None, "sge": "sge", "se": "se", "floor": floor}
    shape = (
        (size, size, 3) if data_format == "channels_last" else (3, size, size)
    )
    paths = {}
    for name, attention in attentions.items():
        keras.utils.set_random_seed(0)
        model = SGEResNet(
            depth,
            weights=None,
            input_shape=shape,
            attention=attention,
            data_format=data_format,
            dtype=dtype,
        )
        paths[name] = os.path.join(directory, f"{name}_{data_format}.keras")
        model.save(paths[name])
    return paths


def export_models(paths, directory, runtime):
    """Writes each model's artifact for `runtime`; returns name -> path."""
    import keras
    import tensorflow as tf

    artifacts = {}
    for name, path in paths.items():
        model = keras.saving.load_model(path)
        # Keras exports only models that have been called.
        model(np.zeros((1, *model.input_shape[1:]), "float32"))
        if runtime == "savedmodel":
            target = os.path.join(directory, f"{name}_savedmodel")
            model.export(target, verbose=False)
        elif runtime.startswith("onnx_tf"):
            target = os.path.join(directory, f"{name}_{runtime}.onnx")
            model.export(target, format="onnx", verbose=False)
        else:
            target = os.path.join(directory, f"{name}_{runtime}.tflite")
            options = {}
            if runtime == "litert_dynamic":
                options["optimizations"] = [tf.lite.Optimize.DEFAULT]
            model.export(target, format="litert", verbose=False, **options)
        artifacts[name] = target
    return artifacts


def run_worker(spec, backend=None):
    """Runs this module as a worker process on `spec`; returns its JSON."""
    env = dict(os.environ)
    if backend:
        env["KERAS_BACKEND"] = backend
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_runtimes", "--worker", "-"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
    )
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-15:])
        return {"error": f"worker failed ({out.returncode}):\n{tail}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main()
    runtimes = args.runtimes.split(",")
    tag = args.tag or (
        "quick" if args.quick else f"r{args.depth}_{args.size}_b{args.batch}"
    )
    directory = tempfile.mkdtemp(prefix="bench_runtimes_")
    common.log(f"Building the models in {directory} ...")
    spec_base = {
        "batch": args.batch,
        "size": args.size,
        "depth": args.depth,
        "rounds": args.rounds,
        "reps": args.reps,
        "threads": args.threads,
        "dtype": args.dtype,
    }
    keras_runtimes = [r for r in runtimes if r not in REFERENCE_RUNTIMES]
    paths = {}
    if keras_runtimes:
        paths = build_models(args.depth, args.size, directory, dtype=args.dtype)
    results = {}
    try:
        for runtime in runtimes:
            common.log(f"{runtime} ...")
            started = time.perf_counter()
            spec = dict(spec_base, runtime=runtime, models=paths)
            backend = None
            if runtime == "onnx_tf_nchw":
                nchw = build_models(
                    args.depth, args.size, directory, "channels_first"
                )
                spec["models"] = export_models(nchw, directory, runtime)
            elif runtime in (
                "savedmodel",
                "onnx_tf",
                "litert",
                "litert_dynamic",
            ):
                spec["models"] = export_models(paths, directory, runtime)
            elif runtime.startswith("jax_"):
                backend = "jax"
            elif runtime.startswith("torch_") and runtime != "torch_reference":
                backend = "torch"
            else:
                backend = "tensorflow"
            results[runtime] = run_worker(spec, backend)
            results[runtime]["wall_s"] = time.perf_counter() - started
            common.log("  " + summary_line(runtime, results[runtime]))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    payload = {
        "benchmark": "runtimes",
        "config": spec_base,
        "machine": common.machine(),
        "results": results,
        "summary": {r: summarize(results[r]) for r in results},
    }
    path = common.save_result(f"runtimes_{tag}", payload, args.out_dir)
    common.log("\n" + markdown_table(payload))
    common.log(f"\nSaved {path}")
    return 0


def summarize(result):
    """{model: {median, min, max, ...} of model/resnet per round}."""
    if "times" not in result:
        return {}
    times = result["times"]
    return {
        name: common.summary(common.ratios(times, name, "resnet"))
        for name in times
        if name != "resnet"
    }


def summary_line(runtime, result):
    if "error" in result:
        return f"{runtime}: {result['error']}"
    parts = [
        f"{name} {common.fmt_ratio(stats)}"
        for name, stats in summarize(result).items()
    ]
    base = statistics.median(result["times"]["resnet"]) * 1e3
    return f"resnet {base:.1f} ms; " + ", ".join(parts)


def markdown_table(payload):
    lines = [
        "| runtime | ResNet ms | SGE / ResNet | SE / ResNet | floor / ResNet | target |",
        "|---|---|---|---|---|---|",
    ]
    for runtime, result in payload["results"].items():
        if "error" in result:
            lines.append(f"| {runtime} | failed: see JSON | | | | |")
            continue
        stats = summarize(result)
        cells = [
            common.fmt_ratio(stats[name]) if name in stats else "-"
            for name in ("sge", "se", "floor")
        ]
        base = statistics.median(result["times"]["resnet"]) * 1e3
        target = TARGETS.get(runtime)
        lines.append(
            f"| {runtime} | {base:.0f} | {' | '.join(cells)} | "
            f"{'<= %.2f' % target if target else '-'} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Workers: one runtime each; print {"times": {model: [seconds per round]}}.
# ---------------------------------------------------------------------------


def worker_main():
    spec = json.loads(sys.stdin.read())
    runtime = spec["runtime"]
    rng = np.random.default_rng(0)
    shape = (spec["batch"], spec["size"], spec["size"], 3)
    images = rng.uniform(-2, 2, shape).astype("float32")
    labels = rng.integers(0, 1000, spec["batch"])
    if runtime in REFERENCE_RUNTIMES:
        runners = reference_runners(spec, images, labels)
    elif runtime.startswith("onnx_tf"):
        runners = onnx_runners(spec["models"], images, spec["threads"])
    elif runtime.startswith("litert"):
        runners = litert_runners(spec["models"], images, spec["threads"])
    elif runtime == "savedmodel":
        runners = saved_model_runners(spec["models"], images)
    else:
        runners = keras_runners(spec["models"], runtime, images, labels)
    times = interleave(runners, spec["rounds"], spec.get("reps", 1))
    print(json.dumps({"times": times}))
    return 0


def interleave(runners, rounds, reps=1, warmup=2):
    """{name: [mean seconds per call, one per round]}, round-robin."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            for _ in range(reps):
                runners[name]()
            times[name].append((time.perf_counter() - start) / reps)
    return times


def keras_runners(paths, runtime, images, labels):
    import keras

    import benchmarks.floor_attention  # noqa: F401 - registers the layer
    import keras_sge  # noqa: F401 - registers the layers

    runners = {}
    for name, path in paths.items():
        model = keras.saving.load_model(path, compile=False)
        if runtime.endswith("_fit"):
            model.compile(
                optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(),
            )
            runners[name] = _train_step(model, images, labels)
        elif runtime == "tf_function":
            import tensorflow as tf

            call = tf.function(lambda x, model=model: model(x, training=False))
            x = tf.constant(images)
            runners[name] = lambda call=call, x=x: call(x).numpy()
        else:
            runners[name] = lambda model=model: model.predict_on_batch(images)
    return runners


def _train_step(model, images, labels):
    def step():
        loss = model.train_on_batch(images, labels)
        return float(loss)

    return step


def saved_model_runners(paths, images):
    import tensorflow as tf

    x = tf.constant(images)
    runners = {}
    for name, path in paths.items():
        loaded = tf.saved_model.load(path)  # kept: it owns the variables
        runners[name] = lambda loaded=loaded: loaded.serve(x).numpy()
    return runners


def onnx_runners(paths, images, threads):
    import onnxruntime

    runners = {}
    for name, path in paths.items():
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )
        feed = {session.get_inputs()[0].name: _as_layout(session, images)}
        runners[name] = lambda s=session, f=feed: s.run(None, f)
    return runners


def _as_layout(session, images):
    """NHWC images, or NCHW where the ONNX file takes channels first."""
    shape = session.get_inputs()[0].shape
    if shape[-1] == 3:
        return images
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def litert_runners(paths, images, threads):
    from ai_edge_litert.interpreter import Interpreter

    runners = {}
    for name, path in paths.items():
        interpreter = Interpreter(model_path=path, num_threads=threads)
        inp = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(inp, images.shape)
        interpreter.allocate_tensors()
        out = interpreter.get_output_details()[0]["index"]

        def run(interpreter=interpreter, inp=inp, out=out):
            interpreter.set_tensor(inp, images)
            interpreter.invoke()
            return interpreter.get_tensor(out)

        runners[name] = run
    return runners


def reference_runners(spec, images, labels):
    """The official PyTorch code: eager, or exported to onnxruntime."""
    import torch

    from keras_sge.testing import torch_reference

    torch.set_num_threads(spec["threads"])
    build = torch_reference.SGE_RESNETS[spec["depth"]]
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    models = {}
    for name, groups in (("resnet", None), ("sge", 64)):
        torch.manual_seed(0)
        models[name] = build(groups=groups).eval()
    if spec["runtime"] == "torch_reference":
        runners = {}
        for name, model in models.items():

            def run(model=model):
                with torch.inference_mode():
                    return model(x)

            runners[name] = run
        return runners
    directory = tempfile.mkdtemp(prefix="onnx_torch_")
    paths = {}
    for name, model in models.items():
        paths[name] = os.path.join(directory, f"{name}.onnx")
        torch.onnx.export(
            model, (x,), paths[name], input_names=["x"], dynamo=False
        )
    return onnx_runners(paths, images, spec["threads"])


if __name__ == "__main__":
    sys.exit(main())
