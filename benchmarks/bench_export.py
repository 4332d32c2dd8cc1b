"""Deployment: a trained model's exports, their size, speed and accuracy.

Run from the repository root, after training the digits model (about a
minute on 2 CPU cores):

    python examples/train.py
    python -m benchmarks.bench_export --model runs/sge_resnet18-digits/model.keras

Every artifact is written with the plain Keras call a user would make,
except the int8 LiteRT file (`keras_sge.litert.export_integer`, because
the file Keras's full-integer export writes can fail at run time in SGE's
int8 division; see keras_sge/litert.py):

- `Keras`: the model itself, `predict_on_batch` (the reference);
- `SavedModel`: `model.export(dir)`, run by `tf.saved_model.load`;
- `LiteRT float32`: `model.export(f, format="litert")`;
- `LiteRT dynamic-range`: the same with `optimizations=[Optimize.DEFAULT]`
  (int8 weights, float activations);
- `LiteRT int8`: int8 weights and activations, SGE in float, calibrated on
  `--calibration` training images;
- `ONNX (TF)`: `model.export(f, format="onnx")` (tf2onnx);
- `ONNX (torch)`: the same `.keras` file exported by a PyTorch-backend
  process (`--no-torch` skips it).

Each artifact runs in its own process, which imports neither keras_sge nor
(for LiteRT and ONNX) Keras or TensorFlow, on the digits validation split,
one image per call: accuracy, top-1 agreement with Keras, the largest
probability difference, and the median latency of one image (LiteRT and
onnxruntime with `--threads` threads, TensorFlow with its default). Whether
the converter folded BatchNormalization into the convolutions is checked
in the file itself: folded, no constant in it equals a BN layer's moving
mean (the op counts are recorded too).
Results: benchmarks/results/export/<name>.json (rows keyed by a stable id,
`keras`, `savedmodel`, `litert_float32`, ... (`ARTIFACTS`), each with its
display `label`) and a markdown table. Files written before ids existed
are keyed by label.
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results", "export")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        default="runs/sge_resnet18-digits/model.keras",
        help="a .keras digits classifier",
    )
    parser.add_argument(
        "--image-size", type=int, default=32, help="the model's input side"
    )
    parser.add_argument(
        "--calibration",
        type=int,
        default=200,
        help="training images calibrating the int8 file",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="LiteRT and onnxruntime threads",
    )
    parser.add_argument(
        "--no-torch",
        action="store_true",
        help="skip the ONNX export from the PyTorch backend",
    )
    parser.add_argument(
        "--name", default="digits", help="the result's file name"
    )
    worker_args = ("RUNTIME", "ARTIFACT", "IMAGES", "BN_MEANS", "OUT")
    parser.add_argument(
        "--worker",
        nargs=len(worker_args),
        metavar=worker_args,
        help=argparse.SUPPRESS,
    )
    return parser.parse_args(argv)


# --------------------------------------------------------------------------
# Exports (this process, TensorFlow backend)
# --------------------------------------------------------------------------


def digits_images(image_size, calibration):
    """(val images, val labels, calibration images), preprocessed as in training."""
    import tensorflow as tf

    from examples.training import data

    digits = data.load_digits(image_size)

    def preprocess(images):
        return data.eval_image(tf.constant(images), image_size).numpy()

    return (
        preprocess(digits.val.images),
        digits.val.labels,
        preprocess(digits.train.images[:calibration]),
    )


def export_all(model, model_path, calibration_images, directory, with_torch):
    """Writes every artifact; returns {id: (runtime, path)} (ids: ARTIFACTS)."""
    import tensorflow as tf

    import keras_sge.litert

    def representative_dataset():
        for image in calibration_images:
            yield [image[None]]

    paths = {
        aid: os.path.join(directory, artifact["file"])
        for aid, artifact in ARTIFACTS.items()
    }
    model.export(paths["savedmodel"], verbose=False)
    model.export(paths["litert_float32"], format="litert", verbose=False)
    model.export(
        paths["litert_dynamic_range"],
        format="litert",
        verbose=False,
        optimizations=[tf.lite.Optimize.DEFAULT],
    )
    keras_sge.litert.export_integer(
        model, paths["litert_int8"], representative_dataset
    )
    model.export(paths["onnx_tf"], format="onnx", verbose=False)
    if with_torch:
        export_onnx_from_torch(model_path, paths["onnx_torch"])
    else:
        del paths["onnx_torch"]
    return {
        aid: (ARTIFACTS[aid]["runtime"], path) for aid, path in paths.items()
    }


# The reference row: the Keras model itself.
KERAS = {"id": "keras", "label": "Keras"}
# By stable id (the rows' keys in the JSON): display label, file, runtime.
ARTIFACTS = {
    "savedmodel": {
        "label": "SavedModel",
        "file": "saved_model",
        "runtime": "saved_model",
    },
    "litert_float32": {
        "label": "LiteRT float32",
        "file": "float32.tflite",
        "runtime": "litert",
    },
    "litert_dynamic_range": {
        "label": "LiteRT dynamic-range",
        "file": "dynamic_range.tflite",
        "runtime": "litert",
    },
    "litert_int8": {
        "label": "LiteRT int8",
        "file": "int8.tflite",
        "runtime": "litert",
    },
    "onnx_tf": {"label": "ONNX (TF)", "file": "tf.onnx", "runtime": "onnx"},
    "onnx_torch": {
        "label": "ONNX (torch)",
        "file": "torch.onnx",
        "runtime": "onnx",
    },
}


def export_onnx_from_torch(model_path, onnx_path):
    code = f"""
import keras, numpy as np, keras_sge
model = keras.saving.load_model({model_path!r})
model(np.zeros((1, *model.input_shape[1:]), "float32"))  # Keras's ONNX export wants a called model
model.export({onnx_path!r}, format="onnx", verbose=False)
"""
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
    )


def size_mb(path):
    if os.path.isdir(path):
        return (
            sum(
                os.path.getsize(os.path.join(d, f))
                for d, _, files in os.walk(path)
                for f in files
            )
            / 1e6
        )
    return os.path.getsize(path) / 1e6


def keras_reference(model, images):
    """Keras's probabilities and median one-image latency (predict_on_batch)."""
    outputs, seconds = [], []
    for image in images:
        start = time.perf_counter()
        outputs.append(model.predict_on_batch(image[None])[0])
        seconds.append(time.perf_counter() - start)
    return np.stack(outputs), float(np.median(seconds[5:]))


# --------------------------------------------------------------------------
# Runtimes (a worker process each: no keras_sge, no Keras where possible)
# --------------------------------------------------------------------------


def run_worker(
    runtime, artifact, images_path, bn_means_path, out_path, threads
):
    images = np.load(images_path)
    predict, ops, constants = WORKERS[runtime](artifact, threads)
    with np.load(bn_means_path) as bn_means:
        folded = (
            None
            if constants is None
            else not any(_holds(constants, bn_means[k]) for k in bn_means.files)
        )
    outputs, seconds = [], []
    for image in images:
        start = time.perf_counter()
        outputs.append(np.asarray(predict(image[None]), "float32")[0])
        seconds.append(time.perf_counter() - start)
    assert "keras_sge" not in sys.modules, "the runtime imported keras_sge"
    np.save(out_path + ".npy", np.stack(outputs))
    with open(out_path + ".json", "w") as f:
        json.dump(
            {
                "latency_s": float(np.median(seconds[5:])),
                "ops": ops,
                "batchnorm_folded": folded,
            },
            f,
        )


def _holds(constants, values):
    return any(
        c.size == values.size and np.allclose(c.ravel(), values.ravel())
        for c in constants
    )


def saved_model_worker(artifact, threads):
    import tensorflow as tf

    serving = tf.saved_model.load(artifact).signatures["serving_default"]
    (name,) = serving.structured_input_signature[1]

    def predict(x):
        (output,) = serving(**{name: tf.constant(x)}).values()
        return output.numpy()

    return (
        predict,
        None,
        None,
    )  # a TensorFlow graph: BatchNormalization stays as it is


def litert_worker(artifact, threads):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=artifact, num_threads=threads)
    interpreter.allocate_tensors()
    source, target = (
        interpreter.get_input_details()[0],
        interpreter.get_output_details()[0],
    )

    def predict(x):
        interpreter.set_tensor(source["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(target["index"])

    # The op list has no public API; the interpreter's own listing is stable.
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    return predict, ops, _litert_constants(interpreter)


def _litert_constants(interpreter):
    constants = []
    for tensor in interpreter.get_tensor_details():
        if (
            tensor["dtype"] == np.float32
            and 0 < np.prod(tensor["shape"]) <= 4096
        ):
            try:
                constants.append(interpreter.get_tensor(tensor["index"]))
            except ValueError:  # tensors the interpreter does not expose
                pass
    return constants


def onnx_worker(artifact, threads):
    import onnx
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(
        artifact, options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    graph = onnx.load(artifact).graph
    constants = [
        onnx.numpy_helper.to_array(tensor) for tensor in graph.initializer
    ]
    for node in graph.node:
        if node.op_type == "Constant":
            constants += [
                onnx.numpy_helper.to_array(a.t)
                for a in node.attribute
                if a.name == "value"
            ]
    return (
        (lambda x: session.run(None, {name: x})[0]),
        [node.op_type for node in graph.node],
        constants,
    )


WORKERS = {
    "saved_model": saved_model_worker,
    "litert": litert_worker,
    "onnx": onnx_worker,
}


def measure(runtime, artifact, images_path, bn_means_path, threads):
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "out")
        command = [
            sys.executable,
            "-m",
            "benchmarks.bench_export",
            "--threads",
            str(threads),
        ]
        command += [
            "--worker",
            runtime,
            artifact,
            images_path,
            bn_means_path,
            out,
        ]
        subprocess.run(command, check=True, cwd=REPO_ROOT, capture_output=True)
        with open(out + ".json") as f:
            info = json.load(f)
        return np.load(out + ".npy"), info


def op_counts(ops):
    return None if ops is None else dict(collections.Counter(ops).most_common())


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return run_worker(*args.worker, args.threads)
    load_at_start = os.getloadavg()[0]
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras

    import keras_sge  # noqa: F401  (registers SGE for loading the model)

    model = keras.saving.load_model(args.model)
    bn_means = {
        layer.name: keras.ops.convert_to_numpy(layer.moving_mean)
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    val_images, val_labels, calibration_images = digits_images(
        args.image_size, args.calibration
    )
    reference, keras_latency = keras_reference(model, val_images)
    rows = {
        KERAS["id"]: row(
            KERAS,
            reference,
            reference,
            val_labels,
            keras_latency,
            size_mb(args.model),
            None,
            None,
        )
    }
    with tempfile.TemporaryDirectory() as directory:
        images_path = os.path.join(directory, "images.npy")
        np.save(images_path, val_images)
        bn_means_path = os.path.join(directory, "bn_means.npz")
        np.savez(bn_means_path, **bn_means)
        artifacts = export_all(
            model,
            os.path.abspath(args.model),
            calibration_images,
            directory,
            not args.no_torch,
        )
        for aid, (runtime, path) in artifacts.items():
            outputs, info = measure(
                runtime, path, images_path, bn_means_path, args.threads
            )
            rows[aid] = row(
                {"id": aid, "label": ARTIFACTS[aid]["label"]},
                outputs,
                reference,
                val_labels,
                info["latency_s"],
                size_mb(path),
                info["batchnorm_folded"],
                info["ops"],
            )
            print(f"{rows[aid]['label']}: {rows[aid]}", flush=True)
    payload = {
        "benchmark": "export",
        "model": args.model,
        "validation_images": int(len(val_labels)),
        "calibration_images": args.calibration,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "versions": versions(),
        "rows": rows,
    }
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{args.name}.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    print(markdown_table(rows))
    print(f"wrote {path}")


def row(
    names, outputs, reference, labels, latency_s, size, batchnorm_folded, ops
):
    """One artifact's row; `names`: its stable `id` and display `label`."""
    return {
        **names,
        "accuracy": float(np.mean(np.argmax(outputs, -1) == labels)),
        "top1_agreement_with_keras": float(
            np.mean(np.argmax(outputs, -1) == np.argmax(reference, -1))
        ),
        "max_abs_probability_diff": float(np.max(np.abs(outputs - reference))),
        "latency_ms": 1e3 * latency_s,
        "size_mb": size,
        "batchnorm_folded": batchnorm_folded,
        "op_counts": op_counts(ops),
    }


def versions():
    found = {}
    for module in (
        "keras",
        "tensorflow",
        "torch",
        "tf2onnx",
        "onnxruntime",
        "ai_edge_litert",
    ):
        try:
            found[module] = getattr(__import__(module), "__version__", "?")
        except ImportError:
            pass
    return found


def markdown_table(rows):
    lines = [
        "| artifact | size (MB) | latency, 1 image (ms) | accuracy | top-1 agreement with Keras "
        "| max prob. diff | BN folded |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        lines.append(
            f"| {r['label']} | {r['size_mb']:.1f} | {r['latency_ms']:.2f} | {r['accuracy']:.4f} | "
            f"{r['top1_agreement_with_keras']:.4f} | {r['max_abs_probability_diff']:.1e} | "
            f"{ {True: 'yes', False: 'no', None: '-'}[r['batchnorm_folded']] } |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
