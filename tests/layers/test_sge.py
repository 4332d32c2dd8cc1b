"""Tests for keras_sge.SGE: parity with the official code, dtypes, errors.

Everything here but the tests marked `tensorflow_only` also runs under the
JAX and PyTorch backends (tests/test_backends.py).
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_sge
from tests import harness
from tests.fixtures.make_sge_fixtures import CASES
from tests.fixtures.make_sge_fixtures import FIXTURE_PATH

SIGMOID_1 = 1.0 / (1.0 + math.exp(-1.0))


def to_layout(x_nchw, data_format):
    return (
        x_nchw
        if data_format == "channels_first"
        else np.transpose(x_nchw, (0, 2, 3, 1))
    )


def run_sge(x_nchw, gamma, beta, groups, data_format, dtype=None):
    layer = keras_sge.SGE(groups, data_format=data_format, dtype=dtype)
    x = to_layout(x_nchw, data_format)
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    output = ops.convert_to_numpy(ops.cast(layer(x), "float32"))
    return (
        output
        if data_format == "channels_first"
        else np.transpose(output, (0, 3, 1, 2))
    )


def grouped_gate(layer, x):
    """The gate repeated over each group's channels, in the input's layout."""
    gate = ops.convert_to_numpy(layer.gate(x))
    per_group = x.shape[layer.channel_axis] // layer.groups
    return np.repeat(gate, per_group, axis=layer.channel_axis)


# ---------------------------------------------------------------------------
# The shared harness
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_layer_harness(data_format, tmp_path):
    shape = (2, 6, 5, 16) if data_format == "channels_last" else (2, 16, 6, 5)
    harness.run_layer_test(
        keras_sge.SGE,
        init_kwargs={
            "groups": 4,
            "epsilon": 1e-3,
            "data_format": data_format,
            "gamma_initializer": "random_normal",
            "beta_initializer": "ones",
            "gamma_regularizer": "l2",
            "beta_regularizer": None,
            "gamma_constraint": None,
            "beta_constraint": "non_neg",
        },
        input_data=np.random.default_rng(0)
        .standard_normal(shape)
        .astype("float32"),
        expected_output_shape=shape,
        expected_num_trainable_weights=2,
        tmp_path=tmp_path,
    )


def test_config_is_complete_and_defaults_match_the_paper():
    layer = keras_sge.SGE()
    config = layer.get_config()
    assert config["groups"] == 64
    assert config["epsilon"] == 1e-5
    assert config["data_format"] == keras.config.image_data_format()
    assert config["gamma_initializer"]["class_name"] == "Zeros"
    assert config["beta_initializer"]["class_name"] == "Ones"
    assert keras.saving.get_registered_name(keras_sge.SGE) == "keras_sge>SGE"


def test_weights_are_gamma_then_beta_float32_and_paper_initialised():
    layer = keras_sge.SGE(8, dtype="mixed_bfloat16")
    layer.build((None, 4, 4, 32))
    assert [w.name for w in layer.weights] == ["gamma", "beta"]
    for weight in layer.weights:
        assert tuple(weight.shape) == (8,)
        assert weight.dtype == "float32"
    np.testing.assert_array_equal(
        ops.convert_to_numpy(layer.gamma), np.zeros(8)
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.beta), np.ones(8))
    assert layer.count_params() == 16


# ---------------------------------------------------------------------------
# Parity with the official PyTorch code
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_golden_reference_outputs(case, data_format):
    golden = np.load(FIXTURE_PATH)
    x = golden[f"case{case}_x_nchw"]
    expected = golden[f"case{case}_y_nchw"]
    output = run_sge(
        x,
        golden[f"case{case}_gamma"],
        golden[f"case{case}_beta"],
        int(golden[f"case{case}_groups"]),
        data_format,
    )
    np.testing.assert_allclose(
        output, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
    )


def test_golden_fixture_is_reproducible_from_its_script():
    torch_reference = pytest.importorskip("keras_sge.testing.torch_reference")  # noqa: F841
    from tests.fixtures.make_sge_fixtures import make_cases

    golden = np.load(FIXTURE_PATH)
    for key, value in make_cases(int(golden["seed"])).items():
        np.testing.assert_allclose(
            golden[key], value, rtol=1e-6, atol=1e-6, err_msg=key
        )


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_matches_live_torch_reference_on_random_shapes(data_format):
    torch_reference = pytest.importorskip("keras_sge.testing.torch_reference")
    rng = np.random.default_rng(7)
    for _ in range(6):
        groups = int(rng.choice([1, 2, 4, 5, 8, 64]))
        channels = groups * int(rng.integers(1, 6))
        n = int(rng.integers(1, 4))
        h, w = (int(v) for v in rng.integers(2, 13, size=2))
        x = rng.standard_normal((n, channels, h, w)).astype("float32") * float(
            rng.choice([0.1, 1.0, 30.0])
        )
        gamma = rng.standard_normal(groups).astype("float32")
        beta = rng.standard_normal(groups).astype("float32")
        expected = torch_reference.sge_forward(x, gamma, beta, groups)
        output = run_sge(x, gamma, beta, groups, data_format)
        np.testing.assert_allclose(
            output,
            expected,
            rtol=1e-5,
            atol=1e-5 * np.abs(expected).max(),
            err_msg=f"{x.shape} groups={groups}",
        )


def test_groups_are_contiguous_channels_not_interleaved():
    # Scaling the channels of group 0 only must leave group 1's gate alone.
    # An NHWC reshape that mixes positions or strides over channels fails it.
    layer = keras_sge.SGE(2, data_format="channels_last")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 5, 5, 8)).astype("float32")
    layer.build(x.shape)
    layer.set_weights([np.ones(2, "float32"), np.zeros(2, "float32")])
    changed = x.copy()
    changed[..., :4] = rng.standard_normal((1, 5, 5, 4))
    gate, changed_gate = (
        ops.convert_to_numpy(layer.gate(v)) for v in (x, changed)
    )
    np.testing.assert_allclose(gate[..., 1], changed_gate[..., 1], rtol=1e-6)
    assert not np.allclose(gate[..., 0], changed_gate[..., 0])


# ---------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_gate_shape_and_call_uses_it(data_format):
    layer = keras_sge.SGE(
        4, data_format=data_format, gamma_initializer="random_normal"
    )
    shape = (2, 7, 3, 12) if data_format == "channels_last" else (2, 12, 7, 3)
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    gate = ops.convert_to_numpy(layer.gate(x))
    expected_shape = (
        (2, 7, 3, 4) if data_format == "channels_last" else (2, 4, 7, 3)
    )
    assert gate.shape == expected_shape
    assert gate.dtype == np.float32
    assert np.all((gate > 0) & (gate < 1))
    harness.assert_all_close(layer(x), x * grouped_gate(layer, x))


def test_gate_at_init_is_sigmoid_of_one():
    x = (
        np.random.default_rng(2)
        .standard_normal((2, 5, 5, 64))
        .astype("float32")
    )
    gate = ops.convert_to_numpy(
        keras_sge.SGE(64, data_format="channels_last").gate(x)
    )
    np.testing.assert_allclose(gate, SIGMOID_1, rtol=1e-6)


# ---------------------------------------------------------------------------
# Edge cases and precision
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_one_by_one_map_gives_sigmoid_beta_not_nan(data_format):
    shape = (3, 1, 1, 16) if data_format == "channels_last" else (3, 16, 1, 1)
    layer = keras_sge.SGE(
        4, data_format=data_format, gamma_initializer="random_normal"
    )
    x = np.random.default_rng(4).standard_normal(shape).astype("float32")
    layer.build(x.shape)
    beta = np.array([-1.0, 0.0, 0.5, 2.0], "float32")
    layer.beta.assign(beta)
    gate = ops.convert_to_numpy(layer.gate(x)).reshape(3, 4)
    np.testing.assert_allclose(
        gate, np.broadcast_to(1 / (1 + np.exp(-beta)), (3, 4)), rtol=1e-6
    )
    harness.assert_finite(layer(x))


def test_constant_map_gives_finite_output_and_sigmoid_beta():
    layer = keras_sge.SGE(
        2, data_format="channels_last", gamma_initializer="ones"
    )
    x = np.full((2, 6, 6, 4), 3.0, "float32")
    output = ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(output, 3.0 * SIGMOID_1, rtol=1e-6)


@pytest.mark.parametrize("policy", harness.PRECISION_POLICIES)
def test_mixed_precision_large_activations_stay_finite_and_accurate(policy):
    # Activations of magnitude 100 on a 56x56 map, 64 channels a group: the
    # similarity map reaches ~6e5, beyond float16's 65504.
    rng = np.random.default_rng(5)
    x = (100.0 * rng.standard_normal((2, 56, 56, 128))).astype("float32")
    gamma = rng.standard_normal(2).astype("float32")
    beta = rng.standard_normal(2).astype("float32")
    layer = keras_sge.SGE(2, data_format="channels_last", dtype=policy)
    layer.build(x.shape)
    layer.set_weights([gamma, beta])
    output = layer(ops.cast(x, layer.compute_dtype))
    assert keras.backend.standardize_dtype(output.dtype) == layer.compute_dtype
    harness.assert_finite(output, policy)
    reference = run_sge(
        np.transpose(x, (0, 3, 1, 2)), gamma, beta, 2, "channels_first"
    )
    output32 = np.transpose(
        ops.convert_to_numpy(ops.cast(output, "float32")), (0, 3, 1, 2)
    )
    # The error is the compute dtype's rounding of the input and output
    # (and under "bfloat16" of gamma and beta: the statistics stay float32).
    tolerance = 2e-3 if policy == "mixed_float16" else 1e-2
    np.testing.assert_allclose(
        output32, reference, rtol=tolerance, atol=tolerance * 100
    )


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
def test_integer_images_are_taken_as_numbers_in_the_compute_dtype(dtype):
    # A user feeding raw pixels: like Conv2D, SGE computes in float, where
    # an int output would truncate every gated value (< 1 times x) to 0.
    rng = np.random.default_rng(9)
    pixels = rng.integers(0, 2 if dtype == "bool" else 256, (2, 5, 4, 16))
    images = pixels.astype(dtype)
    layer = keras_sge.SGE(4, gamma_initializer="random_normal")
    output = layer(images)
    assert keras.backend.standardize_dtype(output.dtype) == "float32"
    expected = layer(images.astype("float32"))
    harness.assert_all_close(output, expected)
    assert np.abs(ops.convert_to_numpy(output)).max() > 0
    harness.assert_all_close(
        layer.gate(images), layer.gate(images.astype("float32"))
    )


def test_integer_images_follow_a_mixed_policy_and_functional_inputs():
    images = np.random.default_rng(10).integers(0, 256, (2, 6, 6, 8))
    inputs = keras.Input((6, 6, 8), dtype="int32")
    layer = keras_sge.SGE(2, gamma_initializer="ones", dtype="mixed_float16")
    model = keras.Model(inputs, layer(inputs))
    output = model(images.astype("int32"))
    assert keras.backend.standardize_dtype(output.dtype) == "float16"
    harness.assert_all_close(
        ops.cast(output, "float32"),
        ops.cast(layer(images.astype("float16")), "float32"),
    )


def test_unknown_batch_and_spatial_dims_in_a_functional_model():
    inputs = keras.Input((None, None, 8))
    model = keras.Model(
        inputs, keras_sge.SGE(2, data_format="channels_last")(inputs)
    )
    rng = np.random.default_rng(6)
    for shape in [(1, 4, 4, 8), (3, 9, 2, 8), (2, 1, 1, 8)]:
        x = rng.standard_normal(shape).astype("float32")
        output = model.predict(x, verbose=0)
        assert output.shape == shape
        harness.assert_finite(output)


@pytest.mark.skipif(
    not harness.backend_supports_jit(), reason="no XLA on this backend"
)
def test_jit_compiled_predict_matches_eager():
    inputs = keras.Input((None, None, 16))
    model = keras.Model(
        inputs, keras_sge.SGE(4, gamma_initializer="random_normal")(inputs)
    )
    x = (
        np.random.default_rng(8)
        .standard_normal((2, 6, 5, 16))
        .astype("float32")
    )
    eager = ops.convert_to_numpy(model(x))
    model.compile(jit_compile=True)
    harness.assert_all_close(
        model.predict(x, verbose=0), eager, rtol=1e-5, atol=1e-5
    )


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [0, -3, 2.5, "4", True, None])
def test_groups_must_be_a_positive_integer(groups):
    with pytest.raises(
        ValueError,
        match=f"groups={groups!r}".replace("(", r"\(").replace(".", r"\."),
    ):
        keras_sge.SGE(groups)


def test_channels_not_divisible_by_groups_names_both():
    with pytest.raises(ValueError, match=r"channels \(24\).*groups \(64\)"):
        keras_sge.SGE(64, data_format="channels_last")(
            np.zeros((1, 4, 4, 24), "float32")
        )


@pytest.mark.parametrize("shape", [(2, 8), (4, 4, 8), (1, 2, 4, 4, 8)])
def test_rank_other_than_four_is_rejected(shape):
    with pytest.raises(ValueError, match=f"rank {len(shape)}"):
        keras_sge.SGE(2)(np.zeros(shape, "float32"))


def test_unknown_channel_dimension_is_rejected():
    with pytest.raises(ValueError, match="known channel dimension"):
        keras_sge.SGE(2, data_format="channels_last")(keras.Input((8, 8, None)))


def test_unknown_data_format_is_rejected():
    with pytest.raises(ValueError, match="data_format='NHWC'"):
        keras_sge.SGE(2, data_format="NHWC")


def test_an_integer_layer_dtype_is_rejected():
    with pytest.raises(ValueError, match="floating-point.*dtype='int32'"):
        keras_sge.SGE(2, dtype="int32")


def test_complex_inputs_are_rejected_naming_the_dtype():
    with pytest.raises(ValueError, match="inputs.dtype=complex64"):
        keras_sge.SGE(2)(np.ones((1, 4, 4, 8), "complex64"))


def test_negative_epsilon_is_rejected():
    with pytest.raises(ValueError, match="epsilon=-1"):
        keras_sge.SGE(2, epsilon=-1)


# ---------------------------------------------------------------------------
# Saving and serving in fresh processes (TensorFlow features)
# ---------------------------------------------------------------------------


def sge_model():
    inputs = keras.Input((None, None, 16))
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = keras_sge.SGE(
        4, gamma_initializer="random_normal", beta_initializer="random_normal"
    )(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


@pytest.mark.tensorflow_only
def test_keras_file_loads_in_a_fresh_process(tmp_path):
    model = sge_model()
    x = (
        np.random.default_rng(9)
        .standard_normal((2, 7, 6, 16))
        .astype("float32")
    )
    path = harness.run_keras_saving_test(model, x, tmp_path)
    np.save(tmp_path / "x.npy", x)
    harness.run_in_fresh_process(
        f"""
        import numpy as np, keras, keras_sge
        model = keras.saving.load_model({path!r})
        np.save(
            {str(tmp_path / "y.npy")!r},
            model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0),
        )
        """
    )
    harness.assert_all_close(
        np.load(tmp_path / "y.npy"), model(x), rtol=1e-5, atol=1e-5
    )


@pytest.mark.tensorflow_only
def test_saved_model_exported_after_predict_serves_any_size_without_xla(
    tmp_path,
):
    # TF Serving does not run XLA-only functions by default: an export
    # after Keras's predict has traced the layer holds plain ops only. With
    # unknown height and width it serves images of any size. (Models with a
    # fixed input size are served in tests/export/test_export.py.)
    model = sge_model()
    rng = np.random.default_rng(11)
    model.predict(
        rng.standard_normal((2, 9, 7, 16)).astype("float32"), verbose=0
    )
    sizes = [(3, 8, 8, 16), (1, 13, 5, 16)]
    batches = [rng.standard_normal(size).astype("float32") for size in sizes]
    expected, served = harness.export_and_serve_in_fresh_process(
        model, batches, tmp_path
    )
    for want, got in zip(expected, served):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    saved_model = tmp_path / "saved_model" / "saved_model.pb"
    assert b"XlaMustCompile" not in saved_model.read_bytes()
