"""The study's measures: c_hat, per-group AUCs, the sign folding, the null.

Everything here is NumPy on maps from `keras_sge.inspect` (one forward
pass), so it can be tested on hand-made maps with known answers. Geometry
follows `examples.study.localisation`: cell `i` of a map with stride `s` is
centred on input pixel `s * i`, each input pixel takes the cell centred
nearest to it, and a cell's weight in a region is its number of pixels
there.

Regions of a canvas: the digit's box; the clutter (the fragments' boxes
minus the digit's box); the background (neither).

Per SGE layer, group `g` and image:

- `c_hat`: SGE's normalised similarity map, recomputed here from the
  layer's input exactly as the layer computes it (`check_c_hat` verifies
  `sigmoid(gamma * c_hat + beta)` against the layer's own gate);
- AUC of a map, digit vs clutter and digit vs background: the probability
  that a random digit pixel has a higher value than a random pixel of the
  other region, ties half (`auc`);
- the folded AUC: the AUC of `sign(gamma_g) * c_hat_g`, i.e. of the
  direction in which the gate uses c_hat (`1 - AUC(c_hat)` where gamma is
  negative, 0.5 where gamma is 0). Without folding, groups with opposite
  gammas cancel in an average;
- summaries over groups: the |gamma|-weighted mean of the folded AUC, and
  the share of the |gamma| mass in groups whose folded AUC (mean over
  images) is above 0.6 or below 0.4;
- the null: the same with every image's boxes taken from another image (a
  fixed derangement), which keeps every image-independent spatial bias
  (e.g. a map higher in the centre, where boxes often lie) and removes the
  image's own object;
- the norm enhancement: (digit/clutter ratio of the group feature norms
  after SGE) / (the same ratio before SGE); 1 = no enhancement.
"""

import numpy as np
from scipy import stats

from examples.study import localisation

EPSILON = 1e-5
HIGH_AUC = 0.6
LOW_AUC = 0.4
NULL_SEED = 20260


def c_hat(inputs, groups, epsilon=EPSILON):
    """SGE's normalised similarity map: `(N, H, W, C)` -> `(N, H, W, G)`.

    Per image and group: g = the spatial mean of the group's channels,
    c = <x_hw, g>, c_hat = (c - mean(c)) / (std(c) + epsilon) with the
    unbiased std over the H*W positions (divisor max(H*W - 1, 1), as
    keras_sge.SGE). Computed in float64.
    """
    inputs = np.asarray(inputs, "float64")
    n, h, w, channels = inputs.shape
    if channels % groups:
        raise ValueError(f"{channels} channels not divisible by {groups}")
    x = inputs.reshape(n, h, w, groups, channels // groups)
    g = x.mean(axis=(1, 2), keepdims=True)
    similarity = (x * g).sum(-1)
    centred = similarity - similarity.mean(axis=(1, 2), keepdims=True)
    std = np.sqrt(
        (centred**2).sum(axis=(1, 2), keepdims=True) / max(h * w - 1, 1)
    )
    return centred / (std + epsilon)


def gate_from_c_hat(chat, gamma, beta):
    """`sigmoid(gamma * c_hat + beta)` per group: the SGE gate."""
    return 1.0 / (1.0 + np.exp(-(chat * gamma + beta)))


def check_c_hat(chat, gate, gamma, beta, atol=1e-4):
    """The largest |gate - sigmoid(gamma * c_hat + beta)|; raises above atol."""
    error = float(np.max(np.abs(gate_from_c_hat(chat, gamma, beta) - gate)))
    if error > atol:
        raise AssertionError(
            f"c_hat does not reproduce the layer's gate (max error {error:.2e})"
        )
    return error


def group_norms(values, groups):
    """L2 norm over each group's channels: `(N, H, W, C)` -> `(N, H, W, G)`."""
    values = np.asarray(values, "float64")
    n, h, w, channels = values.shape
    grouped = values.reshape(n, h, w, groups, channels // groups)
    return np.sqrt((grouped**2).sum(-1))


def region_masks(boxes, clutter_boxes, image_size):
    """Pixel masks `(N, S, S)`: digit, clutter (minus digit), background."""
    digit = localisation.box_masks(boxes, image_size)
    clutter = localisation.box_masks(clutter_boxes, image_size) & ~digit
    background = ~(digit | clutter)
    return {"digit": digit, "clutter": clutter, "background": background}


def region_counts(masks, map_shape, stride):
    """Each region's pixel count per cell of a map: `(N, h, w)` arrays."""
    return {
        name: localisation.cell_counts(mask, map_shape, stride)
        for name, mask in masks.items()
    }


def derangement(count, seed=NULL_SEED):
    """A fixed permutation of range(count) with no fixed point (count >= 2)."""
    if count < 2:
        raise ValueError("a derangement needs at least 2 items")
    order = np.random.default_rng(seed).permutation(count)
    perm = np.empty(count, "int64")
    perm[order] = np.roll(order, -1)
    return perm


def auc(scores, positive, negative):
    """Per image and group, the weighted AUC of `scores`, ties counted half.

    Args:
        scores: `(N, h, w, G)`.
        positive, negative: `(N, h, w)` pixel counts per cell; every image
            needs some of each.

    Returns:
        `(N, G)` float64: P(score at a positive pixel > at a negative pixel)
        + P(equal) / 2, each pixel taking its cell's score. The same as
        `examples.study.localisation.weighted_auc`, by sorting instead of
        comparing all pairs.
    """
    scores = np.asarray(scores, "float64")
    n, h, w, groups = scores.shape
    k = h * w
    rows = scores.reshape(n, k, groups).transpose(0, 2, 1).reshape(-1, k)
    pos = np.repeat(np.asarray(positive, "float64").reshape(n, 1, k), groups, 1)
    neg = np.repeat(np.asarray(negative, "float64").reshape(n, 1, k), groups, 1)
    pos, neg = pos.reshape(-1, k), neg.reshape(-1, k)
    total_pos, total_neg = pos.sum(1), neg.sum(1)
    if (total_pos == 0).any() or (total_neg == 0).any():
        raise ValueError("auc: every image needs pixels in both regions")
    order = np.argsort(rows, axis=1, kind="stable")
    s = np.take_along_axis(rows, order, 1)
    p = np.take_along_axis(pos, order, 1)
    q = np.take_along_axis(neg, order, 1)
    index = np.broadcast_to(np.arange(k), s.shape)
    starts = np.ones_like(s, bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    ends = np.ones_like(s, bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, index, k)[:, ::-1], axis=1)[
        :, ::-1
    ]
    cumulative = np.cumsum(q, axis=1)
    below = np.take_along_axis(cumulative - q, first, 1)
    equal = np.take_along_axis(cumulative, last, 1) - below
    wins = (p * (below + 0.5 * equal)).sum(1)
    return (wins / (total_pos * total_neg)).reshape(n, groups)


def fold(auc_values, gamma):
    """The AUC of sign(gamma_g) * map_g from the AUC of map_g (last axis g)."""
    auc_values = np.asarray(auc_values, "float64")
    sign = np.sign(np.asarray(gamma, "float64"))
    return np.where(
        sign > 0, auc_values, np.where(sign < 0, 1.0 - auc_values, 0.5)
    )


def gamma_summary(folded, gamma):
    """|gamma|-weighted mean of per-group folded AUCs, and the mass shares.

    Args:
        folded: `(G,)` folded AUC per group (mean over images).
        gamma: `(G,)`.

    Returns:
        dict: `weighted` (0.5 when every gamma is 0), `share_high` (share of
        |gamma| in groups with folded AUC > 0.6), `share_low` (< 0.4).
    """
    folded = np.asarray(folded, "float64")
    weight = np.abs(np.asarray(gamma, "float64"))
    total = weight.sum()
    if total == 0:
        return {"weighted": 0.5, "share_high": 0.0, "share_low": 0.0}
    return {
        "weighted": float((weight * folded).sum() / total),
        "share_high": float(weight[folded > HIGH_AUC].sum() / total),
        "share_low": float(weight[folded < LOW_AUC].sum() / total),
    }


def layer_measures(
    inputs, gate, gamma, beta, boxes, clutter_boxes, stride, perm=None
):
    """Every measure of one SGE layer on N images (see the module docstring).

    Args:
        inputs: `(N, H, W, C)` the layer's input.
        gate: `(N, H, W, G)` the layer's gate (`SGE.gate`).
        gamma, beta: `(G,)`.
        boxes: `(N, 4)` digit boxes; clutter_boxes: `(N, K, 4)`.
        stride: input pixels per cell.
        perm: the null's permutation of the images (default `derangement`).

    Returns:
        A JSON-ready dict: per-group lists (`per_group`) and summaries.
    """
    inputs = np.asarray(inputs, "float32")
    gate = np.asarray(gate, "float64")
    gamma = np.asarray(gamma, "float64")
    beta = np.asarray(beta, "float64")
    n, h, w, groups = gate.shape
    image_size = stride * w
    chat = c_hat(inputs, groups)
    check_error = check_c_hat(chat, gate, gamma, beta)
    perm = derangement(n) if perm is None else np.asarray(perm)
    boxes, clutter_boxes = np.asarray(boxes), np.asarray(clutter_boxes)
    real = region_counts(
        region_masks(boxes, clutter_boxes, image_size), (h, w), stride
    )
    null = region_counts(
        region_masks(boxes[perm], clutter_boxes[perm], image_size),
        (h, w),
        stride,
    )
    per_group = {"gamma": gamma.tolist(), "beta": beta.tolist()}
    summary = {}
    for other in ("clutter", "background"):
        for label, regions in (("", real), ("null_", null)):
            chat_auc = auc(chat, regions["digit"], regions[other]).mean(0)
            folded = fold(chat_auc, gamma)
            per_group[f"{label}chat_auc_vs_{other}"] = chat_auc.tolist()
            per_group[f"{label}folded_auc_vs_{other}"] = folded.tolist()
            for key, value in gamma_summary(folded, gamma).items():
                summary[f"{label}{key}_vs_{other}"] = value
            summary[f"{label}chat_auc_mean_vs_{other}"] = float(chat_auc.mean())
        gate_auc = auc(gate, real["digit"], real[other]).mean(0)
        per_group[f"gate_auc_vs_{other}"] = gate_auc.tolist()
    before = group_norms(inputs, groups)
    after = before * gate  # the gate is one value per group and position
    for other in ("clutter", "background"):
        ratio_before = localisation.ratio(before, real["digit"], real[other])
        ratio_after = localisation.ratio(after, real["digit"], real[other])
        summary[f"norm_ratio_before_vs_{other}"] = ratio_before
        summary[f"norm_ratio_after_vs_{other}"] = ratio_after
        summary[f"norm_enhancement_vs_{other}"] = ratio_after / ratio_before
    summary.update(
        gamma_abs_mean=float(np.abs(gamma).mean()),
        gamma_abs_median=float(np.median(np.abs(gamma))),
        beta_mean=float(beta.mean()),
        gate_mean=float(gate.mean()),
        gate_spread=float(gate.std(axis=(1, 2)).mean()),
        c_hat_check_max_error=check_error,
        map_shape=[h, w],
        images=n,
    )
    return {"summary": summary, "per_group": per_group}


def pooled(layers, key="folded_auc_vs_clutter"):
    """Over every group of every layer: the |gamma|-weighted summary.

    `layers` maps layer names to `layer_measures` results; `key` names a
    per-group folded AUC (e.g. "null_folded_auc_vs_clutter").
    """
    folded = np.concatenate([m["per_group"][key] for m in layers.values()])
    gamma = np.concatenate([m["per_group"]["gamma"] for m in layers.values()])
    return gamma_summary(folded, gamma)


def all_gammas(layers):
    return np.concatenate([m["per_group"]["gamma"] for m in layers.values()])


# ---------------------------------------------------------------------------
# Accuracy and statistics
# ---------------------------------------------------------------------------


def paired_drop(correct, correct_knocked):
    """Accuracy drop of a knock-out on the same images, with a 95% interval.

    Args:
        correct, correct_knocked: `(N,)` bools, per image, whether the
            intact and the knocked-out network are right.

    Returns:
        dict: `drop` (intact minus knocked-out accuracy), `ci95` (normal
        interval of a paired difference of proportions), the discordant
        counts and the two accuracies.
    """
    correct = np.asarray(correct, bool)
    knocked = np.asarray(correct_knocked, bool)
    n = len(correct)
    lost = int((correct & ~knocked).sum())
    gained = int((~correct & knocked).sum())
    drop = (lost - gained) / n
    se = np.sqrt(max(lost + gained - (lost - gained) ** 2 / n, 0.0)) / n
    return {
        "accuracy": float(correct.mean()),
        "accuracy_knocked": float(knocked.mean()),
        "drop": float(drop),
        "ci95": [float(drop - 1.96 * se), float(drop + 1.96 * se)],
        "lost": lost,
        "gained": gained,
        "images": n,
    }


def paired_t(differences):
    """Mean, sample SD and 95% t interval of per-seed paired differences."""
    d = np.asarray(differences, "float64")
    result = {"mean": float(d.mean()), "values": d.tolist(), "n": len(d)}
    if len(d) < 2:
        result.update(sd=None, ci95=None)
        return result
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(d) - 1) * sd / np.sqrt(len(d)))
    result.update(sd=sd, ci95=[float(d.mean() - half), float(d.mean() + half)])
    return result


def seeds_needed(effect, sd, alpha=0.05, power=0.8, most=1000):
    """Seeds for a two-sided paired t-test to detect `effect` with `power`.

    The smallest n whose noncentral-t power reaches `power` for a true
    mean paired difference `effect` with per-seed SD `sd`.
    """
    if not sd > 1e-9:
        return None  # no spread measured: no estimate
    for n in range(2, most + 1):
        df = n - 1
        critical = stats.t.ppf(1 - alpha / 2, df)
        shift = abs(effect) / sd * np.sqrt(n)
        # scipy's noncentral t returns NaN for some far tails; the lower
        # tail (rejecting in the wrong direction) is then negligible.
        upper = stats.nct.sf(critical, df, shift)
        lower = np.nan_to_num(stats.nct.cdf(-critical, df, shift))
        if upper + lower >= power:
            return n
    return None
