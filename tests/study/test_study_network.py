"""examples/study/network.py: the small ResNet, its arms, recipe and knock-outs."""

import math

import keras
import numpy as np
import pytest

from examples.study import network

CONFIG = {
    "image_size": 32,
    "weight_decay": 1e-4,
    "peak_lr": 0.1,
    "warmup_epochs": 1,
    "epochs": 3,
    "steps_per_epoch": 10,
    "momentum": 0.9,
    "jit_compile": False,
}


def images(count=4, seed=0):
    return np.random.default_rng(seed).normal(size=(count, 32, 32, 3))


def seeded(arm, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return network.build_network(arm, **kwargs)


def test_the_sge_arms_have_six_layers_of_4_channels_per_group_on_32_16_8_maps():
    model = seeded("A")
    layers = network.sge_layers(model)
    assert [layer.name for layer in layers] == [
        f"conv{s}_block{b}_sge" for s in (2, 3, 4) for b in (1, 2)
    ]
    assert [layer.groups for layer in layers] == [4, 4, 8, 8, 16, 16]
    assert [layer.input.shape[1] for layer in layers] == [32, 32, 16, 16, 8, 8]
    assert [network.layer_stride(layer.name) for layer in layers] == [
        1,
        1,
        2,
        2,
        4,
        4,
    ]
    plain = seeded("C")
    assert (
        network.sge_layers(plain) == []
        and network.sge_layers(seeded("D")) == []
    )
    # SGE adds gamma and beta per group, 2 x 56, and nothing else.
    assert model.count_params() == plain.count_params() + 112
    assert model.output_shape == (None, 10)
    with pytest.raises(ValueError, match="Unknown arm"):
        network.build_network("E")


def test_the_same_seed_gives_every_arm_the_same_convolution_weights():
    weights = {}
    for arm in network.ARMS:
        model = seeded(arm, seed=3)
        weights[arm] = {
            layer.name: layer.get_weights()
            for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
        }
    for arm in "BCD":
        assert weights[arm].keys() == weights["A"].keys()
        for name, values in weights["A"].items():
            for a, b in zip(values, weights[arm][name]):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("training", [False, True])
def test_arm_d_scales_every_branch_by_sigmoid_1_at_init(training):
    gate = 1 / (1 + math.exp(-1))
    assert network.INITIAL_GATE == pytest.approx(0.7310586)
    d, c, a = seeded("D"), seeded("C"), seeded("A")
    bns = network.branch_end_bns(d)
    assert len(bns) == 6
    for bn in bns:
        np.testing.assert_allclose(bn.gamma.numpy(), gate, rtol=1e-7)
        np.testing.assert_array_equal(bn.beta.numpy(), 0)
    for bn in network.branch_end_bns(c):
        np.testing.assert_array_equal(bn.gamma.numpy(), 1)
    x = images()
    # The first branch sees the same input in C and D: D's branch output is
    # exactly 0.731 times C's.
    name = "conv2_block1_2_bn"
    branch = {
        arm: keras.Model(m.input, m.get_layer(name).output)(
            x, training=training
        )
        for arm, m in (("C", c), ("D", d))
    }
    np.testing.assert_allclose(
        np.asarray(branch["D"]),
        gate * np.asarray(branch["C"]),
        rtol=1e-5,
        atol=1e-6,
    )
    # And the whole network is SGE's at initialisation (gamma = 0, beta = 1).
    np.testing.assert_allclose(
        np.asarray(d(x, training=training)),
        np.asarray(a(x, training=training)),
        rtol=1e-4,
        atol=1e-6,
    )
    assert not np.allclose(
        np.asarray(c(x, training=training)), np.asarray(d(x))
    )


def test_weight_decay_spares_gamma_and_beta_in_arm_b_only():
    a = network.compiled_network("A", 0, CONFIG)
    b = network.compiled_network("B", 0, CONFIG)
    for layer in network.sge_layers(a):
        assert layer.gamma.regularizer is not None
        assert layer.beta.regularizer is not None
    for layer in network.sge_layers(b):
        assert (
            layer.gamma.regularizer is None and layer.beta.regularizer is None
        )
    assert len(a.losses) == len(a.trainable_variables)
    assert len(b.losses) == len(b.trainable_variables) - 12
    # torch's coupled decay: the penalty's gradient is wd * w.
    conv = a.get_layer("conv1_conv").kernel
    assert conv.regularizer.l2 == pytest.approx(CONFIG["weight_decay"] / 2)


def test_the_schedule_warms_up_linearly_then_decays_by_a_cosine_to_0():
    schedule = network.WarmupCosine(0.1, 10, 30)
    lr = np.array(network.schedule_values(schedule, 30))
    np.testing.assert_allclose(lr[:10], 0.1 * np.arange(1, 11) / 10, rtol=1e-6)
    np.testing.assert_allclose(
        lr[10], 0.1, rtol=1e-6
    )  # cosine starts at the peak
    np.testing.assert_allclose(
        lr[20], 0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)), atol=1e-7
    )
    assert (np.diff(lr[10:]) < 0).all() and lr[-1] < 0.001
    assert network.WarmupCosine(**schedule.get_config()).peak == 0.1


def test_knockouts_copy_the_weights_and_remove_what_they_should():
    model = seeded("A")
    layers = network.sge_layers(model)
    rng = np.random.default_rng(1)
    for layer in layers:
        layer.gamma.assign(rng.normal(size=layer.groups).astype("float32"))
        layer.beta.assign(rng.normal(size=layer.groups).astype("float32"))
    x = images()
    mean = network.knockout(model, "A", "gate_mean")
    zero = network.knockout(model, "A", "gamma_zero")
    for knocked in (mean, zero):
        for original, copy in zip(layers, network.sge_layers(knocked)):
            np.testing.assert_array_equal(
                original.beta.numpy(), copy.beta.numpy()
            )
    for copy in network.sge_layers(zero):
        np.testing.assert_array_equal(copy.gamma.numpy(), 0)
    # The mean-gate layer: x times the gate's spatial mean per image and group.
    first = network.sge_layers(mean)[0]
    probe = keras.Model(mean.input, first.input)
    features = np.asarray(probe(x))
    gate = np.asarray(first.gate(features)).mean(axis=(1, 2), keepdims=True)
    expected = features * np.repeat(
        gate, features.shape[-1] // first.groups, -1
    )
    np.testing.assert_allclose(
        np.asarray(first(features)), expected, rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(np.asarray(mean(x)), np.asarray(model(x)))
    # At initialisation (gamma = 0) neither knock-out changes anything.
    fresh = seeded("B")
    for kind in ("gate_mean", "gamma_zero"):
        np.testing.assert_allclose(
            np.asarray(network.knockout(fresh, "B", kind)(x)),
            np.asarray(fresh(x)),
            rtol=1e-5,
            atol=1e-7,
        )
    with pytest.raises(ValueError, match="no SGE"):
        network.knockout(seeded("C"), "C", "gate_mean")
