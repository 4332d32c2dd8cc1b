"""Ways to write SGE in plain TensorFlow ops, timed where models are served.

Run from the repository root (a few minutes on 2 CPU cores):

    python -m benchmarks.bench_formulations
    python -m benchmarks.bench_formulations --shape 8,7,7,2048 --reps 10

Each formulation computes the same SGE forward (channels_last, 64 groups,
checked against the first one to float32 rounding) inside one residual
block's end, `conv1x1 -> BN (as constants) -> SGE -> + input -> ReLU ->
conv1x1`, on one SGE-ResNet-50 block output (8, 56, 56, 256 by default).
The block without SGE is the baseline; the table gives the extra
milliseconds each formulation costs (median over rounds, interleaved) in:

- `tf`: a `tf.function` (TensorFlow's graph executor, no XLA: what a
  SavedModel or TF Serving runs);
- `onnx`: the same function through tf2onnx, in onnxruntime;
- `litert`: the same function through the LiteRT converter.

The formulations, and why each was tried:

- `grouped_view`: (N, H*W, G, C/G) view; sums and the gate broadcast over
  the innermost C/G axis (the layer's earlier plain-op path);
- `block_matmul`: the layer now: group sums and the gate broadcast as
  matrix products with a constant 0/1 block-diagonal matrix over rows of 8
  groups (`keras_sge.layers.sge_ops._ChannelsLastBlocks`);
- `nchw`: explicit transposes to NCHW and back around the grouped view,
  which tf2onnx cancels against its own layout transposes;
- `grouped_conv`: group sums and broadcast as grouped 1x1 convolutions
  (layout-native in tf2onnx);
- `depthwise_expand`: the gate broadcast as a depthwise 1x1 convolution
  with channel multiplier C/G;
- `batched_matmul`: the similarity map as one matmul of every position with
  a per-sample block-diagonal matrix of the group means (no `x * mean`);
- `repeat`: the gate broadcast with `tf.repeat`.
- `from_conv_input`: the group means and the similarity map computed from
  the input of the 1x1 convolution (and BN) that produces the block's
  end, which a bottleneck makes 4 times narrower than its output: both
  are linear in it (BN in inference), so the means are the narrow input's
  means through the folded kernel, and the map is the narrow input times
  a per-sample (C_in, G) matrix, the folded kernel's columns weighted by
  the means and summed per group. It reads the narrow input instead of
  making the statistics' passes over the wide output (the means,
  `x * mean` and its group sums), but builds a per-sample
  matrix of the kernel's size, so it pays off where H*W is large against
  C_in (`--in-channels` sets the bottleneck's width; SGE's layer does not
  use it: it would fuse SGE with the layers before it).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from benchmarks import common

GROUPS = 64
EPSILON = 1e-5


def _gate_from_map(similarity, gamma, beta, axes):
    positions = float(np.prod([similarity.shape[a] for a in axes]))
    import tensorflow as tf

    centered = similarity - tf.reduce_mean(similarity, axes, keepdims=True)
    variance = tf.reduce_sum(centered * centered, axes, keepdims=True)
    std = tf.sqrt(variance / max(positions - 1.0, 1.0))
    return tf.sigmoid(centered / (std + EPSILON) * gamma + beta)


def _blocks(per_group, row_groups):
    return np.kron(
        np.eye(row_groups, dtype="float32"),
        np.ones((per_group, 1), dtype="float32"),
    )


def grouped_view(x, gamma, beta):
    import tensorflow as tf

    _, height, width, channels = x.shape
    grouped = tf.reshape(x, (-1, height * width, GROUPS, channels // GROUPS))
    mean = tf.reduce_mean(grouped, axis=1, keepdims=True)
    gate = _gate_from_map(
        tf.reduce_sum(grouped * mean, axis=3), gamma, beta, [1]
    )
    return tf.reshape(grouped * tf.expand_dims(gate, -1), tf.shape(x))


def block_matmul(x, gamma, beta, row_groups=8):
    import tensorflow as tf

    _, height, width, channels = x.shape
    per_group = channels // GROUPS
    summing = _blocks(per_group, row_groups)
    mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    rows = tf.reshape(x * mean, (-1, row_groups * per_group))
    similarity = tf.reshape(rows @ summing, (-1, height, width, GROUPS))
    gate = _gate_from_map(similarity, gamma, beta, [1, 2])
    return _gated_by_blocks(x, gate, summing)


def _gated_by_blocks(x, gate, summing):
    """x times its (N, H, W, G) gate, broadcast by the block matrix."""
    import tensorflow as tf

    row_groups = summing.shape[1]
    expanded = tf.reshape(gate, (-1, row_groups)) @ summing.T
    return x * tf.reshape(expanded, (-1, *x.shape[1:]))


def nchw(x, gamma, beta):
    import tensorflow as tf

    _, height, width, channels = x.shape
    grouped = tf.reshape(
        tf.transpose(x, (0, 3, 1, 2)),
        (-1, GROUPS, channels // GROUPS, height * width),
    )
    mean = tf.reduce_mean(grouped, axis=3, keepdims=True)
    gate = _gate_from_map(
        tf.reduce_sum(grouped * mean, axis=2),
        tf.expand_dims(gamma, -1),
        tf.expand_dims(beta, -1),
        [2],
    )
    out = tf.reshape(
        grouped * tf.expand_dims(gate, 2), (-1, channels, height, width)
    )
    return tf.transpose(out, (0, 2, 3, 1))


def _depthwise_expand(gate, per_group):
    import tensorflow as tf

    kernel = tf.ones((1, 1, gate.shape[-1], per_group))
    return tf.nn.depthwise_conv2d(gate, kernel, [1, 1, 1, 1], "VALID")


def _stats_by_reshape(x, gamma, beta):
    import tensorflow as tf

    _, height, width, channels = x.shape
    mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    products = tf.reshape(
        x * mean, (-1, height, width, GROUPS, channels // GROUPS)
    )
    return _gate_from_map(tf.reduce_sum(products, axis=4), gamma, beta, [1, 2])


def grouped_conv(x, gamma, beta, row_groups=8):
    import tensorflow as tf

    channels = x.shape[-1]
    per_group = channels // GROUPS
    summing = _blocks(per_group, row_groups)
    copies = GROUPS // row_groups
    mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    similarity = tf.nn.conv2d(
        x * mean, np.tile(summing, (1, copies))[None, None], 1, "VALID"
    )
    gate = _gate_from_map(similarity, gamma, beta, [1, 2])
    expand = np.tile(summing.T, (1, copies))[None, None]
    return x * tf.nn.conv2d(gate, expand, 1, "VALID")


def depthwise_expand(x, gamma, beta):
    gate = _stats_by_reshape(x, gamma, beta)
    return x * _depthwise_expand(gate, x.shape[-1] // GROUPS)


def batched_matmul(x, gamma, beta):
    import tensorflow as tf

    _, height, width, channels = x.shape
    per_group = channels // GROUPS
    mean = tf.reduce_mean(x, axis=[1, 2])
    diagonal = tf.expand_dims(mean, -1) * _blocks(per_group, GROUPS)
    flat = tf.reshape(x, (-1, height * width, channels))
    similarity = tf.reshape(flat @ diagonal, (-1, height, width, GROUPS))
    gate = _gate_from_map(similarity, gamma, beta, [1, 2])
    grouped = tf.reshape(x, (-1, height, width, GROUPS, per_group))
    return tf.reshape(grouped * tf.expand_dims(gate, -1), tf.shape(x))


def repeat(x, gamma, beta):
    import tensorflow as tf

    gate = _stats_by_reshape(x, gamma, beta)
    return x * tf.repeat(gate, x.shape[-1] // GROUPS, axis=-1)


def from_conv_input(inputs, kernel, bias, gamma, beta, row_groups=8):
    """SGE of `inputs @ kernel + bias`, with its statistics from `inputs`."""
    import tensorflow as tf

    _, height, width, in_channels = inputs.shape
    per_group = kernel.shape[-1] // GROUPS
    summing = _blocks(per_group, row_groups)
    branch = tf.nn.conv2d(inputs, kernel[None, None], 1, "VALID") + bias
    mean = tf.reduce_mean(inputs, axis=[1, 2]) @ kernel + bias  # (N, C)
    # Row i < C_in: kernel row i weighted by the means; the last row: bias.
    weighted = tf.concat([kernel, bias[None]], 0)[None] * mean[:, None, :]
    rows = tf.reshape(weighted, (-1, row_groups * per_group))
    summed = tf.reshape(rows @ summing, (-1, in_channels + 1, GROUPS))
    flat = tf.reshape(inputs, (-1, height * width, in_channels))
    similarity = flat @ summed[:, :-1] + summed[:, -1:]
    gate = _gate_from_map(
        tf.reshape(similarity, (-1, height, width, GROUPS)), gamma, beta, [1, 2]
    )
    return _gated_by_blocks(branch, gate, summing)


# Formulations that take the convolution's input, kernel and bias (BN
# folded in) rather than its output.
FROM_INPUT = {from_conv_input}

FORMULATIONS = {
    "grouped_view": grouped_view,
    "block_matmul": block_matmul,
    "nchw": nchw,
    "grouped_conv": grouped_conv,
    "depthwise_expand": depthwise_expand,
    "batched_matmul": batched_matmul,
    "repeat": repeat,
    "from_conv_input": from_conv_input,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--shape", default="8,56,56,256")
    parser.add_argument(
        "--in-channels",
        type=int,
        default=None,
        help="width of the 1x1 convolution's input (default: the shape's C)",
    )
    parser.add_argument("--formulations", default=",".join(FORMULATIONS))
    parser.add_argument("--runtimes", default="tf,onnx,litert")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out-dir", default=None)
    return parser.parse_args(argv)


def _kernel(rng, in_channels, channels):
    kernel = rng.normal(size=(in_channels, channels)).astype("float32")
    return kernel / np.sqrt(in_channels).astype("float32")


def block_function(formulation, shape, in_channels=None):
    """The block's end with `formulation` (None: without SGE), traced.

    With `in_channels` below the shape's C, the block is a bottleneck's
    end: a 1x1 convolution down to `in_channels` and ReLU feed the 1x1
    convolution and BN whose output SGE gates.
    """
    import tensorflow as tf

    channels = shape[-1]
    in_channels = in_channels or channels
    rng = np.random.default_rng(0)
    kernel = _kernel(rng, in_channels, channels)
    scale = rng.uniform(0.5, 1.5, channels).astype("float32")
    offset = (0.1 * rng.normal(size=channels)).astype("float32")
    gamma = rng.normal(size=GROUPS).astype("float32")
    beta = rng.normal(size=GROUPS).astype("float32")
    down = _kernel(rng, channels, in_channels)[None, None]

    def block(x):
        inputs = x
        if in_channels != channels:
            inputs = tf.nn.relu(tf.nn.conv2d(x, down, 1, "SAME"))
        if formulation in FROM_INPUT:
            branch = formulation(inputs, kernel * scale, offset, gamma, beta)
        else:
            branch = tf.nn.conv2d(inputs, kernel[None, None], 1, "SAME")
            branch = branch * scale + offset
            if formulation is not None:
                branch = formulation(branch, gamma, beta)
        out = tf.nn.relu(x + branch)
        if in_channels != channels:
            return out
        return tf.nn.conv2d(out, kernel[None, None], 1, "SAME")

    spec = [tf.TensorSpec((None, *shape[1:]), tf.float32, name="x")]
    return tf.function(block, input_signature=spec), spec


def runner(runtime, function, spec, x, threads):
    import tensorflow as tf

    if runtime == "tf":
        tensor = tf.constant(x)
        return lambda: function(tensor).numpy()
    if runtime == "onnx":
        import onnxruntime
        import tf2onnx

        path = tempfile.mktemp(suffix=".onnx")
        tf2onnx.convert.from_function(function, spec, output_path=path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            path, options, providers=["CPUExecutionProvider"]
        )
        return lambda: session.run(None, {"x": x})
    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()]
    )
    interpreter = Interpreter(
        model_content=converter.convert(), num_threads=threads
    )
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()

    def run():
        interpreter.set_tensor(index, x)
        interpreter.invoke()

    return run


def _check_formulations(names, x, in_channels):
    """Each formulation's block must give grouped_view's block's output."""
    shape = x.shape
    reference, _ = block_function(grouped_view, shape, in_channels)
    expected = reference(x).numpy()
    for name in names:
        function, _ = block_function(FORMULATIONS[name], shape, in_channels)
        error = np.abs(function(x).numpy() - expected).max()
        if error > 1e-4 * np.abs(expected).max():
            raise SystemExit(f"{name} differs from grouped_view by {error}")


def main(argv=None):
    args = parse_args(argv)
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    patch_tf2onnx()
    shape = tuple(int(s) for s in args.shape.split(","))
    names = args.formulations.split(",")
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    _check_formulations(names, x, args.in_channels)
    runners = {}
    for runtime in args.runtimes.split(","):
        for name in ["none", *names]:
            function, spec = block_function(
                FORMULATIONS.get(name), shape, args.in_channels
            )
            runners[(runtime, name)] = runner(
                runtime, function, spec, x, args.threads
            )
    times = {key: [] for key in runners}
    for run in runners.values():
        run()
    for _ in range(args.rounds):
        for key, run in runners.items():
            start = time.perf_counter()
            for _ in range(args.reps):
                run()
            times[key].append((time.perf_counter() - start) / args.reps)
    rows, results = [], {}
    for (runtime, name), values in times.items():
        extra = [a - b for a, b in zip(values, times[(runtime, "none")])]
        results[f"{runtime}/{name}"] = {"seconds": values}
        if name != "none":
            rows.append((runtime, name, statistics.median(extra) * 1e3))
    for runtime, name, extra in rows:
        common.log(f"{runtime:7s} {name:17s} +{extra:6.2f} ms")
    path = common.save_result(
        "formulations",
        {
            "benchmark": "formulations",
            "shape": shape,
            "in_channels": args.in_channels or shape[-1],
            "machine": common.machine(),
            "results": results,
        },
        args.out_dir,
    )
    common.log(f"Saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
