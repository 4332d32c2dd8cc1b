"""Writes benchmarks/RESULTS.md and benchmarks/results.png from results/*.json.

    python -m benchmarks.report

Every benchmark run saves a JSON file in benchmarks/results/ (named by
benchmark, backend, device and dtype; a rerun replaces its file) and calls
this script. Hand-written analysis in benchmarks/analysis.md is appended.

Results are looked up and classified by their `id` (benchmarks/ids.py)
only; labels are for display. Files saved before ids existed get them from
their labels when loaded (`ids.add_legacy_ids`).
"""

import argparse
import json
from pathlib import Path

from benchmarks import ids

HERE = Path(__file__).resolve().parent

# The ratios the ResNet plot colours (by ratio id); others are blue.
RESNET_COLOURS = {
    ids.ratio_id("keras_sge_resnet_before", "keras_resnet"): "tab:gray",
    ids.ratio_id("torch_sge_resnet", "torch_resnet"): "tab:green",
    ids.ratio_id("keras_sge_resnet", "torch_sge_resnet"): "tab:purple",
    ids.ratio_id("keras_resnet", "torch_resnet"): "tab:purple",
}
# The layer variants the layer plot colours (by id); others are blue.
LAYER_COLOURS = {"sge_before": "tab:gray", "sge_ops_only": "tab:orange"}
SGE_VS_RESNET = ids.ratio_id("keras_sge_resnet", "keras_resnet")
SGE_VS_TORCH = ids.ratio_id("keras_sge_resnet", "torch_sge_resnet")


def load(results_dir):
    runs = []
    for path in sorted(Path(results_dir).glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("benchmark") not in ("layer", "resnet"):
            continue  # e.g. bench_scan's results, reported by that script
        data["_file"] = path.name
        ids.add_legacy_ids(data, path.name)
        runs.append(data)
    return runs


def find(run, fields):
    """The entry of `run["results"]` whose `fields` (`id`, `mode`, ...) match."""
    for entry in run["results"].values():
        if all(entry.get(k) == v for k, v in fields.items()):
            return entry
    return None


def fmt_ratio(s):
    return f"{s['median']:.2f} [{s['min']:.2f}-{s['max']:.2f}]"


def machine_line(m):
    versions = ", ".join(
        f"{k} {m[k]}"
        for k in ("python", "keras", "tensorflow", "jax", "torch")
        if m.get(k)
    )
    gpu = f"; GPU: {m['gpu']}" if m.get("gpu") else ""
    return (
        f"{m.get('cpu')} ({m.get('cpu_count')} logical cores){gpu}; "
        f"Keras backend {m.get('keras_backend')}; {versions}"
    )


def layer_section(run):
    lines = [
        f"### Layer: `{run['_file']}`",
        "",
        f"Input {run['shape']} (channels_last), groups {run['groups']}, policy `{run['dtype']}`, "
        f"{run['rounds']} interleaved rounds x {run['reps']} calls. "
        f"Device: {run['machine'].get('device')}. "
        f"Machine: {machine_line(run['machine'])}.",
        "Max |new - before| / max |before| on this input: "
        f"{run.get('max_rel_diff_new_vs_before', float('nan')):.1e}.",
        "",
        "Time relative to `x * y` on the same tensor, same mode and pass: "
        "median [min-max] over rounds (absolute median in ms in parentheses).",
        "",
    ]
    results = run["results"]
    variants = {}  # id -> the label it was saved with
    for r in results.values():
        if r["id"] != ids.LAYER_BASELINE:
            variants.setdefault(r["id"], r["variant"])
    lines.append(
        "| mode | pass | `x*y` ms | " + " | ".join(variants.values()) + " |"
    )
    lines.append("|---|---|---|" + "---|" * len(variants))
    rows = []
    for r in results.values():
        if (r["mode"], r["pass"]) not in rows:
            rows.append((r["mode"], r["pass"]))
    for mode, kind in rows:
        base = find(run, {"mode": mode, "pass": kind, "id": ids.LAYER_BASELINE})
        cells = []
        for v in variants:
            r = find(run, {"mode": mode, "pass": kind, "id": v})
            cells.append(
                f"{fmt_ratio(r['ratio_vs_xy'])} ({r['time_s']['median'] * 1e3:.3g})"
                if r
                else "-"
            )
        lines.append(
            f"| {mode} | {kind} | {base['time_s']['median'] * 1e3:.3g} | "
            + " | ".join(cells)
            + " |"
        )
    lines.append("")
    return lines


def resnet_section(run):
    lines = [
        f"### ResNet-{run['depth']}: `{run['_file']}`",
        "",
        f"{run['size']}x{run['size']}, policy `{run['dtype']}`, {run['rounds']} interleaved rounds"
        f"{', whole model XLA-compiled' if run.get('jit') else ''}. "
        f"Machine: {machine_line(run['machine'])}.",
        "",
        "| task | batch | ratio | median [min-max] |",
        "|---|---|---|---|",
    ]
    times = []
    for r in run["results"].values():
        if "ratio" in r:
            lines.append(
                f"| {r['task']} | {r['batch']} | {r['ratio']} | {fmt_ratio(r['summary'])} |"
            )
        else:
            times.append(r)
    lines += [
        "",
        "Absolute medians (ms): "
        + "; ".join(
            f"{r['task']} b{r['batch']} {r['variant']} {r['time_s']['median'] * 1e3:.4g}"
            for r in times
        ),
        "",
    ]
    return lines


def targets(runs):
    """The speed targets: one dict per target, with the run measuring it.

    `label`, `summary` (the measured ratio's median/min/max, or None when
    no run has it), `limit`, `strict` (`<` rather than `<=`) and `source`
    (the result file, or "-"). Results are found by id.
    """
    cpu_layer = [
        r
        for r in runs
        if r["benchmark"] == "layer"
        and r["machine"].get("device") == "cpu"
        and r["dtype"] == "float32"
        and r["machine"].get("keras_backend") == "tensorflow"
    ]
    cpu_resnet = [
        r
        for r in runs
        if r["benchmark"] == "resnet"
        and not r["machine"].get("gpu")
        and r["dtype"] == "float32"
        and not r.get("jit")
    ]
    layer = cpu_layer[0] if cpu_layer else None
    resnet = cpu_resnet[0] if cpu_resnet else None
    rows = []

    def add(label, summary, limit, run, strict=False):
        source = run["_file"] if run else "-"
        rows.append(
            {
                "label": label,
                "summary": summary,
                "limit": limit,
                "strict": strict,
                "source": source,
            }
        )

    def layer_ratio(mode, kind="fwd"):
        if not layer:
            return None
        r = find(layer, {"mode": mode, "pass": kind, "id": "sge"})
        return r["ratio_vs_xy"] if r else None

    def resnet_ratio(task, batch, ratio):
        if not resnet:
            return None
        r = find(resnet, {"task": task, "batch": batch, "id": ratio})
        return r["summary"] if r else None

    add(
        "one SGE layer / `x*y`, XLA, forward: <= 1.5",
        layer_ratio("xla"),
        1.5,
        layer,
    )
    add(
        "one SGE layer / `x*y`, eager, forward: <= 2.5",
        layer_ratio("eager"),
        2.5,
        layer,
    )
    add(
        "SGE-ResNet-50 / ResNet-50 inference, batch 8: <= 1.03",
        resnet_ratio("inference", 8, SGE_VS_RESNET),
        1.03,
        resnet,
    )
    train_batch = None
    if resnet:
        for r in resnet["results"].values():
            if r.get("task") == "training":
                train_batch = r["batch"]
    add(
        f"SGE-ResNet-50 / ResNet-50 training step (batch {train_batch}): <= 1.05",
        resnet_ratio("training", train_batch, SGE_VS_RESNET),
        1.05,
        resnet,
    )
    add(
        "our SGE-ResNet-50 / PyTorch reference, inference batch 8: < 1",
        resnet_ratio("inference", 8, SGE_VS_TORCH),
        1.0,
        resnet,
        strict=True,
    )
    add(
        f"our SGE-ResNet-50 / PyTorch reference, training step (batch {train_batch}): <= 1",
        resnet_ratio("training", train_batch, SGE_VS_TORCH),
        1.0,
        resnet,
    )
    return rows


def targets_section(runs):
    lines = [
        "## Speed targets, CPU float32",
        "",
        "| target | measured (median [min-max]) | met? | source |",
        "|---|---|---|---|",
    ]

    def load(source):
        for r in runs:
            if r["_file"] == source:
                value = r["machine"].get("load_average_at_start")
                return f"{value:.1f}" if value is not None else "?"
        return "?"

    for row in targets(runs):
        label, summary, limit = row["label"], row["summary"], row["limit"]
        if summary is None:
            lines.append(f"| {label} | not measured | - | - |")
            continue
        median = summary["median"]
        ok = median < limit if row["strict"] else median <= limit
        lines.append(
            f"| {label} | {fmt_ratio(summary)} | {'yes' if ok else 'no'} (median) "
            f"| `{row['source']}` (load {load(row['source'])}) |"
        )
    lines += [
        "",
        "`load` is the 1-minute load average when the run started (2 cores). "
        "PyTorch (OpenMP) slows down",
        "far more than TensorFlow under load, so the PyTorch rows depend on it "
        "(see the notes below).",
        "",
    ]
    return lines


def plot(runs, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    layer_runs = [r for r in runs if r["benchmark"] == "layer"]
    resnet_runs = [r for r in runs if r["benchmark"] == "resnet"]
    panels = len(layer_runs) + len(resnet_runs)
    if not panels:
        return None
    fig, axes = plt.subplots(
        panels, 1, figsize=(10, 3.4 * panels), squeeze=False
    )
    axes = axes[:, 0]
    i = 0
    for run in layer_runs:
        ax = axes[i]
        i += 1
        entries = [
            r for r in run["results"].values() if r["id"] != ids.LAYER_BASELINE
        ]
        labels = [f"{r['mode']} {r['pass']}\n{r['variant']}" for r in entries]
        med = [r["ratio_vs_xy"]["median"] for r in entries]
        err = [
            [m - r["ratio_vs_xy"]["min"] for m, r in zip(med, entries)],
            [r["ratio_vs_xy"]["max"] - m for m, r in zip(med, entries)],
        ]
        colors = [LAYER_COLOURS.get(r["id"], "tab:blue") for r in entries]
        ax.bar(range(len(med)), med, yerr=err, color=colors, capsize=3)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(med)))
        ax.set_xticklabels(labels, fontsize=6, rotation=60, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("time / x*y (log)")
        ax.set_title(
            f"SGE layer {run['shape']} {run['dtype']} on {run['machine'].get('device')} "
            f"({run['machine'].get('keras_backend')}); grey = before, blue = now",
            fontsize=9,
        )
    for run in resnet_runs:
        ax = axes[i]
        i += 1
        entries = [r for r in run["results"].values() if "ratio" in r]
        labels = [f"{r['task']} b{r['batch']}\n{r['ratio']}" for r in entries]
        med = [r["summary"]["median"] for r in entries]
        err = [
            [m - r["summary"]["min"] for m, r in zip(med, entries)],
            [r["summary"]["max"] - m for m, r in zip(med, entries)],
        ]
        colors = [RESNET_COLOURS.get(r["id"], "tab:blue") for r in entries]
        ax.bar(range(len(med)), med, yerr=err, color=colors, capsize=3)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(range(len(med)))
        ax.set_xticklabels(labels, fontsize=5.5, rotation=60, ha="right")
        ax.set_ylabel("time ratio")
        gpu = run["machine"].get("gpu")
        ax.set_title(
            f"ResNet-{run['depth']} {run['dtype']} on {gpu or 'CPU'} "
            f"({run['machine'].get('keras_backend')})",
            fontsize=9,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--results-dir", default=str(HERE / "results"))
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args(argv)
    runs = load(args.results_dir)
    lines = [
        "# SGE benchmarks",
        "",
        "> **History.** These tables measure earlier versions of the layer (nested",
        "> XLA functions inside Keras's step functions). The current layer's cost",
        "> in every runtime is measured by `python -m benchmarks.bench_runtimes`",
        "> (results in `results/runtimes_*.json`, table in the README).",
        "",
        "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json` (written by",
        "`benchmarks/bench_layer.py` and `benchmarks/bench_resnet.py`; "
        "rerun them from the repository root).",
        "All variants of a table ran interleaved in one process; ratios are per round, given as",
        "median [min-max] over the rounds. Each run records its machine and load; "
        "shared machines make CPU timings noisy.",
        "`before` is the first, straightforward layer (`benchmarks/baseline_sge.py`).",
        "",
        "![results](results.png)",
        "",
    ]
    lines += targets_section(runs)
    lines += ["## Measurements", ""]
    for run in runs:
        lines += (
            layer_section(run)
            if run["benchmark"] == "layer"
            else resnet_section(run)
        )
    analysis = HERE / "analysis.md"
    if analysis.exists():
        lines += ["", analysis.read_text()]
    Path(args.out).write_text("\n".join(lines) + "\n")
    png = plot(runs, Path(args.out).parent / "results.png")
    print(f"wrote {args.out}" + (f" and {png}" if png else ""))


if __name__ == "__main__":
    main()
