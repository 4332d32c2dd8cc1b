"""RESULTS.md and the figures of the study, from its results."""

import os

import numpy as np

from examples.study import common
from examples.study import decision
from examples.study import localisation

FIGURE_LAYERS = ("conv2_block2_sge", "conv3_block2_sge", "conv4_block2_sge")
TRAJECTORY_EPOCHS = (0, 1, 2, 3, 5, 7, 10, 13, 16, 18)


def _pm(s, digits=3, scale=1.0):
    if s["sd"] is None:
        return f"{s['mean'] * scale:.{digits}f}"
    return f"{s['mean'] * scale:.{digits}f} ± {s['sd'] * scale:.{digits}f}"


def _ci(ci, digits=2):
    return f"[{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def network_gamma_trajectory(record):
    """Mean |gamma| over all groups of the network, per epoch (0 = init)."""
    layers = record["measures"]
    groups = {name: len(m["per_group"]["gamma"]) for name, m in layers.items()}
    total = sum(groups.values())
    return [
        sum(
            entry["sge"][name]["gamma_abs_mean"] * count
            for name, count in groups.items()
        )
        / total
        for entry in record["history"]
    ]


def write_markdown(results, path):
    config, summary, runs = (
        results["config"],
        results["summary"],
        results["runs"],
    )
    m = results["machine"]
    lines = [
        "# SGE's gates on cluttered digits, second study: results",
        "",
        f"Made by {_commands(results)} in {results['wall_seconds'] / 60:.1f} "
        f"minutes on {m['cpu_count']} CPU cores ({m['cpu_model']}; TensorFlow "
        f"{m['tensorflow']}, Keras {m['keras']}, NumPy {m['numpy']}); "
        f"complete: {results['complete']}. Design (fixed before the run): "
        "[../DESIGN.md](../DESIGN.md). Raw numbers: `results.json` "
        "(per-group values, per-epoch history) and `runs/`.",
        "",
        f"Task: {config['train_images']} training and {config['val_images']} "
        f"held-out {config['image_size']}x{config['image_size']} cluttered "
        f"digits ({config['clutter']} fragments, dataset seed "
        f"{config['data_seed']}); gate measures on the first "
        f"{config['inspect_images']} held-out images. Recipe: batch "
        f"{config['batch_size']}, {config['epochs']} epochs "
        f"({config['steps_per_epoch']} steps each), peak lr "
        f"{config['peak_lr']:g}, {config['warmup_epochs']}-epoch warm-up then "
        f"cosine, weight decay {config['weight_decay']:g} ({config['recipe']}). "
        f"Seeds: {', '.join(map(str, config['seeds']))}.",
        "",
        "## The decision rule applied",
        "",
    ]
    arms = summary["arms"]
    for arm, name in (
        ("A", "SGE, weight decay on everything"),
        ("B", "SGE, no decay on gamma/beta"),
    ):
        if arm in arms:
            lines.append(f"- Arm {arm} ({name}): **{arms[arm]['verdict']}**")
    lines += [
        "",
        "Per seed (rule in DESIGN.md): *median |gamma|* over all 56 groups; "
        "*growth*: mean |gamma| at the end over that at the end of epoch "
        "*mid* (cosine half done), minus 1 (plateaued below 0.20); *W*: "
        "|gamma|-weighted folded AUC (sign(gamma) x c_hat), digit vs clutter, "
        "all groups; *W0*: the same with boxes permuted across images; "
        "*share >0.6 / <0.4*: of the |gamma| mass; *E*: geometric mean over "
        "layers of the digit/clutter norm ratio after SGE over before; "
        "*K*: accuracy drop (points) with every gate replaced by its spatial "
        "mean, 95% interval over the held-out images; *gamma->0*: the drop "
        "with every gamma set to 0.",
        "",
        "| arm | seed | median \\|gamma\\| | mean \\|gamma\\| | growth (mid) "
        "| W | W0 | W - W0 | share >0.6 / <0.4 | W vs background (W0) | E "
        "| K (95% CI) | gamma->0 (95% CI) | seed is | failed criteria |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        for seed, ind in arms[arm]["indicators"].items():
            verdict = arms[arm]["seed_verdicts"][seed]
            failed = ", ".join(verdict["failed"]) or "none"
            status = _seed_status(verdict)
            lines.append(
                f"| {arm} | {seed} | {ind['gamma_median']:.3f} "
                f"| {ind['gamma_abs_mean']:.3f} "
                f"| {ind['gamma_growth']:+.2f} (ep {ind['midpoint_epoch']}) "
                f"| {ind['W']:.3f} | {ind['W0']:.3f} "
                f"| {ind['W'] - ind['W0']:+.3f} "
                f"| {ind['share_high']:.2f} / {ind['share_low']:.2f} "
                f"| {ind['W_background']:.3f} ({ind['W0_background']:.3f}) "
                f"| {ind['E']:.4f} "
                f"| {ind['K_points']:+.2f} {_ci(ind['K_ci95_points'])} "
                f"| {ind['gamma_zero_points']:+.2f} "
                f"{_ci(ind['gamma_zero_ci95_points'])} | {status} | {failed} |"
            )
    lines += _trajectory_table(runs)
    for arm in arms:
        lines += _layer_tables(arm, arms[arm]["layers"])
    lines += _accuracy_tables(summary)
    figures = sorted(
        f
        for f in os.listdir(os.path.dirname(path) or ".")
        if f.endswith(".png")
    )
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"- `{f}`" for f in figures]
        lines += [
            "",
            "`gate_maps_*`: the first held-out images of the arm's first seed; "
            "per layer (last block of each stage), the group with the largest "
            "|gamma|: its gate on a diverging scale centred on that group's mean "
            "gate over the images shown, and sign(gamma) x c_hat centred on 0; "
            "green: the digit's box, white: the clutter's boxes.",
        ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _seed_status(verdict):
    """The seed's standing under the rule, in words."""
    if verdict["against"]:
        return "against"
    use = (
        "used"
        if verdict["used"]
        else "unused"
        if verdict["unused"]
        else "use unclear"
    )
    return f"{'selective' if verdict['selective'] else 'not selective'}, {use}"


def _commands(results):
    invocations = results.get("invocations") or [
        {"command": results["config"]["command"]}
    ]
    if len(invocations) == 1:
        return f"`{invocations[0]['command']}`"
    return (
        "; then, resuming, ".join(
            f"`{i['command']}` ({i['seconds'] / 60:.1f} min)"
            for i in invocations
        )
        + ","
    )


def _trajectory_table(runs):
    sge_runs = [r for r in runs if r["arm"] in decision.SGE_ARMS]
    if not sge_runs:
        return []
    lines = [
        "",
        "## Mean |gamma| over the network's groups, per epoch",
        "",
        "Epoch 0: initialisation (gamma = 0). Mean over the seeds (min-max).",
        "",
        "| epoch | " + " | ".join(f"arm {a}" for a in decision.SGE_ARMS) + " |",
        "|---|" + "---|" * len(decision.SGE_ARMS),
    ]
    curves = {
        arm: [network_gamma_trajectory(r) for r in sge_runs if r["arm"] == arm]
        for arm in decision.SGE_ARMS
    }
    length = max(len(c) for cs in curves.values() for c in cs)
    for epoch in [e for e in TRAJECTORY_EPOCHS if e < length] + (
        [length - 1] if length - 1 not in TRAJECTORY_EPOCHS else []
    ):
        cells = []
        for arm in decision.SGE_ARMS:
            values = [c[epoch] for c in curves[arm] if epoch < len(c)]
            cells.append(
                f"{np.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"
                if values
                else "-"
            )
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return lines


def _layer_tables(arm, table):
    trained, init = table["measures"], table["measures_init"]
    lines = [
        "",
        f"## Arm {arm}, per SGE layer (trained; mean ± SD over the seeds)",
        "",
        "*W_l*: |gamma|-weighted folded AUC vs clutter in the layer (W0_l: "
        "null); *c_hat AUC*: the normalised similarity map's own AUC, plain "
        "mean over the layer's groups (not folded, not weighted); *init*: "
        "the same network before training; *norm ratio before*: digit/"
        "clutter feature-norm ratio at SGE's input; *E_l*: that ratio after "
        "SGE over before.",
        "",
        "| layer | map | mean \\|gamma\\| | median \\|gamma\\| | mean beta "
        "| gate spread | W_l | W0_l | c_hat AUC vs clutter (null; init) "
        "| c_hat AUC vs background (null; init) | norm ratio before "
        "| E_l vs clutter | E_l vs background |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layer, t in trained.items():
        i = init[layer]
        shape = "x".join(map(str, t["map_shape"]))
        lines.append(
            f"| {layer} | {shape} | {_pm(t['gamma_abs_mean'])} "
            f"| {_pm(t['gamma_abs_median'])} | {_pm(t['beta_mean'])} "
            f"| {_pm(t['gate_spread'], 4)} "
            f"| {_pm(t['weighted_vs_clutter'])} "
            f"| {_pm(t['null_weighted_vs_clutter'])} "
            f"| {_pm(t['chat_auc_mean_vs_clutter'])} "
            f"({t['null_chat_auc_mean_vs_clutter']['mean']:.3f}; "
            f"{i['chat_auc_mean_vs_clutter']['mean']:.3f}) "
            f"| {_pm(t['chat_auc_mean_vs_background'])} "
            f"({t['null_chat_auc_mean_vs_background']['mean']:.3f}; "
            f"{i['chat_auc_mean_vs_background']['mean']:.3f}) "
            f"| {_pm(t['norm_ratio_before_vs_clutter'])} "
            f"| {_pm(t['norm_enhancement_vs_clutter'], 4)} "
            f"| {_pm(t['norm_enhancement_vs_background'], 4)} |"
        )
    return lines


def _accuracy_tables(summary):
    from examples.study import network

    lines = [
        "",
        "## Held-out accuracy (secondary)",
        "",
        "| arm | mean ± SD over seeds (%) | per seed (%) |",
        "|---|---|---|",
    ]
    for arm, s in sorted(summary["accuracy"].items()):
        per_seed = ", ".join(f"{v:.2f}" for v in s["values"])
        lines.append(
            f"| {arm}: {network.ARM_NAMES[arm]} | {_pm(s, 2)} | {per_seed} |"
        )
    if summary["comparisons"]:
        lines += [
            "",
            "Paired by seed (same initial convolution weights, same batches); "
            "points, mean, SD over seeds, 95% t interval:",
            "",
            "| difference | mean | SD | 95% CI | per seed |",
            "|---|---|---|---|---|",
        ]
        for key, c in summary["comparisons"].items():
            sd = "-" if c["sd"] is None else f"{c['sd']:.2f}"
            ci = "-" if c["ci95"] is None else _ci(c["ci95"])
            per_seed = ", ".join(f"{v:+.2f}" for v in c["values"])
            lines.append(
                f"| {key.replace('-', ' - ')} | {c['mean']:+.2f} | {sd} | {ci} "
                f"| {per_seed} |"
            )
    needed = summary["seeds_needed"]
    lines += [
        "",
        f"Seeds a paired t-test needs to detect +{needed['effect_points']} "
        f"points (the paper's ImageNet gain) with power {needed['power']} at "
        f"two-sided alpha {needed['alpha']}: "
        + "; ".join(
            f"{k} SD {v['sd']:.2f} -> "
            + (str(v["seeds"]) if v["seeds"] else "no estimate")
            for group in ("first_study", "this_study")
            for k, v in needed[group].items()
        )
        + " (first study's SDs: sge-plain, flat-plain, sge-flat; this "
        "study's from its own paired differences, over only "
        f"{_seed_counts(summary)} seeds). Every arm's accuracy is within "
        f"{100 - _lowest_accuracy(summary):.2f} points of 100%, so an "
        "effect of the paper's size cannot occur on this task.",
    ]
    return lines


def _seed_counts(summary):
    counts = sorted({c["n"] for c in summary["comparisons"].values()})
    return "-".join(map(str, counts[:1] + counts[1:][-1:])) or "0"


def _lowest_accuracy(summary):
    return min(s["min"] for s in summary["accuracy"].values())


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def _boxes(axes, box, clutter_boxes):
    common.outline_box(axes, box, "lime", linewidth=1.4)
    for clutter_box in clutter_boxes:
        common.outline_box(axes, clutter_box, "white", linewidth=0.6)


def _map_panel(axes, values, stride, size, centre, title, image=None):
    from matplotlib.colors import TwoSlopeNorm

    half = float(np.max(np.abs(values - centre))) or 1e-6
    if image is not None:
        axes.imshow(image, cmap="gray", vmin=0, vmax=255)
    rows, cols = (
        localisation.cell_edges(size, c, stride) for c in values.shape
    )
    mesh = axes.pcolormesh(
        cols,
        rows,
        values,
        cmap="RdBu_r",
        norm=TwoSlopeNorm(centre, centre - half, centre + half),
        alpha=1.0 if image is None else 0.7,
    )
    axes.set_xlim(-0.5, size - 0.5)
    axes.set_ylim(size - 0.5, -0.5)
    axes.set_title(title, fontsize=6)
    axes.set_xticks([])
    axes.set_yticks([])
    return mesh


def draw_gate_maps(model, images, split, path, arm):
    """Gate and sign(gamma) x c_hat maps of the top-|gamma| group per layer.

    Args:
        model: the trained SGE network.
        images: its prepared inputs for the first held-out images.
        split: the held-out split (raw images, boxes, labels).
        path: the PNG to write.
        arm: for the title.

    Returns:
        A JSON-ready description of what was drawn.
    """
    from examples.study import measures
    from examples.study import network
    from keras_sge import inspect

    count = len(images)
    layers = [
        layer
        for layer in network.sge_layers(model)
        if layer.name in FIGURE_LAYERS
    ]
    maps = inspect.inspect_sge(
        model, images, layers=[layer.name for layer in layers]
    )
    size = images.shape[1]
    figure = common.figure((1.3 * (1 + 2 * len(layers)), 1.4 * count + 0.6))
    grid = figure.subplots(count, 1 + 2 * len(layers), squeeze=False)
    drawn = {"path": os.path.basename(path), "layers": {}}
    for column, layer in enumerate(layers):
        gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
        group = int(np.argmax(np.abs(gamma)))
        gate = maps[layer.name].gate[..., group]
        chat = measures.c_hat(maps[layer.name].inputs, layer.groups)[..., group]
        centre = float(gate.mean())
        stride = network.layer_stride(layer.name)
        drawn["layers"][layer.name] = {
            "group": group,
            "gamma": float(gamma[group]),
            "beta": float(beta[group]),
            "mean_gate": centre,
        }
        short = layer.name.replace("_sge", "")
        for row in range(count):
            _map_panel(
                grid[row, 1 + 2 * column],
                gate[row],
                stride,
                size,
                centre,
                f"{short} g{group} gate\n{gate[row].min():.3f}-{gate[row].max():.3f}",
            )
            _map_panel(
                grid[row, 2 + 2 * column],
                np.sign(gamma[group]) * chat[row],
                stride,
                size,
                0.0,
                f"{short} g{group} sign(γ)·ĉ\nγ={gamma[group]:+.3f}",
            )
    for row in range(count):
        axes = grid[row, 0]
        axes.imshow(split.images[row, ..., 0], cmap="gray", vmin=0, vmax=255)
        axes.set_title(f"input, label {split.labels[row]}", fontsize=6)
        axes.set_xticks([])
        axes.set_yticks([])
        for c in range(grid.shape[1]):
            _boxes(grid[row, c], split.boxes[row], split.clutter_boxes[row])
    figure.suptitle(
        f"Arm {arm}, trained: per layer the group with the largest |gamma|. "
        "Gate: red above, blue below the group's mean gate;\n"
        "sign(γ)·ĉ: red where the gate is raised. Green: digit box; white: clutter",
        fontsize=7,
    )
    figure.savefig(path, dpi=90)
    return drawn


def draw_summary(results, path):
    """|gamma| per epoch (SGE arms, one line per seed), W vs W0, accuracy."""
    runs, summary = results["runs"], results["summary"]
    figure = common.figure((12, 3.4))
    gamma_axes, w_axes, acc_axes = figure.subplots(1, 3)
    colours = {
        "A": "tab:blue",
        "B": "tab:orange",
        "C": "tab:green",
        "D": "tab:red",
    }
    for record in runs:
        if record["arm"] in decision.SGE_ARMS:
            curve = network_gamma_trajectory(record)
            gamma_axes.plot(
                range(len(curve)),
                curve,
                color=colours[record["arm"]],
                alpha=0.7,
                label=f"{record['arm']} seed {record['seed']}",
            )
    gamma_axes.set_xlabel("epoch")
    gamma_axes.set_ylabel("mean |gamma|, all groups")
    gamma_axes.legend(fontsize=6)
    gamma_axes.set_title("gamma's growth", fontsize=9)
    for x, arm in enumerate(
        a for a in decision.SGE_ARMS if a in summary["arms"]
    ):
        for ind in summary["arms"][arm]["indicators"].values():
            w_axes.plot([x - 0.1], [ind["W"]], "o", color=colours[arm])
            w_axes.plot([x + 0.1], [ind["W0"]], "x", color="gray")
    w_axes.axhline(0.5, color="gray", linestyle="--")
    w_axes.axhline(decision.W_CONFIRM, color="k", linestyle=":")
    w_axes.set_xticks(range(len(summary["arms"])), list(summary["arms"]))
    w_axes.set_ylabel("W (o) and null W0 (x)")
    w_axes.set_title("|gamma|-weighted folded AUC vs clutter", fontsize=9)
    for x, (arm, s) in enumerate(sorted(summary["accuracy"].items())):
        acc_axes.plot(
            [x] * len(s["values"]), s["values"], "o", color=colours[arm]
        )
    acc_axes.set_xticks(
        range(len(summary["accuracy"])), sorted(summary["accuracy"])
    )
    acc_axes.set_ylabel("held-out accuracy (%)")
    acc_axes.set_title("accuracy, one dot per seed", fontsize=9)
    figure.savefig(path, dpi=80)
    return path
