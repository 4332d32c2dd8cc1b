"""A shared test harness for keras_sge layers and models.

In the spirit of keras-hub's `TestCase.run_layer_test` /
`run_model_saving_test`: one call checks what every layer or model must do,
so each test file only states what is particular to it. Keep inputs small.
"""

import contextlib
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

import keras_sge  # noqa: F401  (registers the serializable classes)

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
# The low-precision policies a layer must follow, as KerasHub's
# `run_precision_test` checks them: the mixed ones keep float32 variables,
# the full "bfloat16" policy has bfloat16 variables too.
PRECISION_POLICIES = (*MIXED_POLICIES, "bfloat16")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# For tests of channels_first models, which tests/test_backends.py runs
# under JAX and PyTorch.
needs_channels_first_convolutions = pytest.mark.skipif(
    keras.backend.backend() == "tensorflow",
    reason="TensorFlow's CPU convolutions support channels_last only",
)


def backend_supports_jit():
    return keras.backend.backend() in ("tensorflow", "jax")


@contextlib.contextmanager
def dtype_policy(name):
    """Sets the global dtype policy for the duration of a block."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def inference(model, x):
    """The model's inference outputs for `x` (`training=False`), as NumPy.

    On JAX through `predict_on_batch`, one jitted program: JAX compiles
    each eager op on its own, which costs several times the one compile of
    the whole model.
    """
    if keras.backend.backend() == "jax":
        return np.asarray(model.predict_on_batch(x))
    return ops.convert_to_numpy(model(x, training=False))


def assert_all_close(actual, expected, rtol=1e-5, atol=1e-6, msg=""):
    np.testing.assert_allclose(
        ops.convert_to_numpy(actual),
        ops.convert_to_numpy(expected),
        rtol=rtol,
        atol=atol,
        err_msg=msg,
    )


def assert_finite(x, msg=""):
    values = ops.convert_to_numpy(ops.cast(x, "float32"))
    assert np.all(np.isfinite(values)), f"non-finite values {msg}"


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights=0,
    run_training=True,
    run_mixed_precision=True,
    run_saving=True,
    tmp_path=None,
):
    """Checks config, weights, shapes, training, mixed precision and saving.

    Args:
        layer_cls: the layer class.
        init_kwargs: keyword arguments for the constructor.
        input_data: a numpy array fed to the layer.
        expected_output_shape: the output's full shape.
        expected_num_trainable_weights / expected_num_non_trainable_weights:
            the weight counts after build.
        run_training: fit one step inside a model (with jit_compile where the
            backend supports it) and check that the weights move.
        run_mixed_precision: check mixed_float16, mixed_bfloat16 and the
            full bfloat16 policy (`PRECISION_POLICIES`).
        run_saving: `.keras` save/load round trip (needs `tmp_path`).
    """
    _check_config_round_trip(layer_cls, init_kwargs, input_data)
    layer = layer_cls(**init_kwargs)
    output = layer(input_data)
    assert tuple(output.shape) == tuple(expected_output_shape)
    assert keras.backend.standardize_dtype(output.dtype) == layer.compute_dtype
    assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert (
        len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    )
    _check_symbolic_shape(
        layer_cls, init_kwargs, input_data, expected_output_shape
    )
    if run_training:
        # Seeded: with some draws a ReLU bottleneck (SqueezeExcite's) is off
        # for the whole batch, and its first kernel rightly gets no gradient.
        keras.utils.set_random_seed(0)
        _check_training_step(layer_cls(**init_kwargs), input_data)
    if run_mixed_precision:
        for policy in PRECISION_POLICIES:
            _check_precision_policy(layer_cls, init_kwargs, input_data, policy)
    if run_saving:
        model = keras.Sequential(
            [keras.Input(input_data.shape[1:]), layer_cls(**init_kwargs)]
        )
        _randomize_weights(model)
        run_keras_saving_test(model, input_data, tmp_path)


def _check_config_round_trip(layer_cls, init_kwargs, input_data):
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    json.dumps(config)  # the config must be JSON-serializable
    for key in init_kwargs:
        assert key in config, (
            f"get_config() misses the constructor argument {key!r}"
        )
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    deserialized = keras.saving.deserialize_keras_object(serialized)
    assert type(deserialized) is layer_cls
    assert deserialized.get_config() == config
    # Same weights, same outputs.
    layer(input_data)
    deserialized(input_data)
    deserialized.set_weights(layer.get_weights())
    assert_all_close(deserialized(input_data), layer(input_data))


def _check_symbolic_shape(
    layer_cls, init_kwargs, input_data, expected_output_shape
):
    layer = layer_cls(**init_kwargs)
    symbolic = keras.KerasTensor(input_data.shape, dtype="float32")
    output_spec = layer.compute_output_spec(symbolic)
    assert tuple(output_spec.shape) == tuple(expected_output_shape)
    # Unknown batch and spatial dimensions keep the channels.
    shape = list(input_data.shape)
    channel_axis = layer.channel_axis if hasattr(layer, "channel_axis") else -1
    unknown = [None] * len(shape)
    unknown[channel_axis] = shape[channel_axis]
    inputs = keras.Input(batch_shape=tuple(unknown))
    outputs = layer_cls(**init_kwargs)(inputs)
    assert tuple(outputs.shape) == tuple(unknown)


def _randomize_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(0.5, 0.5, weight.shape).astype(weight.dtype))


def _check_training_step(layer, input_data):
    model = keras.Sequential([keras.Input(input_data.shape[1:]), layer])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        jit_compile=backend_supports_jit(),
    )
    before = [ops.convert_to_numpy(w) for w in layer.trainable_weights]
    target = np.zeros_like(input_data)
    history = model.fit(
        input_data, target, batch_size=len(input_data), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    after = [ops.convert_to_numpy(w) for w in layer.trainable_weights]
    for b, a, w in zip(before, after, layer.trainable_weights):
        assert not np.allclose(a, b), (
            f"{w.path} did not change in a training step"
        )


def _check_precision_policy(layer_cls, init_kwargs, input_data, policy):
    """Output in the compute dtype, variables in the variable dtype.

    Keras's dtype-policy contract: float32 variables under the mixed
    policies, bfloat16 ones under "bfloat16" (KerasHub checks both).
    """
    layer = layer_cls(**{**init_kwargs, "dtype": policy})
    output = layer(input_data)
    assert keras.backend.standardize_dtype(output.dtype) == layer.compute_dtype
    assert layer.compute_dtype != "float32"
    variable_dtype = layer.dtype_policy.variable_dtype
    for weight in layer.weights:
        assert weight.dtype == variable_dtype, (
            f"{weight.path} is {weight.dtype} under {policy}"
        )
    assert_finite(output, f"under {policy}")


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def run_model_test(
    build_model,
    input_data,
    expected_output_shape,
    run_training=True,
    run_mixed_precision=True,
    run_saving=True,
    tmp_path=None,
):
    """Checks a model: config, shapes, one fit step, mixed precision, saving.

    Args:
        build_model: a zero-argument callable returning a fresh model; it is
            called again under each mixed precision policy.
        input_data: a numpy batch.
        expected_output_shape: the output's full shape.
    """
    model = build_model()
    output = model(input_data)
    assert tuple(output.shape) == tuple(expected_output_shape)
    assert_finite(output)
    _check_model_config_round_trip(model, input_data)
    if run_training:
        _check_model_training_step(model, input_data)
    if run_mixed_precision:
        for policy in MIXED_POLICIES:
            with dtype_policy(policy):
                mixed = build_model()
            mixed_output = mixed(input_data)
            assert tuple(mixed_output.shape) == tuple(expected_output_shape)
            assert_finite(mixed_output, f"under {policy}")
    if run_saving:
        run_keras_saving_test(model, input_data, tmp_path)


def _check_model_config_round_trip(model, input_data):
    config = model.get_config()
    revived = model.__class__.from_config(config)
    revived.set_weights(model.get_weights())
    assert_all_close(
        revived(input_data), model(input_data), rtol=1e-5, atol=1e-5
    )
    serialized = keras.saving.serialize_keras_object(model)
    deserialized = keras.saving.deserialize_keras_object(serialized)
    assert len(deserialized.weights) == len(model.weights)


def _check_model_training_step(model, input_data):
    outputs = model(input_data)
    target = np.zeros(outputs.shape, "float32")
    model.compile(
        optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=False
    )
    before = [ops.convert_to_numpy(w) for w in model.trainable_weights]
    history = model.fit(
        input_data, target, batch_size=len(input_data), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])
    after = [ops.convert_to_numpy(w) for w in model.trainable_weights]
    changed = sum(not np.allclose(a, b) for a, b in zip(after, before))
    assert changed > 0, "no trainable weight changed in a training step"


# --------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------


def run_keras_saving_test(model, input_data, tmp_path):
    """`.keras` round trip in this process; returns the saved file's path."""
    path = os.path.join(str(tmp_path), f"{model.name}.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert_all_close(
        restored(input_data), model(input_data), rtol=1e-5, atol=1e-5
    )
    return path


# JAX runs each eager op as its own XLA program, compiled once per shape:
# a test process on JAX spends most of its time compiling programs it runs
# a few times. None of these flags changes the results (no fast-math either
# way); together they take about a third off that compile time:
# - no LLVM optimisation passes;
# - each program compiled as one LLVM module, not split for parallel
#   compilation (which costs more than it gains for tiny programs);
# - the classic loop emitters instead of the newer fusion emitters, which
#   build and lower an MLIR module per fusion.
# An older jaxlib that does not know a flag would abort on it: those get the
# first alone.
_JAX_FAST_COMPILE = "--xla_backend_optimization_level=0"
_JAX_FAST_COMPILE_SINCE_0_10 = (
    " --xla_cpu_parallel_codegen_split_count=1"
    " --xla_cpu_use_fusion_emitters=false"
)


def backend_env(backend):
    """The environment variables of a test process on `backend`."""
    env = {"KERAS_BACKEND": backend}
    if backend == "jax":
        import importlib.metadata

        flags = _JAX_FAST_COMPILE
        jaxlib = importlib.metadata.version("jaxlib").split(".")
        if tuple(int(part) for part in jaxlib[:2]) >= (0, 10):
            flags += _JAX_FAST_COMPILE_SINCE_0_10
        env["XLA_FLAGS"] = " ".join(
            filter(None, [os.environ.get("XLA_FLAGS", ""), flags])
        )
    return env


def run_in_fresh_process(code, env=None, timeout=300):
    """Runs Python `code` in a new interpreter and returns its stdout.

    The child starts from the repo root with the same backend unless `env`
    says otherwise; a failure shows the child's stderr.
    """
    child_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=timeout,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, (
        f"child process failed:\n{result.stderr[-4000:]}"
    )
    return result.stdout


def export_and_serve_in_fresh_process(model, input_data, tmp_path):
    """Exports `model` as a SavedModel and serves it in a new process.

    The child never imports keras_sge (it checks so) nor keras: it loads the
    artifact with `tf.saved_model.load` and calls its `serve` endpoint, the
    way TF Serving would. `input_data` is one batch, or a list of batches
    (of different image sizes, say) that the one child serves in turn.
    Returns (keras_outputs, served_outputs), each a batch or a list of them.
    """
    batches = input_data if isinstance(input_data, list) else [input_data]
    export_dir = os.path.join(str(tmp_path), "saved_model")
    model.export(export_dir, format="tf_saved_model")
    inputs_path = os.path.join(str(tmp_path), "serve_inputs.npz")
    outputs_path = os.path.join(str(tmp_path), "served_outputs.npz")
    np.savez(inputs_path, *batches)
    run_in_fresh_process(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        served = tf.saved_model.load({export_dir!r})
        batches = np.load({inputs_path!r})
        np.savez({outputs_path!r}, *[
            np.asarray(served.serve(tf.constant(batches[f"arr_{{i}}"])))
            for i in range(len(batches.files))
        ])
        assert "keras_sge" not in sys.modules, "serving imported keras_sge"
        """,
        env={"KERAS_BACKEND": "tensorflow"},
    )
    served = np.load(outputs_path)
    pairs = [
        (ops.convert_to_numpy(model(batch)), served[f"arr_{i}"])
        for i, batch in enumerate(batches)
    ]
    if isinstance(input_data, list):
        return [expected for expected, _ in pairs], [out for _, out in pairs]
    return pairs[0]


# --------------------------------------------------------------------------
# Exported artifacts, run by their own runtimes
# --------------------------------------------------------------------------

# Each program reads `inputs_path`, writes `outputs_path`, and must not need
# keras_sge or Keras; the ONNX and LiteRT runtimes not even TensorFlow.
_ARTIFACT_RUNNERS = {
    "saved_model": """
        import tensorflow as tf
        serving = tf.saved_model.load(artifact).signatures["serving_default"]
        (input_name,) = serving.structured_input_signature[1]
        (outputs,) = serving(**{input_name: tf.constant(inputs)}).values()
        outputs = outputs.numpy()
        forbidden = ("keras_sge",)  # tf.saved_model.load may import Keras itself
        """,
    "onnx": """
        import onnxruntime
        session = onnxruntime.InferenceSession(artifact, providers=["CPUExecutionProvider"])
        (outputs,) = session.run(None, {session.get_inputs()[0].name: inputs})
        forbidden = ("keras_sge", "keras", "tensorflow")
        """,
    "litert": """
        from ai_edge_litert.interpreter import Interpreter
        interpreter = Interpreter(model_path=artifact)
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, inputs.shape, strict=False)
        interpreter.allocate_tensors()
        source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        # full-integer model: quantize with its own scale
        if np.issubdtype(source["dtype"], np.integer):
            scale, zero_point = source["quantization"]
            limits = np.iinfo(source["dtype"])
            inputs = np.clip(np.round(inputs / scale + zero_point), limits.min, limits.max)
        interpreter.set_tensor(index, inputs.astype(source["dtype"]))
        interpreter.invoke()
        outputs = interpreter.get_tensor(target["index"])
        if np.issubdtype(target["dtype"], np.integer):
            scale, zero_point = target["quantization"]
            outputs = (outputs.astype("float32") - zero_point) * scale
        forbidden = ("keras_sge", "keras", "tensorflow")
        """,
}


def run_artifact_in_fresh_process(runtime, artifact, input_data, tmp_path):
    """Runs an exported model on `input_data` in a new process; returns its outputs.

    The child loads the artifact the way a deployment would, and fails if
    it imported keras_sge (or Keras or TensorFlow, for ONNX and LiteRT).

    Args:
        runtime: `"saved_model"` (`tf.saved_model.load`, the
            `serving_default` signature TF Serving calls), `"onnx"`
            (onnxruntime) or `"litert"` (`ai_edge_litert`'s interpreter;
            an integer model's input and output are (de)quantized with the
            file's own scale and zero point).
        artifact: the exported file or directory, or a list of them, run
            one after the other in the same child (one interpreter to
            start); then a list of outputs comes back, in that order.
        input_data: one float32 numpy batch, the model's only input; with
            a list of artifacts, either one batch for all of them or a
            list of batches, one per artifact.
    """
    if runtime not in _ARTIFACT_RUNNERS:
        raise ValueError(
            f"`runtime` must be one of {sorted(_ARTIFACT_RUNNERS)}. Received: runtime={runtime!r}"
        )
    single = isinstance(artifact, (str, os.PathLike))
    artifacts = [artifact] if single else list(artifact)
    batches = (
        list(input_data)
        if isinstance(input_data, (list, tuple))
        else [input_data] * len(artifacts)
    )
    if len(batches) != len(artifacts):
        raise ValueError(
            f"`input_data` must be one batch or one per artifact "
            f"({len(artifacts)}). Received: {len(batches)} batches"
        )
    inputs_path = os.path.join(str(tmp_path), f"{runtime}_inputs.npz")
    outputs_path = os.path.join(str(tmp_path), f"{runtime}_outputs.npz")
    np.savez(inputs_path, *(np.asarray(b, "float32") for b in batches))
    runner = textwrap.indent(
        textwrap.dedent(_ARTIFACT_RUNNERS[runtime]), "    "
    )
    program = (
        textwrap.dedent(
            """
        import sys
        import numpy as np

        def run(artifact, inputs):
        """
        )
        + runner
        + textwrap.dedent(
            f"""
            return outputs, forbidden

        outputs = []
        batches = np.load({inputs_path!r})
        for i, artifact in enumerate({[str(a) for a in artifacts]!r}):
            output, forbidden = run(artifact, batches[f"arr_{{i}}"])
            outputs.append(np.asarray(output, "float32"))
            loaded = [name for name in forbidden if name in sys.modules]
            assert not loaded, f"running {{artifact}} imported {{loaded}}"
        np.savez({outputs_path!r}, *outputs)
        """
        )
    )
    run_in_fresh_process(program, env={"KERAS_BACKEND": "tensorflow"})
    with np.load(outputs_path) as saved:
        outputs = [saved[f"arr_{i}"] for i in range(len(artifacts))]
    return outputs[0] if single else outputs


def assert_close_to_largest_logit(actual, expected, relative=1e-4, msg=""):
    """max |actual - expected| <= relative * max |expected|; returns the ratio."""
    scale = float(np.max(np.abs(expected)))
    diff = float(np.max(np.abs(np.asarray(actual) - np.asarray(expected))))
    assert diff <= relative * scale, (
        f"{msg}max abs diff {diff:.3g} > {relative} * max |logit| {scale:.3g}"
    )
    return diff / scale
