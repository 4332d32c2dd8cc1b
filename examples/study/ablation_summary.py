"""The first study's design and its statistics over seeds.

`examples/ablation.py` trains the variants named here and summarises its
runs with `summarise`; `examples.study.ablation_report` writes the summary
out as RESULTS.md and figures.
"""

import re

import numpy as np

VARIANTS = ("sge", "plain", "flat")
VARIANT_NAMES = {
    "sge": "SGE-ResNet-18 (groups=64)",
    "plain": "ResNet-18 (groups=None)",
    "flat": "SGE-ResNet-18, gamma frozen at 0",
}
SHORT_NAMES = {"sge": "SGE", "plain": "plain", "flat": "SGE, gamma = 0"}
# The paired differences reported, (minuend, subtrahend).
COMPARISONS = (("sge", "plain"), ("flat", "plain"), ("sge", "flat"))


def stage_stride(layer_name):
    """The stride of an SGE-ResNet layer: 4 in conv2, 8 in conv3, ... 32 in conv5."""
    return 2 ** int(re.match(r"conv(\d)_", layer_name).group(1))


def spread(values):
    """Mean, sample standard deviation (0 for one value), min and max."""
    values = np.asarray(values, "float64")
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {
        "mean": float(values.mean()),
        "std": std,
        "min": float(values.min()),
        "max": float(values.max()),
        "values": values.tolist(),
    }


def paired_difference(first, second):
    """`first - second` (accuracies, paired by seed), with its 95% t interval."""
    from examples.study import measures

    differences = np.asarray(first) - np.asarray(second)
    result = spread(differences)
    result["ci95"] = measures.paired_t(differences)["ci95"]
    if result["ci95"] is None:  # one seed: no estimate of the noise
        result["exceeds_noise"] = None
        return result
    # The interval excludes 0: the difference exceeds seed-to-seed noise.
    result["exceeds_noise"] = bool(
        result["ci95"][0] > 0 or result["ci95"][1] < 0
    )
    return result


def summarise(runs):
    """Accuracy per variant, the paired differences, and the localisation
    measures and SGE parameters per layer, over the seeds."""
    by_variant = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    summary = {
        "accuracy": {
            v: spread([r["accuracy"] for r in rs])
            for v, rs in by_variant.items()
            if rs
        }
    }
    summary["differences"] = {}
    for first, second in COMPARISONS:
        paired = [
            (a["accuracy"], b["accuracy"])
            for a in by_variant[first]
            for b in by_variant[second]
            if a["seed"] == b["seed"]
        ]
        if paired:
            summary["differences"][f"{first}-{second}"] = paired_difference(
                *zip(*paired)
            )
    sge_runs = [r for r in by_variant["sge"] if "localisation" in r]
    if sge_runs:
        summary["localisation"] = {
            "trained": _over_seeds([r["localisation"] for r in sge_runs]),
            "init": _over_seeds([r["localisation_init"] for r in sge_runs]),
        }
        summary["sge_parameters"] = _over_seeds(
            [r["sge_parameters"] for r in sge_runs]
        )
    return summary


def _over_seeds(per_seed):
    """`[{layer: {measure: value}}]` over seeds -> `{layer: {measure: spread}}`."""
    summary = {}
    for layer, measures in per_seed[0].items():
        summary[layer] = (
            {"map_shape": measures["map_shape"]}
            if "map_shape" in measures
            else {}
        )
        for name in measures:
            if name != "map_shape":
                summary[layer][name] = spread(
                    [seed[layer][name] for seed in per_seed]
                )
    return summary
