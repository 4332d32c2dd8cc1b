"""Tests for `SqueezeExcite`, the paper's comparison attention."""

import numpy as np
import pytest
from keras import ops

from keras_sge.layers import SqueezeExcite
from tests import harness


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_layer_harness(data_format, tmp_path):
    shape = (2, 6, 5, 32) if data_format == "channels_last" else (2, 32, 6, 5)
    harness.run_layer_test(
        SqueezeExcite,
        init_kwargs={"reduction": 8, "data_format": data_format},
        input_data=np.random.default_rng(0)
        .standard_normal(shape)
        .astype("float32"),
        expected_output_shape=shape,
        expected_num_trainable_weights=4,
        tmp_path=tmp_path,
    )


def test_output_is_the_input_gated_per_channel_by_the_senet_formula():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 4, 32)).astype("float32")
    layer = SqueezeExcite(reduction=16, data_format="channels_last")
    layer.build(x.shape)
    w1, b1, w2, b2 = (
        rng.standard_normal(tuple(w.shape)).astype("float32")
        for w in layer.weights
    )
    layer.set_weights([w1, b1, w2, b2])
    squeezed = x.mean(axis=(1, 2))
    gate = 1.0 / (
        1.0 + np.exp(-(np.maximum(squeezed @ w1 + b1, 0.0) @ w2 + b2))
    )
    assert w1.shape == (32, 2) and w2.shape == (2, 32)
    harness.assert_all_close(
        layer(x), x * gate[:, None, None, :], rtol=1e-5, atol=1e-5
    )


def test_channels_first_equals_channels_last():
    x = (
        np.random.default_rng(2)
        .standard_normal((2, 6, 6, 16))
        .astype("float32")
    )
    last = SqueezeExcite(4, data_format="channels_last")
    first = SqueezeExcite(4, data_format="channels_first")
    last.build(x.shape)
    first.build((2, 16, 6, 6))
    first.set_weights(last.get_weights())
    got = ops.convert_to_numpy(first(np.transpose(x, (0, 3, 1, 2))))
    harness.assert_all_close(
        np.transpose(got, (0, 2, 3, 1)), last(x), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("reduction", [0, -2, 1.5, True, "16"])
def test_bad_reduction_is_named(reduction):
    with pytest.raises(
        ValueError,
        match=r"`reduction` must be a positive integer\. Received: reduction=",
    ):
        SqueezeExcite(reduction=reduction)


def test_input_without_known_channels_is_named():
    with pytest.raises(
        ValueError, match=r"rank-4 input.*Received: input_shape=\(2, 8\)"
    ):
        SqueezeExcite()(np.zeros((2, 8), "float32"))
