"""examples/study/measures.py on hand-made maps with known answers."""

import numpy as np
import pytest

from examples.study import localisation
from examples.study import measures
from keras_sge import SGE


def box_map(size, box, high=1.0, low=0.0, groups=1, images=1):
    """`(N, size, size, G)` maps: `high` inside `box`, `low` elsewhere."""
    values = np.full((images, size, size, groups), low, "float64")
    top, left, bottom, right = box
    values[:, top:bottom, left:right] = high
    return values


def regions(boxes, clutter_boxes, size, map_size=None, stride=1):
    masks = measures.region_masks(
        np.asarray(boxes), np.asarray(clutter_boxes), size
    )
    return measures.region_counts(masks, (map_size or size,) * 2, stride)


def test_c_hat_reproduces_the_layers_gate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 5, 8)).astype("float32")
    layer = SGE(groups=4)
    layer.build(x.shape)
    gamma = np.array([0.7, -1.3, 0.0, 2.0], "float32")
    beta = np.array([1.0, 0.2, -0.5, 0.8], "float32")
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    chat = measures.c_hat(x, 4)
    assert chat.shape == (3, 6, 5, 4)
    # Normalised: mean 0, unbiased std 1 (up to epsilon) per image and group.
    np.testing.assert_allclose(chat.mean(axis=(1, 2)), 0, atol=1e-9)
    np.testing.assert_allclose(chat.std(axis=(1, 2), ddof=1), 1, atol=1e-3)
    gate = np.asarray(layer.gate(x))
    assert measures.check_c_hat(chat, gate, gamma, beta) < 1e-5
    with pytest.raises(AssertionError, match="does not reproduce"):
        measures.check_c_hat(chat, gate, -gamma, beta)


def test_auc_matches_the_pairwise_definition_with_ties_and_weights():
    rng = np.random.default_rng(1)
    # Few distinct values: many ties; pixel counts as weights.
    scores = rng.integers(0, 4, size=(5, 4, 4, 3)).astype("float64")
    positive = rng.integers(0, 3, size=(5, 4, 4)).astype("float64")
    negative = rng.integers(0, 3, size=(5, 4, 4)).astype("float64")
    positive[:, 0, 0] += 1
    negative[:, 1, 1] += 1
    np.testing.assert_allclose(
        measures.auc(scores, positive, negative),
        localisation.weighted_auc(scores, positive, negative),
        atol=1e-12,
    )
    with pytest.raises(ValueError, match="both regions"):
        measures.auc(scores, positive * 0, negative)


def test_a_map_high_exactly_on_the_box_has_auc_1_and_its_negative_0():
    box, clutter = [[8, 8, 24, 24]], [[[0, 0, 5, 5], [26, 26, 31, 31]]]
    counts = regions(box, clutter, 32)
    on_box = box_map(32, box[0])
    for other in ("clutter", "background"):
        assert measures.auc(on_box, counts["digit"], counts[other])[
            0, 0
        ] == pytest.approx(1.0)
        assert measures.auc(-on_box, counts["digit"], counts[other])[
            0, 0
        ] == pytest.approx(0.0)
    # A flat map: every pair ties.
    flat = np.zeros_like(on_box)
    assert measures.auc(flat, counts["digit"], counts["clutter"])[
        0, 0
    ] == pytest.approx(0.5)


def test_regions_partition_the_canvas_and_clutter_excludes_the_digit():
    box = [[8, 8, 24, 24]]
    clutter = [[[20, 20, 26, 26], [0, 0, 4, 4]]]  # the first overlaps the box
    masks = measures.region_masks(np.array(box), np.array(clutter), 32)
    total = sum(m.astype(int) for m in masks.values())
    assert (total == 1).all()
    assert masks["digit"].sum() == 256
    assert masks["clutter"].sum() == 36 - 16 + 16  # 2 px wide L + the 4x4
    # Counts per cell on a stride-4 map keep the pixel totals.
    counts = measures.region_counts(masks, (8, 8), 4)
    assert counts["digit"].sum() == 256 and counts["clutter"].sum() == 36


def test_folding_makes_mixed_sign_groups_agree():
    # Two groups see the same map, gated in opposite directions: group 0's
    # c_hat is high on the box and gamma > 0 (gate up on the digit); group
    # 1's c_hat is low on the box and gamma < 0 (also gate up on the digit).
    box, clutter = [[8, 8, 24, 24]], [[[0, 0, 5, 5]]]
    counts = regions(box, clutter, 32)
    chat = np.concatenate(
        [box_map(32, box[0], 1, -1), box_map(32, box[0], -1, 1)], -1
    )
    raw = measures.auc(chat, counts["digit"], counts["clutter"]).mean(0)
    np.testing.assert_allclose(raw, [1.0, 0.0])
    assert raw.mean() == pytest.approx(0.5)  # unfolded, they cancel
    gamma = np.array([0.4, -0.4])
    folded = measures.fold(raw, gamma)
    np.testing.assert_allclose(folded, [1.0, 1.0])
    summary = measures.gamma_summary(folded, gamma)
    assert summary == {"weighted": 1.0, "share_high": 1.0, "share_low": 0.0}
    # The folded AUC is the gate's AUC: sigmoid(gamma * c_hat + beta).
    gate = measures.gate_from_c_hat(chat, gamma, 1.0)
    np.testing.assert_allclose(
        measures.auc(gate, counts["digit"], counts["clutter"]).mean(0), folded
    )
    # gamma = 0: no direction, 0.5; and no weight.
    np.testing.assert_allclose(measures.fold([0.9], [0.0]), [0.5])
    assert measures.gamma_summary([0.9, 0.2], [0.0, 0.0])["weighted"] == 0.5


def test_gamma_weighting_and_mass_shares():
    folded = np.array([0.9, 0.3, 0.5, 0.7])
    gamma = np.array([0.5, -0.25, 0.25, 0.0])
    s = measures.gamma_summary(folded, gamma)
    assert s["weighted"] == pytest.approx((0.45 + 0.075 + 0.125) / 1.0)
    assert s["share_high"] == pytest.approx(0.5)
    assert s["share_low"] == pytest.approx(0.25)


def test_permuted_boxes_give_about_one_half_on_a_constructed_case():
    # Each image's map is high exactly on its own box; boxes are spread over
    # the canvas. With its own box the AUC is 1; with another image's box
    # (the null), about 0.5.
    rng = np.random.default_rng(2)
    n, size, side = 200, 32, 8
    corners = rng.integers(0, size - side + 1, size=(n, 2))
    boxes = np.concatenate([corners, corners + side], 1)
    maps = np.concatenate(
        [
            box_map(size, b) + rng.normal(0, 0.01, (1, size, size, 1))
            for b in boxes
        ]
    )
    # "clutter" = a fixed strip that may overlap the box (the mask drops
    # the overlap); the background is the rest.
    clutter = np.tile([[[0, 0, size, 2]]], (n, 1, 1))
    perm = measures.derangement(n)
    assert (perm != np.arange(n)).all()
    assert sorted(perm) == list(range(n))
    real = regions(boxes, clutter, size)
    null = regions(boxes[perm], clutter[perm], size)
    own = measures.auc(maps, real["digit"], real["background"]).mean()
    other = measures.auc(maps, null["digit"], null["background"]).mean()
    assert own == pytest.approx(1.0)
    assert abs(other - 0.5) < 0.06


def test_layer_measures_on_a_known_layer():
    # An SGE layer fed a feature map that is large on the box: its c_hat is
    # high on the box; with gamma < 0 the gate is low there (folded AUC 0).
    size, box = 16, [4, 4, 12, 12]
    clutter_box = [[0, 0, 3, 3]]
    n = 3
    rng = np.random.default_rng(3)
    x = rng.normal(0, 0.05, (n, size, size, 8)).astype("float32")
    x[:, 4:12, 4:12, :] += 2.0
    layer = SGE(groups=2)
    layer.build(x.shape)
    gamma = np.array([-2.0, 1.0], "float32")
    layer.gamma.assign(gamma)
    gate = np.asarray(layer.gate(x))
    result = measures.layer_measures(
        x,
        gate,
        gamma,
        np.ones(2),
        np.tile([box], (n, 1)),
        np.tile([clutter_box], (n, 1, 1)),
        stride=1,
    )
    groups = result["per_group"]
    np.testing.assert_allclose(groups["chat_auc_vs_clutter"], [1.0, 1.0])
    np.testing.assert_allclose(groups["folded_auc_vs_clutter"], [0.0, 1.0])
    np.testing.assert_allclose(groups["gate_auc_vs_clutter"], [0.0, 1.0])
    s = result["summary"]
    assert s["weighted_vs_clutter"] == pytest.approx(1 / 3)
    assert s["share_low_vs_clutter"] == pytest.approx(2 / 3)
    assert s["share_high_vs_clutter"] == pytest.approx(1 / 3)
    # Group 0 suppresses the box, group 1 raises it; the norm enhancement
    # is the product of the gate ratios, averaged as localisation.ratio does.
    assert s["norm_ratio_before_vs_clutter"] > 10
    assert s["c_hat_check_max_error"] < 1e-5
    assert s["map_shape"] == [16, 16] and s["images"] == 3


def test_norm_enhancement_is_1_for_a_flat_gate_and_above_for_a_box_gate():
    size, box = 16, [4, 4, 12, 12]
    n = 2
    x = np.ones((n, size, size, 4), "float32")
    x[:, 4:12, 4:12] = 1.5
    layer = SGE(groups=1)
    layer.build(x.shape)
    args = (np.tile([box], (n, 1)), np.tile([[[0, 0, 4, 4]]], (n, 1, 1)), 1)
    flat = measures.layer_measures(
        x, np.asarray(layer.gate(x)), np.zeros(1), np.ones(1), *args
    )["summary"]
    assert flat["norm_enhancement_vs_clutter"] == pytest.approx(1.0)
    assert flat["weighted_vs_clutter"] == 0.5  # gamma = 0: no weight
    layer.gamma.assign([1.0])
    sharp = measures.layer_measures(
        x, np.asarray(layer.gate(x)), np.ones(1), np.ones(1), *args
    )["summary"]
    assert sharp["norm_enhancement_vs_clutter"] > 1.2
    assert sharp["weighted_vs_clutter"] == pytest.approx(1.0)


def test_paired_drop_and_its_interval():
    correct = np.array([True] * 90 + [False] * 10)
    knocked = correct.copy()
    knocked[:6] = False  # 6 lost
    knocked[95] = True  # 1 gained
    d = measures.paired_drop(correct, knocked)
    assert d["drop"] == pytest.approx(0.05)
    assert (d["lost"], d["gained"], d["images"]) == (6, 1, 100)
    assert d["ci95"][0] < 0.05 < d["ci95"][1]
    same = measures.paired_drop(correct, correct)
    assert same["drop"] == 0 and same["ci95"] == [0.0, 0.0]


def test_paired_t_and_seeds_needed():
    t = measures.paired_t([1.0, 2.0, 3.0])
    assert t["mean"] == 2.0 and t["sd"] == 1.0
    assert t["ci95"][0] == pytest.approx(2 - 4.302653 / np.sqrt(3), rel=1e-5)
    assert measures.paired_t([1.0])["ci95"] is None
    # Larger SD, more seeds; the first study's SDs give 8, 12 and 25.
    assert [measures.seeds_needed(1.2, sd) for sd in (0.95, 1.28, 2.04)] == [
        8,
        12,
        25,
    ]
    # Where scipy's far tail is NaN the answer is still found (here 3),
    # and the same SD to the last digits gives the same answer.
    assert measures.seeds_needed(1.2, 0.2121320343559566) == 3
    assert measures.seeds_needed(1.2, 0.21213203435596445) == 3
    assert measures.seeds_needed(1.2, 0.0) is None
