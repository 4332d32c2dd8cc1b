"""`python -m examples.study.run --tiny`: end to end in seconds, writing its JSON."""

import json
import os

import pytest

from examples.study import run

pytestmark = pytest.mark.tensorflow_only

TINY = ["--tiny", "--epochs", "1", "--seeds", "1", "--arms", "A,C", "--no-jit"]


@pytest.mark.timeout(120)
def test_a_tiny_study_writes_runs_results_and_report(tmp_path):
    out = str(tmp_path / "study")
    assert run.main(TINY + ["--out", out]) == 0
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    assert results["complete"] and results["wall_seconds"] > 0
    config, machine = results["config"], results["machine"]
    assert config["arms"] == ["A", "C"] and config["seeds"] == [0]
    assert config["epochs"] == 1 and config["train_images"] == 64
    assert machine["cpu_count"] == os.cpu_count() and machine["tensorflow"]
    assert [(r["arm"], r["seed"]) for r in results["runs"]] == [
        ("A", 0),
        ("C", 0),
    ]
    sge, plain = results["runs"]
    # Per epoch (0 = init): loss, accuracies and every SGE layer's gamma.
    assert [h["epoch"] for h in sge["history"]] == [0, 1]
    assert set(sge["history"][1]) >= {"loss", "accuracy", "val_accuracy", "sge"}
    assert (
        len(sge["history"][1]["sge"]) == 6 and plain["history"][1]["sge"] == {}
    )
    # Gate measures at init and trained, per layer and group.
    for stage in ("measures_init", "measures"):
        assert len(sge[stage]) == 6
        layer = sge[stage]["conv2_block1_sge"]
        assert len(layer["per_group"]["gamma"]) == 4
        assert len(layer["per_group"]["folded_auc_vs_clutter"]) == 4
        assert layer["summary"]["images"] == 16
    init = sge["measures_init"]["conv2_block1_sge"]["summary"]
    assert init["weighted_vs_clutter"] == 0.5  # gamma = 0 at init
    assert init["norm_enhancement_vs_clutter"] == pytest.approx(1.0)
    assert set(sge["knockouts"]) == {"gate_mean", "gamma_zero"}
    assert "measures" not in plain and "knockouts" not in plain
    # The rule was applied, and the accuracy compared by seed.
    summary = results["summary"]
    assert summary["arms"]["A"]["verdict"] in (
        "CONFIRMED",
        "SELECTIVE BUT UNUSED",
        "REFUTED",
        "OPEN",
    )
    assert summary["comparisons"]["A-C"]["seeds"] == [0]
    assert summary["seeds_needed"]["first_study"]["sge-plain"]["seeds"] == 25
    for name in (
        "RESULTS.md",
        "summary.png",
        "gate_maps_A_seed0.png",
        "runs/A_seed0.json",
        "runs/C_seed0.json",
    ):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with open(os.path.join(out, "RESULTS.md"), encoding="utf-8") as f:
        text = f.read()
    assert "Arm A (SGE, weight decay on everything): **" in text
    # A rerun finds both runs done and keeps them; other settings are refused.
    assert run.main(TINY + ["--out", out]) == 0
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        again = json.load(f)
    assert again["runs"][0]["finished"] == sge["finished"]
    # Both calls are recorded; the wall time is their sum.
    assert len(again["invocations"]) == 2
    assert again["wall_seconds"] == pytest.approx(
        sum(i["seconds"] for i in again["invocations"])
    )
    assert again["started"] == results["started"]
    with pytest.raises(SystemExit, match="other settings"):
        run.main(TINY + ["--out", out, "--peak-lr", "0.05"])
