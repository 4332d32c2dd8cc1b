"""Every export a Keras user would try, run where it is deployed.

An SGE-ResNet-18, a small Sequential model with SGE (unknown height and
width) and keras.applications' MobileNetV2 with SGE added by
`keras_sge.add_attention` are exported with the plain Keras / TensorFlow calls, after
`predict` has traced the model: `model.export` (SavedModel),
`tf.saved_model.save`, `format="onnx"` and `format="litert"`. The
artifacts then run in a fresh process per runtime that never imports
keras_sge (nor, for ONNX and LiteRT, Keras or TensorFlow; see
tests/harness.py), and each must give its model's float32 Keras logits
within 1e-4 of the largest. The ONNX export
from the PyTorch backend is checked the same way; quantized LiteRT files
must run and report their top-1 agreement; Keras's own full-integer
LiteRT export must run and stay within 30% of the largest logit.
"""

import os

import keras
import numpy as np
import pytest

from keras_sge import applications
from keras_sge.applications import torch_mapping
from keras_sge.layers.sge import SGE
from tests import harness
from tests.applications import parity

pytestmark = pytest.mark.tensorflow_only

# runtime -> the exports it loads (`export` below)
EXPORTS = {
    "saved_model": ["model_export", "tf_saved_model_save"],
    "onnx": ["onnx"],
    "litert": ["litert"],
}


def sge_resnet18(image_size=64):
    """SGE-ResNet-18 with random weights, BN statistics and SGE gamma/beta."""
    model = parity.keras_model(18, classes=10, image_size=image_size)
    torch_mapping.set_weights_from_state_dict(
        model, parity.random_state_dict(18, 64, 10, seed=11)
    )
    return model, applications.preprocess_input(
        parity.random_images(12, batch=3, image_size=image_size)
    )


def sge_sequential():
    """Conv -> BN -> SGE -> ReLU -> pooling -> Dense, any image size."""
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Conv2D(32, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            SGE(groups=8),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5),
        ],
        name="sge_sequential",
    )
    rng = np.random.default_rng(13)
    for weight in model.weights:
        low = 0.5 if "variance" in weight.path else -1.0
        weight.assign(rng.uniform(low, 1.0, weight.shape).astype("float32"))
    return model, rng.standard_normal((3, 12, 10, 3)).astype("float32")


def mobilenet_v2_with_sge():
    """keras.applications' MobileNetV2 with SGE put in by `add_attention`."""
    from keras_sge import add_attention
    from tests.surgery import common

    keras.utils.set_random_seed(5)
    base = common.randomize(
        keras.applications.MobileNetV2(
            weights=None,
            input_shape=(32, 32, 3),
            alpha=0.35,
            classes=10,
            classifier_activation=None,
        )
    )
    model = add_attention(base, "sge", groups=64)
    rng = np.random.default_rng(5)
    for layer in common.sge_layers(model):  # gates that vary over positions
        layer.gamma.assign(
            rng.uniform(-1, 1, layer.gamma.shape).astype("float32")
        )
    return model, rng.uniform(-1, 1, (3, 32, 32, 3)).astype("float32")


MODELS = {
    "sge_resnet18": sge_resnet18,
    "sge_sequential": sge_sequential,
    "mobilenet_v2_add_attention": mobilenet_v2_with_sge,
}


@pytest.fixture(scope="module")
def traced_models():
    """name -> (model, inputs, Keras's logits) for every model of MODELS.

    Exports usually follow training or evaluation: Keras traces each model
    first, so that the tests would see that trace leak into an export.
    """
    models = {}
    for name, make in MODELS.items():
        model, inputs = make()
        model.predict(inputs, verbose=0)
        expected = keras.ops.convert_to_numpy(model(inputs, training=False))
        models[name] = (model, inputs, expected)
    return models


def export(model, kind, directory):
    """Exports `model` the way a Keras user would; returns the artifact's path."""
    import tensorflow as tf

    if kind == "model_export":
        path = os.path.join(directory, "saved_model")
        model.export(path, verbose=False)
    elif kind == "tf_saved_model_save":
        path = os.path.join(directory, "tf_saved_model")
        tf.saved_model.save(model, path)
    elif kind == "onnx":
        path = os.path.join(directory, "model.onnx")
        model.export(path, format="onnx", verbose=False)
    else:
        path = os.path.join(directory, "model.tflite")
        model.export(path, format="litert", verbose=False)
    return path


# what each runtime needs beside TensorFlow (the `export` extra)
RUNTIME_MODULES = {
    "saved_model": [],
    "onnx": ["tf2onnx", "onnxruntime"],
    "litert": ["ai_edge_litert"],
}


def require_runtime(runtime):
    for module in RUNTIME_MODULES[runtime]:
        pytest.importorskip(
            module,
            reason=f"{module} is not installed (pip install '.[export]')",
        )


def assert_no_xla_only_function(saved_model):
    # TF Serving does not JIT-compile XLA by default; such a function there
    # would fail to run.
    with open(os.path.join(saved_model, "saved_model.pb"), "rb") as f:
        assert b"_XlaMustCompile" not in f.read(), (
            f"{saved_model} holds an XLA-only function"
        )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("runtime", list(EXPORTS))
def test_exports_run_without_keras_sge(traced_models, runtime, tmp_path):
    require_runtime(runtime)
    exported = []  # (model name, export kind, artifact)
    for name, (model, _, _) in traced_models.items():
        directory = tmp_path / name
        directory.mkdir()
        for kind in EXPORTS[runtime]:
            exported.append((name, kind, export(model, kind, str(directory))))
    if runtime == "saved_model":
        for _, _, artifact in exported:
            assert_no_xla_only_function(artifact)
    # One fresh process runs every model's artifacts for this runtime.
    outputs = harness.run_artifact_in_fresh_process(
        runtime,
        [artifact for _, _, artifact in exported],
        [traced_models[name][1] for name, _, _ in exported],
        tmp_path,
    )
    for (name, kind, _), served in zip(exported, outputs):
        expected = traced_models[name][2]
        assert served.shape == expected.shape, (name, kind)
        relative = harness.assert_close_to_largest_logit(
            served, expected, msg=f"{name} {kind}: "
        )
        print(f"{name} {kind}: max abs diff / max |logit| = {relative:.1e}")


def test_artifact_runner_refuses_batches_that_do_not_fit_the_artifacts(
    tmp_path,
):
    # Refused before any file is written or process started.
    batch = np.zeros((1, 8, 8, 3), "float32")
    with pytest.raises(
        ValueError, match=r"one per artifact \(2\)\. Received: 3"
    ):
        harness.run_artifact_in_fresh_process(
            "onnx", ["a.onnx", "b.onnx"], [batch] * 3, tmp_path
        )
    assert not os.listdir(tmp_path)


@pytest.mark.timeout(300)
def test_onnx_exported_from_the_torch_backend(tmp_path):
    # A .keras file saved here (TensorFlow) is exported by a PyTorch-backend
    # process, and the ONNX file runs in onnxruntime with TensorFlow's logits.
    pytest.importorskip("torch")
    require_runtime("onnx")
    model, inputs = sge_resnet18()
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    keras_file = str(tmp_path / "sge_resnet18.keras")
    model.save(keras_file)
    onnx_file = str(tmp_path / "from_torch.onnx")
    harness.run_in_fresh_process(
        f"""
        import keras
        import numpy as np
        import keras_sge
        assert keras.backend.backend() == "torch"
        model = keras.saving.load_model({keras_file!r})
        # Keras's ONNX export wants a called model
        model(np.zeros((1, *model.input_shape[1:]), "float32"))
        model.export({onnx_file!r}, format="onnx", verbose=False)
        """,
        env={"KERAS_BACKEND": "torch"},
    )
    served = harness.run_artifact_in_fresh_process(
        "onnx", onnx_file, inputs, tmp_path
    )
    relative = harness.assert_close_to_largest_logit(served, expected)
    print(f"ONNX from torch: max abs diff / max |logit| = {relative:.1e}")


@pytest.mark.timeout(300)
def test_onnx_of_a_channels_first_copy_gives_the_same_logits(tmp_path):
    # docs/deployment.md's ONNX recipe: ONNX convolutions are NCHW, so a
    # channels_first copy of the model (same weights) exports without the
    # layout transposes tf2onnx cannot move past SGE's reshapes.
    require_runtime("onnx")
    model, inputs = sge_resnet18()
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    copy = applications.SGEResNet18(
        input_shape=(3, 64, 64),
        classes=10,
        classifier_activation=None,
        data_format="channels_first",
    )
    copy.set_weights(model.get_weights())
    nchw = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
    copy(nchw[:1])  # Keras's ONNX export wants a called model
    onnx_file = str(tmp_path / "nchw.onnx")
    copy.export(onnx_file, format="onnx", verbose=False)
    served = harness.run_artifact_in_fresh_process(
        "onnx", onnx_file, nchw, tmp_path
    )
    relative = harness.assert_close_to_largest_logit(served, expected)
    print(
        f"ONNX, channels_first copy: max abs diff / max |logit| = {relative:.1e}"
    )


def representative_images(inputs, count=8):
    rng = np.random.default_rng(14)
    for _ in range(count):
        yield [
            inputs[:1]
            + 0.1 * rng.standard_normal(inputs[:1].shape).astype("float32")
        ]


def litert_agreement(served, expected):
    agreement = float(np.mean(np.argmax(served, -1) == np.argmax(expected, -1)))
    relative = float(
        np.max(np.abs(served - expected)) / np.max(np.abs(expected))
    )
    return f"top-1 agreement {agreement:.2f}, max abs diff / max |logit| {relative:.2e}"


def assert_int8_weights(path, model):
    """Quantized files are 4x smaller than float32 ones (int8 weights)."""
    float32_bytes = 4 * sum(int(np.prod(w.shape)) for w in model.weights)
    assert os.path.getsize(path) < 0.3 * float32_bytes, (
        f"{os.path.basename(path)}: {os.path.getsize(path)} bytes, "
        f"float32 weights {float32_bytes}"
    )


@pytest.mark.timeout(300)
def test_dynamic_range_litert_runs_without_keras_sge(tmp_path):
    # Integer files (`keras_sge.litert.export_integer` and Keras's own
    # full-integer export) are run below, at two image sizes.
    import tensorflow as tf

    require_runtime("litert")
    # ResNet-18: dynamic-range quantization leaves tensors under 1024 values
    # in float, which would be all of the Sequential model's.
    model, inputs = sge_resnet18()
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    path = str(tmp_path / "dynamic_range.tflite")
    model.export(
        path,
        format="litert",
        verbose=False,
        optimizations=[tf.lite.Optimize.DEFAULT],
    )
    served = harness.run_artifact_in_fresh_process(
        "litert", path, inputs, tmp_path
    )
    assert served.shape == expected.shape and np.all(np.isfinite(served))
    assert_int8_weights(path, model)
    print(f"LiteRT dynamic range: {litert_agreement(served, expected)}")


@pytest.mark.timeout(400)
@pytest.mark.parametrize("image_size", [32, 64])
def test_keras_full_integer_litert_export_runs(image_size, tmp_path):
    import tensorflow as tf

    import keras_sge.litert

    # Keras's own full-integer export quantizes SGE's statistics to int8 too.
    # An int8 DIV by std + eps failed at run time once int8 rounded it to
    # zero (at 64x64), and int8 kernels aborted on the all-zero ranges of
    # 1x1 maps (the last stage at 32x32); SGE now takes its reciprocal as
    # a POW, which LiteRT keeps in float, and a 1x1 map's statistics are
    # constants. It must run everywhere; its int8 statistics cost accuracy,
    # which is why `export_integer` (SGE in float) stays the recommended
    # way: measured here 0.12 / 0.18 of the largest logit against 0.03 /
    # 0.05 with SGE in float (random weights, 32 / 64 pixels).
    require_runtime("litert")
    model, inputs = sge_resnet18(image_size)
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))

    # Calibrated on the images it is checked on, so that what is measured
    # is int8's rounding, not ranges clipped by unseen images.
    def calibration():
        return ([image[None]] for image in inputs)

    full_integer = str(tmp_path / "full_integer.tflite")
    model.export(
        full_integer,
        format="litert",
        verbose=False,
        optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=calibration,
    )
    sge_in_float = str(tmp_path / "sge_in_float.tflite")
    keras_sge.litert.export_integer(model, sge_in_float, calibration)
    paths = [full_integer, sge_in_float]
    outputs = harness.run_artifact_in_fresh_process(
        "litert", paths, inputs, tmp_path
    )
    errors = {}
    for path, served in zip(paths, outputs):
        assert served.shape == expected.shape and np.all(np.isfinite(served))
        # At 32x32 too: SGE's constant gate on the last stage's 1x1 maps,
        # folded into a convolution, once kept that convolution in float.
        assert_int8_weights(path, model)
        errors[path] = np.max(np.abs(served - expected)) / np.max(
            np.abs(expected)
        )
    print(f"LiteRT int8 error, Keras's export vs SGE in float: {errors}")
    # Loose bounds: int8 error, not garbage, and SGE in float no worse.
    assert errors[full_integer] < 0.3, errors
    assert errors[sge_in_float] <= errors[full_integer], errors


def test_export_integer_rejects_bad_arguments(tmp_path):
    import keras_sge.litert

    model, inputs = sge_sequential()
    with pytest.raises(ValueError, match="filepath='model.onnx'"):
        keras_sge.litert.export_integer(
            model, "model.onnx", lambda: representative_images(inputs)
        )
    with pytest.raises(ValueError, match="representative_dataset=\\[1, 2\\]"):
        keras_sge.litert.export_integer(
            model, str(tmp_path / "m.tflite"), [1, 2]
        )
