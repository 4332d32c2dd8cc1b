"""Stable identifiers of the benchmarks' variants, and their display labels.

Every result a benchmark saves carries an `id` beside its display label:
`benchmarks/report.py` looks results up and classifies them by id only, so
a label can be reworded without turning a target into "not measured".

- bench_layer: one entry per (mode, pass, variant); `id` is the variant's
  (`LAYER_VARIANTS`), keys `"{mode}|{pass}|{id}"`.
- bench_resnet: one entry per (task, batch, variant) with the variant's
  `id` (`RESNET_VARIANTS`), and one per ratio, `id` `"{a}/{b}"`
  (`ratio_id`), keys `"{task}|{batch}|{id}"`.
- bench_runtimes, bench_formulations, bench_families: keyed by ids already
  (runtime, model, formulation and family names).

Files written before ids existed hold only labels: `add_legacy_ids` gives
their entries ids from `LEGACY_LABELS`, a fixed table of the labels they
used. It never changes: a label renamed later needs no entry here.
"""

# id -> display label (bench_layer).
LAYER_VARIANTS = {
    "xy": "x*y",
    "sge_before": "SGE (before)",
    "sge": "SGE",
    "sge_other": "SGE (other)",
}
LAYER_BASELINE = "xy"

# id -> display label (bench_resnet).
RESNET_VARIANTS = {
    "keras_resnet": "Keras ResNet",
    "keras_sge_resnet": "Keras SGE-ResNet",
    "keras_sge_resnet_unfused": "Keras SGE-ResNet (unfused)",
    "keras_sge_resnet_other": "Keras SGE-ResNet (other)",
    "keras_sge_resnet_before": "Keras SGE-ResNet (before)",
    "torch_resnet": "PyTorch ResNet",
    "torch_sge_resnet": "PyTorch SGE-ResNet",
}

# The labels of result files saved before ids existed (frozen).
LEGACY_LABELS = {
    "layer": {
        "x*y": "xy",
        "SGE (before)": "sge_before",
        "SGE (ops only)": "sge_ops_only",
        "SGE": "sge",
        "SGE (other)": "sge_other",
    },
    "resnet": {
        "Keras ResNet": "keras_resnet",
        "Keras SGE-ResNet": "keras_sge_resnet",
        "Keras SGE-ResNet (unfused)": "keras_sge_resnet_unfused",
        "Keras SGE-ResNet (other)": "keras_sge_resnet_other",
        "Keras SGE-ResNet (before)": "keras_sge_resnet_before",
        "PyTorch ResNet": "torch_resnet",
        "PyTorch SGE-ResNet": "torch_sge_resnet",
    },
}


def ratio_id(numerator, denominator):
    """The id of the ratio of two variants' times, e.g. `sge/resnet`."""
    return f"{numerator}/{denominator}"


def ratio_label(numerator, denominator, labels):
    return f"{labels[numerator]} / {labels[denominator]}"


def add_legacy_ids(run, source="?"):
    """Gives the entries of a run saved without ids theirs, in place.

    Entries that have an `id` are left as they are. A label missing from
    `LEGACY_LABELS` raises a `ValueError`: an entry without an id would
    otherwise drop out of the report unnoticed.
    """
    labels = LEGACY_LABELS.get(run.get("benchmark"))
    if labels is None:
        return run

    def lookup(label):
        if label not in labels:
            raise ValueError(
                f"{source}: result {label!r} has no id and is not a known "
                "label of an older file (benchmarks/ids.py, LEGACY_LABELS)"
            )
        return labels[label]

    for entry in run["results"].values():
        if "id" in entry:
            continue
        if "ratio" in entry:
            numerator, denominator = entry["ratio"].split(" / ")
            entry["id"] = ratio_id(lookup(numerator), lookup(denominator))
        else:
            entry["id"] = lookup(entry["variant"])
    return run
