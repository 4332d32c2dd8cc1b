"""The decision rule of docs/study/DESIGN.md, as code, and the summaries.

For each SGE arm (A, B) and seed, from the trained network:

- `gamma_median`: the median |gamma| over every group of every SGE layer;
- `gamma_growth`: mean |gamma| at the end over mean |gamma| at the end of
  the epoch where the cosine is half done (`midpoint_epoch`), minus 1;
  `plateaued` when below `PLATEAU_GROWTH`;
- `W`: the |gamma|-weighted mean, over every group of every SGE layer, of
  the folded AUC (sign(gamma) * c_hat), digit vs clutter; `W0`: the same
  with the boxes permuted across images (the null);
- `E`: the geometric mean over the SGE layers of the norm enhancement
  (digit/clutter norm ratio after SGE over before);
- `K`: the accuracy drop (points, 2,000 held-out images) when every gate
  is replaced by its spatial mean, with its 95% interval.

Per seed: *selective* = gamma_median >= 0.1, W >= 0.6, W - W0 >= 0.05 and
E >= 1.03; *used* = K's interval above 0; *unused* = K < 0.3 points with an
interval covering 0; *against* = (gamma_median < 0.05 and plateaued) or
W - W0 < 0.02.

Per arm: CONFIRMED if every seed is selective and used; SELECTIVE BUT
UNUSED if every seed is selective and unused; REFUTED if every seed is
against; OPEN otherwise (the failing criteria are listed).
"""

import math

import numpy as np

from examples.study import measures

GAMMA_CONFIRM = 0.1
GAMMA_REFUTE = 0.05
PLATEAU_GROWTH = 0.20
W_CONFIRM = 0.6
MARGIN_CONFIRM = 0.05
MARGIN_REFUTE = 0.02
ENHANCEMENT_CONFIRM = 1.03
UNUSED_DROP_POINTS = 0.3
SGE_ARMS = ("A", "B")
# Paired accuracy differences (first minus second), by seed.
COMPARISONS = (("A", "C"), ("B", "C"), ("A", "D"), ("D", "C"), ("B", "A"))
# The paper's ImageNet gain (SGE-ResNet-50 over ResNet-50, top-1 points)
# and the paired per-seed SDs of the first study (docs/study/results.json:
# SGE-plain, flat-plain, SGE-flat), in points.
PAPER_EFFECT = 1.2
FIRST_STUDY_PAIRED_SDS = {
    "sge-plain": 2.04,
    "flat-plain": 0.95,
    "sge-flat": 1.28,
}


def midpoint_epoch(epochs, warmup_epochs):
    """The epoch (1-based) that ends when the cosine is half done (rounded up)."""
    return warmup_epochs + math.ceil((epochs - warmup_epochs) / 2)


def seed_indicators(record, config):
    """The rule's numbers for one SGE run (see the module docstring)."""
    layers = record["measures"]
    gamma = np.abs(measures.all_gammas(layers))
    groups = {name: len(m["per_group"]["gamma"]) for name, m in layers.items()}

    def mean_abs(entry):
        total = sum(
            entry["sge"][name]["gamma_abs_mean"] * count
            for name, count in groups.items()
        )
        return total / sum(groups.values())

    history = record["history"]
    middle = midpoint_epoch(config["epochs"], config["warmup_epochs"])
    at_middle = mean_abs(history[min(middle, len(history) - 1)])
    at_end = mean_abs(history[-1])
    growth = at_end / at_middle - 1 if at_middle > 0 else math.inf
    w = measures.pooled(layers, "folded_auc_vs_clutter")
    w0 = measures.pooled(layers, "null_folded_auc_vs_clutter")
    w_bg = measures.pooled(layers, "folded_auc_vs_background")
    w0_bg = measures.pooled(layers, "null_folded_auc_vs_background")
    enhancement = float(
        np.exp(
            np.mean(
                [
                    np.log(m["summary"]["norm_enhancement_vs_clutter"])
                    for m in layers.values()
                ]
            )
        )
    )
    knock = record["knockouts"]["gate_mean"]
    return {
        "gamma_median": float(np.median(gamma)),
        "gamma_abs_mean": float(gamma.mean()),
        "gamma_abs_mean_midpoint": at_middle,
        "midpoint_epoch": middle,
        "gamma_growth": growth,
        "plateaued": bool(growth < PLATEAU_GROWTH),
        "W": w["weighted"],
        "W0": w0["weighted"],
        "share_high": w["share_high"],
        "share_low": w["share_low"],
        "null_share_high": w0["share_high"],
        "null_share_low": w0["share_low"],
        "W_background": w_bg["weighted"],
        "W0_background": w0_bg["weighted"],
        "E": enhancement,
        "K_points": knock["drop"] * 100,
        "K_ci95_points": [v * 100 for v in knock["ci95"]],
        "gamma_zero_points": record["knockouts"]["gamma_zero"]["drop"] * 100,
        "gamma_zero_ci95_points": [
            v * 100 for v in record["knockouts"]["gamma_zero"]["ci95"]
        ],
    }


def seed_verdict(ind):
    """The per-seed criteria (booleans) and the reasons a seed is not selective."""
    checks = {
        f"median |gamma| >= {GAMMA_CONFIRM}": ind["gamma_median"]
        >= GAMMA_CONFIRM,
        f"W >= {W_CONFIRM}": ind["W"] >= W_CONFIRM,
        f"W - W0 >= {MARGIN_CONFIRM}": ind["W"] - ind["W0"] >= MARGIN_CONFIRM,
        f"E >= {ENHANCEMENT_CONFIRM}": ind["E"] >= ENHANCEMENT_CONFIRM,
    }
    low, high = ind["K_ci95_points"]
    selective = all(checks.values())
    used = low > 0
    unused = ind["K_points"] < UNUSED_DROP_POINTS and low <= 0 <= high
    small = ind["gamma_median"] < GAMMA_REFUTE and ind["plateaued"]
    not_object = ind["W"] - ind["W0"] < MARGIN_REFUTE
    return {
        "selective": selective,
        "used": used,
        "unused": unused,
        "against": small or not_object,
        "against_small_gamma": small,
        "against_not_object": not_object,
        "failed": [name for name, ok in checks.items() if not ok]
        + ([] if used else ["knock-out interval above 0"]),
    }


def arm_verdict(verdicts):
    """CONFIRMED, SELECTIVE BUT UNUSED, REFUTED or OPEN, from the seeds'."""
    if not verdicts:
        return "NO DATA"
    if all(v["selective"] and v["used"] for v in verdicts):
        return "CONFIRMED"
    if all(v["selective"] and v["unused"] for v in verdicts):
        return "SELECTIVE BUT UNUSED"
    if all(v["against"] for v in verdicts):
        return "REFUTED"
    return "OPEN"


def spread(values):
    values = np.asarray(values, "float64")
    return {
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
        "min": float(values.min()),
        "max": float(values.max()),
        "values": values.tolist(),
    }


def summarise(runs, config):
    """Accuracy, gamma, the rule's indicators and verdicts, comparisons."""
    by_arm = {}
    for record in sorted(runs, key=lambda r: (r["arm"], r["seed"])):
        by_arm.setdefault(record["arm"], {})[record["seed"]] = record
    summary = {"accuracy": {}, "arms": {}, "comparisons": {}}
    for arm, seeds in by_arm.items():
        summary["accuracy"][arm] = spread(
            [r["val_accuracy"] * 100 for r in seeds.values()]
        )
        summary["accuracy"][arm]["seeds"] = list(seeds)
    for arm in SGE_ARMS:
        if arm not in by_arm:
            continue
        indicators, verdicts = {}, {}
        for seed, record in by_arm[arm].items():
            indicators[seed] = seed_indicators(record, config)
            verdicts[seed] = seed_verdict(indicators[seed])
        summary["arms"][arm] = {
            "indicators": indicators,
            "seed_verdicts": verdicts,
            "verdict": arm_verdict(list(verdicts.values())),
            "layers": layer_table(by_arm[arm]),
        }
    observed_sds = {}
    for first, second in COMPARISONS:
        if first not in by_arm or second not in by_arm:
            continue
        seeds = sorted(set(by_arm[first]) & set(by_arm[second]))
        if not seeds:
            continue
        differences = [
            (
                by_arm[first][s]["val_accuracy"]
                - by_arm[second][s]["val_accuracy"]
            )
            * 100
            for s in seeds
        ]
        result = measures.paired_t(differences)
        result["seeds"] = seeds
        summary["comparisons"][f"{first}-{second}"] = result
        if result["sd"]:
            observed_sds[f"{first}-{second}"] = result["sd"]
    summary["seeds_needed"] = {
        "effect_points": PAPER_EFFECT,
        "power": 0.8,
        "alpha": 0.05,
        "first_study": {
            key: {"sd": sd, "seeds": measures.seeds_needed(PAPER_EFFECT, sd)}
            for key, sd in FIRST_STUDY_PAIRED_SDS.items()
        },
        "this_study": {
            key: {"sd": sd, "seeds": measures.seeds_needed(PAPER_EFFECT, sd)}
            for key, sd in observed_sds.items()
        },
    }
    return summary


LAYER_KEYS = (
    "gamma_abs_mean",
    "gamma_abs_median",
    "beta_mean",
    "gate_spread",
    "weighted_vs_clutter",
    "null_weighted_vs_clutter",
    "share_high_vs_clutter",
    "share_low_vs_clutter",
    "weighted_vs_background",
    "null_weighted_vs_background",
    "chat_auc_mean_vs_clutter",
    "null_chat_auc_mean_vs_clutter",
    "chat_auc_mean_vs_background",
    "null_chat_auc_mean_vs_background",
    "norm_ratio_before_vs_clutter",
    "norm_enhancement_vs_clutter",
    "norm_enhancement_vs_background",
)


def layer_table(seeds):
    """Per layer and key: mean and spread over the seeds, trained and init."""
    table = {}
    for stage in ("measures", "measures_init"):
        table[stage] = {}
        first = next(iter(seeds.values()))
        for layer in first[stage]:
            table[stage][layer] = {
                key: spread(
                    [r[stage][layer]["summary"][key] for r in seeds.values()]
                )
                for key in LAYER_KEYS
            }
            table[stage][layer]["map_shape"] = first[stage][layer]["summary"][
                "map_shape"
            ]
    return table
