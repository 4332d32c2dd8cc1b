"""Benchmarks 2 and 3: SGE-ResNet-50 against ResNet-50, and against PyTorch.

Run from the repository root (so that `keras_sge.testing.torch_reference` imports):

    python -m benchmarks.bench_resnet                          # defaults
    python -m benchmarks.bench_resnet --batches 8 --rounds 2   # quick
    python -m benchmarks.bench_resnet --no-torch --no-before

Variants, timed interleaved in one process (benchmarks/common.py), all
built with random weights at 224x224, 1000 classes (each result also
carries its stable `id`, in parentheses; benchmarks/ids.py; a ratio's id
is `numerator/denominator`, e.g. `keras_sge_resnet/keras_resnet`):

- `Keras ResNet-50` (`keras_resnet`):
  keras_sge.applications.SGEResNet50(groups=None).
- `Keras SGE-ResNet-50` (`keras_sge_resnet`): the same builder with SGE
  (the current layer).
- `Keras SGE-ResNet-50 (unfused)` (`keras_sge_resnet_unfused`,
  `--unfused`): the blocks built with `attention=` an `SGE` layer followed
  by separate Add and ReLU layers, instead of the fused `SGEResidual`
  layer.
- `Keras SGE-ResNet-50 (before)` (`keras_sge_resnet_before`): the same
  network with the first, straightforward SGE layer
  (benchmarks/baseline_sge.py) as its attention.
- `Keras SGE-ResNet-50 (other)` (`keras_sge_resnet_other`,
  `--compare-with DIR`): the same network built by another checkout of
  keras_sge (e.g. `git archive` of an earlier commit, unpacked in DIR),
  imported beside this one under another name: a before/after comparison
  in one process.
- `PyTorch ResNet-50` / `PyTorch SGE-ResNet-50` (`torch_resnet` /
  `torch_sge_resnet`): keras_sge/testing/torch_reference.py's
  re-implementation of the reference network (imported, not copied), when
  torch is installed; CPU only, float32. It runs in a child process that
  never imports TensorFlow (benchmarks/torch_worker.py): in one process the
  two libraries' thread pools slow PyTorch down several times.

Inference: `model.predict_step` under `tf.function` (TF; what `predict`
and `predict_on_batch` run per batch) or `jax.jit` (JAX), at each
`--batches` size; PyTorch in eval mode under `torch.inference_mode()`. Training step:
forward in training mode, cross-entropy, backward, SGD-momentum update, at
`--train-batch`. Ratios are per round; the table gives median [min-max].
"""

import argparse
import os
import sys

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks import ids  # noqa: E402
from benchmarks.baseline_sge import BaselineSGE  # noqa: E402
from keras_sge import SGE  # noqa: E402
from keras_sge.applications.resnet import SGEResNet  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument(
        "--batches", default="1,8,32", help="inference batch sizes"
    )
    parser.add_argument(
        "--train-batch", type=int, default=8, help="0 skips the training step"
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--reps",
        default="1:5,8:2,32:1",
        help="calls per timing, per batch size",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        help="Keras policy: float32, mixed_float16, mixed_bfloat16",
    )
    parser.add_argument(
        "--no-torch", action="store_true", help="skip the PyTorch reference"
    )
    parser.add_argument(
        "--no-before",
        action="store_true",
        help="skip the baseline SGE layer variant",
    )
    parser.add_argument(
        "--unfused",
        action="store_true",
        help="add the current SGE layer with separate Add/ReLU layers",
    )
    parser.add_argument(
        "--jit",
        action="store_true",
        help="TF: compile the whole model with XLA",
    )
    parser.add_argument(
        "--compare-with",
        metavar="DIR",
        help="another checkout of the repository: time its SGE-ResNet too",
    )
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--tag", default=None)
    parser.add_argument("--no-report", action="store_true")
    return parser.parse_args(argv)


def build_keras(depth, attention="sge", size=224):
    """The applications builder with the blocks' attention chosen by argument.

    `attention`: as `SGEResNet`'s (`"sge"`: the fused SGE blocks, `None`:
    ResNet), or an SGE layer class to insert unfused (SGE, then separate
    Add and ReLU layers), e.g. `keras_sge.SGE` or `BaselineSGE`.
    """
    if isinstance(attention, type):
        layer_class = attention
        attention = lambda channels, name: layer_class(groups=64, name=name)  # noqa: E731
    return SGEResNet(
        depth, weights=None, input_shape=(size, size, 3), attention=attention
    )


class KerasRunner:
    """Compiled inference and training step for a Keras model."""

    def __init__(self, model, jit=False):
        self.model = model
        self.backend = keras.backend.backend()
        self.jit = jit
        self.optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        self.optimizer.build(model.trainable_variables)
        self.loss = keras.losses.SparseCategoricalCrossentropy()
        self._build()

    def _build(self):
        model = self.model
        if self.backend == "tensorflow":
            import tensorflow as tf

            # Through `predict_step`, as `predict` and `predict_on_batch` run
            # it: SGE's XLA functions are used in Keras's execution graphs,
            # not in a bare tf.function (which is what exports trace).
            self.infer = tf.function(model.predict_step, jit_compile=self.jit)

            def train(x, y):
                with tf.GradientTape() as tape:
                    loss = self.loss(y, model(x, training=True))
                grads = tape.gradient(loss, model.trainable_variables)
                self.optimizer.apply(grads, model.trainable_variables)
                return loss

            self.train = tf.function(train, jit_compile=self.jit)
        elif self.backend == "jax":
            import jax

            @jax.jit
            def infer(tv, ntv, x):
                return model.stateless_call(tv, ntv, x, training=False)[0]

            def loss_fn(tv, ntv, x, y):
                out, ntv = model.stateless_call(tv, ntv, x, training=True)
                return self.loss(y, out), ntv

            @jax.jit
            def train(tv, ntv, ov, x, y):
                (loss, ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                    tv, ntv, x, y
                )
                tv, ov = self.optimizer.stateless_apply(ov, grads, tv)
                return loss, tv, ntv, ov

            self._state = [
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                [v.value for v in self.optimizer.variables],
            ]
            self.infer = lambda x: infer(self._state[0], self._state[1], x)

            def train_step(x, y):
                loss, *self._state = train(*self._state, x, y)
                return loss

            self.train = train_step
        else:
            raise SystemExit(
                "bench_resnet supports the tensorflow and jax backends"
            )


class TorchWorker:
    """The PyTorch reference networks in a child process (torch_worker.py)."""

    def __init__(self):
        import subprocess

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.torch_worker"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **cmd):
        import json

        self.process.stdin.write(json.dumps(cmd) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the PyTorch worker died")
        return json.loads(line)

    def variant(self, name, task):
        worker = self

        class Remote:
            def remote_time(self, reps):
                return worker.ask(cmd="time", name=name, task=task, reps=reps)[
                    "seconds"
                ]

            def __call__(self):
                raise RuntimeError("timed remotely")

        return Remote()

    def close(self):
        try:
            self.ask(cmd="quit")
        except (RuntimeError, OSError, ValueError):
            pass
        self.process.wait(timeout=60)


def _reps(spec, batch):
    table = dict(item.split(":") for item in spec.split(",")) if spec else {}
    return int(table.get(str(batch), max(1, 16 // max(batch, 1))))


def main(argv=None):
    args = parse_args(argv)
    if args.dtype != "float32":
        keras.mixed_precision.set_global_policy(args.dtype)
    info = common.machine()
    common.log(f"machine: {info}")
    use_torch = (
        not args.no_torch
        and keras.backend.backend() == "tensorflow"
        and args.dtype == "float32"
    )
    if use_torch:
        try:
            import torch  # noqa: F401

            import keras_sge.testing.torch_reference  # noqa: F401
        except ImportError:
            use_torch = False

    # By id (benchmarks/ids.py, RESNET_VARIANTS: the labels).
    keras_models = {
        "keras_resnet": KerasRunner(
            build_keras(args.depth, None, size=args.size), args.jit
        ),
        "keras_sge_resnet": KerasRunner(
            build_keras(args.depth, "sge", size=args.size), args.jit
        ),
    }
    if args.unfused:
        keras_models["keras_sge_resnet_unfused"] = KerasRunner(
            build_keras(args.depth, SGE, size=args.size), args.jit
        )
    if args.compare_with:
        other = common.import_other_checkout(
            args.compare_with, "applications.resnet"
        )
        keras_models["keras_sge_resnet_other"] = KerasRunner(
            other.SGEResNet(
                args.depth,
                weights=None,
                input_shape=(args.size, args.size, 3),
                groups=64,
            ),
            args.jit,
        )
    if not args.no_before:
        keras_models["keras_sge_resnet_before"] = KerasRunner(
            build_keras(args.depth, BaselineSGE, size=args.size), args.jit
        )
    torch_names = {}
    worker = None
    if use_torch:
        worker = TorchWorker()
        torch_names = {"torch_resnet": None, "torch_sge_resnet": 64}
        for name, groups in torch_names.items():
            info["torch_worker"] = worker.ask(
                cmd="build", name=name, depth=args.depth, groups=groups
            )
    rng = np.random.default_rng(0)
    results = {}
    comparisons = [
        ("keras_sge_resnet", "keras_resnet"),
        ("keras_sge_resnet_before", "keras_resnet"),
        ("torch_sge_resnet", "torch_resnet"),
        ("keras_sge_resnet", "torch_sge_resnet"),
        ("keras_resnet", "torch_resnet"),
        ("keras_sge_resnet", "keras_sge_resnet_before"),
        ("keras_sge_resnet_unfused", "keras_resnet"),
        ("keras_sge_resnet", "keras_sge_resnet_unfused"),
        ("keras_sge_resnet_other", "keras_resnet"),
        ("keras_sge_resnet", "keras_sge_resnet_other"),
    ]
    display = ids.RESNET_VARIANTS  # id -> label

    def record(task, batch, times):
        for vid, t in times.items():
            results[f"{task}|{batch}|{vid}"] = {
                "task": task,
                "batch": batch,
                "id": vid,
                "variant": display[vid],
                "time_s": common.summary(t),
            }
        for a, b in comparisons:
            if a in times and b in times:
                r = common.summary(common.ratios(times, a, b))
                rid = ids.ratio_id(a, b)
                results[f"{task}|{batch}|{rid}"] = {
                    "task": task,
                    "batch": batch,
                    "id": rid,
                    "ratio": ids.ratio_label(a, b, display),
                    "summary": r,
                }
                common.log(
                    f"{task:9s} b={batch:<3d} {ids.ratio_label(a, b, display)}: "
                    f"{common.fmt_ratio(r)}"
                )
        for vid, t in times.items():
            common.log(
                f"{task:9s} b={batch:<3d} {display[vid]}: {common.fmt_ms(common.summary(t))} ms"
            )

    import keras_sge

    tag = args.tag or (
        f"{keras.backend.backend()}_{'gpu' if info.get('gpu') else 'cpu'}_"
        f"{args.dtype}{'_xla' if args.jit else ''}"
    )

    def save():
        payload = {
            "benchmark": "resnet",
            "depth": args.depth,
            "size": args.size,
            "dtype": args.dtype,
            "rounds": args.rounds,
            "jit": args.jit,
            "keras_sge": getattr(keras_sge, "__version__", None),
            "machine": info,
            "results": results,
        }
        path = common.save_result(f"resnet_{tag}", payload, args.out_dir)
        common.log(f"wrote {path}")

    size = args.size
    for batch in [int(b) for b in args.batches.split(",") if b]:
        images = rng.uniform(-2, 2, (batch, size, size, 3)).astype("float32")
        keras_x = keras.ops.convert_to_tensor(images)
        variants = {
            name: (lambda r=r: r.infer(keras_x))
            for name, r in keras_models.items()
        }
        if worker:
            worker.ask(
                cmd="data", task="inference", batch=batch, size=size, seed=batch
            )
            variants.update(
                {
                    name: worker.variant(name, "inference")
                    for name in torch_names
                }
            )
        common.log(f"inference, batch {batch}")
        times = common.interleaved(
            variants,
            args.rounds,
            _reps(args.reps, batch),
            warmup=3,
            log=common.log,
        )
        record("inference", batch, times)
        save()

    if args.train_batch:
        batch = args.train_batch
        images = rng.uniform(-2, 2, (batch, size, size, 3)).astype("float32")
        labels = rng.integers(0, 1000, batch)
        keras_x = keras.ops.convert_to_tensor(images)
        keras_y = keras.ops.convert_to_tensor(labels.astype("int32"))
        variants = {
            name: (lambda r=r: r.train(keras_x, keras_y))
            for name, r in keras_models.items()
        }
        if worker:
            worker.ask(
                cmd="data",
                task="training",
                batch=batch,
                size=size,
                seed=1000 + batch,
            )
            variants.update(
                {name: worker.variant(name, "training") for name in torch_names}
            )
        common.log(f"training step, batch {batch}")
        times = common.interleaved(
            variants, args.rounds, 1, warmup=2, log=common.log
        )
        record("training", batch, times)
    if worker:
        worker.close()

    save()
    if not args.no_report:
        from benchmarks import report

        report.main([])


if __name__ == "__main__":
    main()
