"""RESULTS.md and the figures of the first study, from its results.

`examples/ablation.py` calls these as its runs end; `--report` calls them
again from `results.json` alone.
"""

import numpy as np

from examples.study import common
from examples.study import localisation
from examples.study.ablation_summary import SHORT_NAMES
from examples.study.ablation_summary import VARIANT_NAMES
from examples.study.ablation_summary import VARIANTS
from examples.study.ablation_summary import stage_stride

# Figures are drawn from the trained SGE network of the first seed, on the
# first held-out images: a fixed choice, not a selection.
FIGURE_IMAGES = 4


def _pm(s, digits=3, scale=1):
    """`mean ± std` of a `spread`."""
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"


def write_markdown(results, path):
    """RESULTS.md: the setup, the accuracy table and the per-layer measures."""
    config, summary = results["config"], results["summary"]
    acc = summary["accuracy"]
    seeds = ", ".join(str(s) for s in range(config["seeds"]))
    lines = [
        "# SGE on cluttered digits: accuracy and where the gates point",
        "",
        f"Made by `{config['command']}` in {results['wall_seconds'] / 60:.1f} minutes on "
        f"{results['machine']['cpu_count']} CPU cores ({results['machine']['cpu_model']}; "
        f"TensorFlow {results['machine']['tensorflow']}, "
        f"Keras {results['machine']['keras']}); raw numbers in `results.json`.",
        "",
        f"Task: {config['train_images']} training and {config['val_images']} "
        f"held-out {config['image_size']}x{config['image_size']} "
        "cluttered digits (`examples.training.cluttered`, "
        f"dataset seed {config['data_seed']}, "
        f"{config['clutter']} fragments of other digits each). "
        f"Recipe, the same for every variant: batch {config['batch_size']}, "
        f"{config['epochs']} epochs, "
        f"lr {config['learning_rate']:g} ({config['recipe']}), "
        f"weight decay {config['weight_decay']:g}. "
        f"Seeds {seeds}: with the same seed every variant starts from the same "
        "weights and sees the same batches. "
        "*SGE-ResNet-18, gamma frozen at 0*: every gate is sigmoid(beta), "
        "a learned scale per group with no spatial term.",
        "",
        "## Accuracy on the held-out images",
        "",
        "| variant | mean ± std over seeds (%) | min-max (%) | per seed (%) |",
        "|---|---|---|---|",
    ]
    for variant in VARIANTS:
        if variant in acc:
            s = acc[variant]
            per_seed = ", ".join(f"{v * 100:.2f}" for v in s["values"])
            lines.append(
                f"| {VARIANT_NAMES[variant]} | {_pm(s, 2, scale=100)} "
                f"| {s['min'] * 100:.2f}-{s['max'] * 100:.2f} | {per_seed} |"
            )
    if summary["differences"]:
        lines += [
            "",
            "Paired by seed (same initial weights, same batches):",
            "",
        ]
    for key, d in summary["differences"].items():
        first, second = key.split("-")
        if d["ci95"] is None:
            verdict = "one seed: no estimate of the noise"
        else:
            ci = (
                f"95% CI {d['ci95'][0] * 100:+.2f} to {d['ci95'][1] * 100:+.2f}"
            )
            verdict = f"{ci}: {'exceeds' if d['exceeds_noise'] else 'within'} seed-to-seed noise"
        lines.append(
            f"- {SHORT_NAMES[first]} minus {SHORT_NAMES[second]}: {d['mean'] * 100:+.2f} points "
            f"(std over seeds {d['std'] * 100:.2f}); {verdict}."
        )
    if "localisation" in summary:
        lines += _localisation_tables(summary, config)
    return _write(path, "\n".join(lines) + "\n")


def _localisation_tables(summary, config):
    trained, init = (
        summary["localisation"]["trained"],
        summary["localisation"]["init"],
    )
    params = summary["sge_parameters"]
    lines = [
        "",
        "## Where the gates point",
        "",
        f"SGE-ResNet-18, the first {config['inspect_images']} held-out images, "
        "mean ± std over the seeds; *init*: the same networks before training. "
        "Each input pixel takes the gate of the cell centred nearest to it "
        "(`examples.study.localisation`). *Gate ratio*: mean gate on the digit's box "
        "/ off it (1: no preference); *vs clutter*: on the box / on the clutter "
        "fragments; *AUC*: the gate as a digit-vs-rest pixel detector, per image "
        "and group (0.5: no preference); *spread*: the gate's standard deviation "
        "over the positions of a map, mean over images and groups (0: a flat "
        "gate). At initialisation gamma = 0 and every gate is sigmoid(1) = 0.731.",
        "",
        "| layer | map | gate ratio, trained | init | vs clutter, trained "
        "| AUC, trained | init | spread, trained | init "
        "| mean gate | mean \\|gamma\\| | mean beta |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layer, t in trained.items():
        shape = "x".join(str(v) for v in t["map_shape"])
        lines.append(
            f"| {layer} | {shape} | {_pm(t['gate_ratio'], 5)} "
            f"| {init[layer]['gate_ratio']['mean']:.5f} | "
            f"{_pm(t['gate_ratio_vs_clutter'], 5)} | {_pm(t['gate_auc'])} "
            f"| {init[layer]['gate_auc']['mean']:.3f} | "
            f"{_pm(t['gate_spread'], 5)} "
            f"| {init[layer]['gate_spread']['mean']:.5f} | {_pm(t['gate_mean'])} | "
            f"{_pm(params[layer]['gamma_abs_mean'], 4)} | {_pm(params[layer]['beta_mean'])} |"
        )
    lines += [
        "",
        "## Feature norms on the digit vs off it, before and after SGE",
        "",
        "The mean per-group feature norm on the digit's box / off it (and / on "
        "the clutter), trained network, mean ± std over the seeds; SGE enhances "
        "the digit where *after* exceeds *before*. At initialisation SGE scales "
        "every position by the same sigmoid(1), so after = before there.",
        "",
        "| layer | digit/off, before SGE | after SGE | init (before = after) "
        "| digit/clutter, before SGE | after SGE |",
        "|---|---|---|---|---|---|",
    ]
    for layer, t in trained.items():
        lines.append(
            f"| {layer} | {_pm(t['norm_ratio_before'], 4)} "
            f"| {_pm(t['norm_ratio_after'], 4)} "
            f"| {_pm(init[layer]['norm_ratio_before'], 4)} | "
            f"{_pm(t['norm_ratio_before_vs_clutter'], 4)} "
            f"| {_pm(t['norm_ratio_after_vs_clutter'], 4)} |"
        )
    return lines


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _panel(axes, image, box, title):
    axes.imshow(image, cmap="gray", vmin=0, vmax=255)
    common.outline_box(axes, box, "lime", linewidth=1.2)
    axes.set_xlim(-0.5, image.shape[1] - 0.5)
    axes.set_ylim(image.shape[0] - 0.5, -0.5)
    axes.set_title(title, fontsize=7)
    axes.set_xticks([])
    axes.set_yticks([])


def draw_gate_maps(model, split, figure_layers, path):
    """For the first held-out images: the input, the mean gate of the last SGE
    layer of stages conv2-conv4, and the feature norms before and after SGE
    at `figure_layers`."""
    from keras_sge import inspect
    from keras_sge.applications import preprocess_input

    # conv5 is left out: at 32x32 its map is 1x1, one gate per group.
    stages = [f"conv{stage}_block2_sge" for stage in range(2, 5)]
    images = split.images[:FIGURE_IMAGES]
    maps = inspect.inspect_sge(
        model,
        preprocess_input(images),
        layers=list(dict.fromkeys(stages + figure_layers)),
    )
    columns = 1 + len(stages) + 2 * len(figure_layers)
    figure = common.figure((1.45 * columns, 1.5 * len(images) + 0.5))
    grid = figure.subplots(len(images), columns, squeeze=False)
    for row, image in enumerate(images[..., 0]):
        box = split.boxes[row]
        _panel(grid[row, 0], image, box, f"input, label {split.labels[row]}")
        for column, name in enumerate(stages, start=1):
            gate = maps[name].gate[row].mean(-1)
            _panel(
                grid[row, column],
                image,
                box,
                f"{name.split('_')[0]} gate\n{gate.min():.2f}-{gate.max():.2f}",
            )
            _overlay(grid[row, column], gate, name, vmax=1.0)
        column = 1 + len(stages)
        for name in figure_layers:
            # L2 over all the layer's channels: sqrt of the sum over groups.
            before = np.sqrt((maps[name].norm_before[row] ** 2).sum(-1))
            after = np.sqrt((maps[name].norm_after[row] ** 2).sum(-1))
            scale = float(before.max()) or 1.0
            for values, label in (
                (before, "norm before"),
                (after, "norm after"),
            ):
                _panel(
                    grid[row, column],
                    image,
                    box,
                    f"{name.split('_')[0]} {label}\nmax {values.max():.3g}",
                )
                _overlay(grid[row, column], values, name, vmax=scale)
                column += 1
    figure.suptitle(
        "Trained SGE-ResNet-18, held-out cluttered digits (green: the digit's "
        "box). Gate: mean over the groups, colour scale 0-1;\n"
        "feature norm: L2 over all channels, before and after SGE on one colour "
        "scale per layer and row",
        fontsize=8,
    )
    return _save(figure, path)


def _overlay(axes, values, layer_name, vmax):
    """A map over the image, each pixel in the colour of its cell."""
    stride, size = (
        stage_stride(layer_name),
        axes.get_images()[0].get_array().shape[0],
    )
    rows, cols = (
        localisation.cell_edges(size, cells, stride) for cells in values.shape
    )
    axes.pcolormesh(
        cols, rows, values, cmap="jet", alpha=0.55, vmin=0, vmax=vmax
    )


def draw_summary(results, path):
    """Accuracy per seed; per layer, the gate ratio and the norm ratios."""
    runs, summary = results["runs"], results["summary"]
    figure = common.figure((13.5, 3.6))
    acc_axes, gate_axes, norm_axes = figure.subplots(
        1, 3, width_ratios=(1.3, 2.2, 2.2)
    )
    trained = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    for x, variant in enumerate(trained):
        values = [r["accuracy"] * 100 for r in runs if r["variant"] == variant]
        acc_axes.plot([x] * len(values), values, "o", alpha=0.6)
        acc_axes.errorbar(
            x + 0.2,
            np.mean(values),
            yerr=np.std(values, ddof=1) if len(values) > 1 else 0,
            fmt="k_",
            capsize=4,
        )
    acc_axes.set_xticks(
        range(len(trained)),
        [SHORT_NAMES[v].replace(", ", ",\n") for v in trained],
        fontsize=8,
    )
    acc_axes.set_xlim(-0.5, len(trained) - 0.5)
    acc_axes.set_ylabel("held-out accuracy (%)")
    acc_axes.set_title("accuracy, one dot per seed", fontsize=9)
    if "localisation" in summary:
        trained = summary["localisation"]["trained"]
        layers = list(trained)
        x = np.arange(len(layers))
        for values in zip(
            *[trained[layer]["gate_ratio"]["values"] for layer in layers]
        ):
            gate_axes.plot(x, values, "o", color="tab:blue", alpha=0.5)
        gate_axes.plot(
            x,
            [trained[layer]["gate_ratio"]["mean"] for layer in layers],
            "_",
            color="k",
            markersize=14,
            label="trained, mean",
        )
        gate_axes.axhline(
            1.0,
            color="gray",
            linestyle="--",
            label="initialisation (measured: 1)",
        )
        gate_axes.set_ylabel("mean gate on digit / off digit")
        gate_axes.set_title(
            "where the gates point, one dot per seed", fontsize=9
        )
        gate_axes.legend(fontsize=7)
        for offset, (key, label) in zip(
            (-0.12, 0.12),
            (
                ("norm_ratio_before", "before SGE"),
                ("norm_ratio_after", "after SGE"),
            ),
        ):
            means = [trained[layer][key]["mean"] for layer in layers]
            stds = [trained[layer][key]["std"] for layer in layers]
            norm_axes.errorbar(
                x + offset, means, yerr=stds, fmt="o", capsize=3, label=label
            )
        norm_axes.axhline(1.0, color="gray", linestyle="--")
        norm_axes.set_ylabel("feature norm on digit / off digit")
        norm_axes.set_title(
            "feature norms, trained, mean ± std over seeds", fontsize=9
        )
        norm_axes.legend(fontsize=7)
        for axes in (gate_axes, norm_axes):
            axes.set_xticks(
                x,
                [
                    layer.replace("_sge", "").replace("_block", "\nblock")
                    for layer in layers
                ],
                fontsize=7,
            )
    return _save(figure, path)


def _save(figure, path):
    figure.savefig(path, dpi=80)
    return path
