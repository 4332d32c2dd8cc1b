"""examples/ablation.py end to end in a tiny configuration, and its statistics."""

import importlib.util
import json
import os

import numpy as np
import pytest

from examples.study import ablation_summary
from tests.harness import REPO_ROOT
from tests.inspect.helpers import assert_png_not_blank

pytestmark = pytest.mark.tensorflow_only

ABLATION_PY = os.path.join(REPO_ROOT, "examples", "ablation.py")
TINY = [
    "--seeds", "1", "--epochs", "1", "--batch-size", "16", "--image-size", "32",
    "--train-images", "32", "--val-images", "24", "--inspect-images", "8",
    "--jobs", "1", "--verbose", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def ablation():
    """examples/ablation.py imported as a module."""
    spec = importlib.util.spec_from_file_location("ablation", ABLATION_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_tiny_study_writes_the_table_figures_and_raw_results(
    ablation, tmp_path
):
    out = str(tmp_path / "study")
    assert ablation.main(TINY + ["--out", out]) == 0
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    assert results["complete"] and results["wall_seconds"] > 0
    assert (
        results["machine"]["cpu_count"] == os.cpu_count()
        and results["machine"]["tensorflow"]
    )
    assert (
        results["config"]["seeds"] == 1
        and "examples/ablation.py" in results["config"]["command"]
    )
    assert [(r["variant"], r["seed"]) for r in results["runs"]] == [
        ("sge", 0),
        ("plain", 0),
        ("flat", 0),
    ]
    for run in results["runs"]:
        assert 0 <= run["accuracy"] <= 1 and run["train_seconds"] > 0
    sge = results["runs"][0]
    assert (
        len(sge["localisation"]) == len(sge["localisation_init"]) == 8
    )  # two SGE layers per stage
    for layer, measures in sge["localisation_init"].items():
        # At initialisation every gate is sigmoid(1): no preference, measured.
        assert measures["gate_ratio"] == pytest.approx(1.0, abs=1e-9), layer
        assert measures["gate_auc"] == pytest.approx(0.5, abs=1e-9), layer
        assert measures["gate_spread"] == 0.0, layer
        assert measures["norm_ratio_after"] == pytest.approx(
            measures["norm_ratio_before"], rel=1e-5
        ), layer
    for layer, parameters in results["runs"][2]["sge_parameters"].items():
        assert parameters["gamma_abs_mean"] == 0.0, (
            layer
        )  # frozen: the gate stays flat
    assert set(results["summary"]["accuracy"]) == {"sge", "plain", "flat"}
    assert set(results["summary"]["differences"]) == {
        "sge-plain",
        "flat-plain",
        "sge-flat",
    }
    assert (
        results["summary"]["differences"]["sge-plain"]["ci95"] is None
    )  # one seed: no noise estimate

    with open(os.path.join(out, "RESULTS.md"), encoding="utf-8") as f:
        table = f.read()
    for phrase in (
        "## Accuracy on the held-out images",
        "## Where the gates point",
        "conv3_block2_sge",
        "one seed",
    ):
        assert phrase in table
    for name in ("gate_maps.png", "localisation.png"):
        assert_png_not_blank(os.path.join(out, name))

    # --report writes the same table again from results.json alone.
    os.remove(os.path.join(out, "RESULTS.md"))
    os.remove(os.path.join(out, "localisation.png"))
    assert ablation.main(["--report", "--out", out]) == 0
    with open(os.path.join(out, "RESULTS.md"), encoding="utf-8") as f:
        assert f.read() == table
    assert_png_not_blank(os.path.join(out, "localisation.png"))


def test_paired_difference_tells_noise_from_an_effect():
    clear = ablation_summary.paired_difference(
        [0.90, 0.91, 0.92], [0.80, 0.80, 0.81]
    )
    assert (
        clear["mean"] == pytest.approx(0.1067, abs=1e-4)
        and clear["exceeds_noise"]
    )
    noisy = ablation_summary.paired_difference(
        [0.90, 0.80, 0.85], [0.85, 0.86, 0.83]
    )
    assert (
        noisy["ci95"][0] < 0 < noisy["ci95"][1] and not noisy["exceeds_noise"]
    )


def test_stage_strides_of_the_resnet_layers():
    assert [
        ablation_summary.stage_stride(f"conv{k}_block1_sge")
        for k in range(2, 6)
    ] == [4, 8, 16, 32]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0"], "--seeds must be positive. Received: 0"),
        (
            ["--inspect-images", "50", "--val-images", "40"],
            "--inspect-images 50 exceeds --val-images 40",
        ),
        (
            ["--figure-layers", "conv2_block2_sge,conv9_block1_sge"],
            "Received: 'conv9_block1_sge'",
        ),
        (["--variants", "sge,se"], "Received: 'se'"),
    ],
)
def test_bad_arguments_fail_in_one_line(ablation, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        ablation.parse_args(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("ablation.py: error:")
        and message in lines[0]
    )


def test_summary_spreads_over_seeds():
    assert ablation_summary.spread([1.0, 3.0]) == {
        "mean": 2.0,
        "std": pytest.approx(np.sqrt(2)),
        "min": 1.0,
        "max": 3.0,
        "values": [1.0, 3.0],
    }


def test_the_learning_rate_decays_over_the_steps_fit_runs(ablation):
    import keras

    # 40 images in batches of 16: `fit` runs 3 steps an epoch, the last
    # one a partial batch. The cosine decay reaches 0 after the run's last
    # step, not before it: every step trains with a learning rate above 0.
    # argparse keeps the last of a repeated option.
    args = ablation.parse_args(TINY + ["--train-images", "40", "--epochs", "2"])
    model = ablation.build_model("sge", 0, args)
    rates = []
    model.fit(
        np.zeros((40, 32, 32, 3), "float32"),
        keras.utils.to_categorical(np.arange(40) % 10, 10),
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        callbacks=[
            keras.callbacks.LambdaCallback(
                on_train_batch_begin=lambda batch, logs: rates.append(
                    float(model.optimizer.learning_rate)
                )
            )
        ],
    )
    assert len(rates) == 6 and min(rates) > 0, rates
    assert float(model.optimizer.learning_rate) == pytest.approx(0, abs=1e-9)
