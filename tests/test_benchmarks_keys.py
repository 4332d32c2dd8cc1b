"""benchmarks/report.py finds the saved results by stable id, not by label.

No timing: the results saved in benchmarks/results/ are read back, with
ids derived from their labels for files saved before ids existed.
"""

import json

import pytest

from benchmarks import ids
from benchmarks import report

RESULTS = report.HERE / "results"


@pytest.fixture(scope="module")
def runs():
    runs = report.load(RESULTS)
    assert {run["benchmark"] for run in runs} == {"layer", "resnet"}
    return runs


def test_every_saved_result_has_a_known_id(runs):
    known = {
        "layer": set(ids.LAYER_VARIANTS)
        | set(ids.LEGACY_LABELS["layer"].values()),
        "resnet": set(ids.RESNET_VARIANTS)
        | set(ids.LEGACY_LABELS["resnet"].values()),
    }
    for run in runs:
        for entry in run["results"].values():
            parts = (
                entry["id"].split("/") if "ratio" in entry else [entry["id"]]
            )
            assert set(parts) <= known[run["benchmark"]], (run["_file"], entry)


def test_the_ids_report_asks_for_are_the_benchmarks_ids():
    assert "sge" in ids.LAYER_VARIANTS
    assert ids.LAYER_BASELINE in ids.LAYER_VARIANTS
    for ratio in (report.SGE_VS_RESNET, report.SGE_VS_TORCH):
        assert set(ratio.split("/")) <= set(ids.RESNET_VARIANTS)


def test_every_speed_target_is_found_in_the_saved_results(runs):
    targets = report.targets(runs)
    assert len(targets) == 6
    for target in targets:
        assert target["summary"] is not None, target["label"]
        assert target["source"] != "-", target["label"]


def test_renamed_labels_change_no_target(tmp_path):
    # Every display label reworded: the targets are found as before.
    for run in report.load(RESULTS):
        for entry in run["results"].values():
            for field in ("variant", "ratio"):
                if field in entry:
                    entry[field] = f"renamed {entry[field]}"
        (tmp_path / run["_file"]).write_text(json.dumps(run))
    before = report.targets(report.load(RESULTS))
    after = report.targets(report.load(tmp_path))
    assert after == before


def test_a_result_without_id_or_known_label_is_refused(tmp_path):
    run = {
        "benchmark": "layer",
        "results": {"eager|fwd|SGE v2": {"variant": "SGE v2"}},
    }
    (tmp_path / "layer_x.json").write_text(json.dumps(run))
    with pytest.raises(ValueError, match="SGE v2"):
        report.load(tmp_path)
