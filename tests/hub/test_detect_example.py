"""examples/detect.py: its evaluation, and a run end to end as a user runs it."""

import importlib.util
import json
import os

import pytest

pytest.importorskip("keras_hub")
pytest.importorskip("sklearn")

import numpy as np  # noqa: E402

from tests.harness import REPO_ROOT  # noqa: E402

DETECT_PY = os.path.join(REPO_ROOT, "examples", "detect.py")


def import_detect_script():
    spec = importlib.util.spec_from_file_location("detect", DETECT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluation_counts_boxes_and_classes():
    detect = import_detect_script()
    true_boxes = np.array(
        [[[0, 0, 10, 10]], [[0, 0, 10, 10]], [[5, 5, 15, 15]]], "float32"
    )
    true_labels = np.array([[1], [2], [1]])
    # Image 0: exact, right class; 1: exact, wrong class; 2: a third, a miss.
    detections = {
        "boxes": np.array(
            [
                [[0, 0, 10, 10], [0] * 4],
                [[0, 0, 10, 10], [0] * 4],
                [[5, 10, 15, 20], [50] * 4],
            ],
            "float32",
        ),
        "confidence": np.array([[0.9, -1], [0.8, -1], [0.7, 0.6]], "float32"),
        "labels": np.array([[1, -1], [0, -1], [1, 1]]),
        "num_detections": np.array([1, 1, 2]),
    }
    metrics = detect.evaluate(
        detections, true_boxes, true_labels, num_classes=3
    )
    # Class 1: one hit of two true boxes (AP 0.5); class 2: none (AP 0).
    assert metrics["ap50"] == metrics["ap75"] == 0.25
    np.testing.assert_allclose(metrics["top1_mean_iou"], (1 + 1 + 1 / 3) / 3)
    assert (
        metrics["top1_localised"],
        metrics["top1_correct"],
        metrics["images"],
    ) == (2 / 3, 1 / 3, 3)


def test_data_has_one_box_per_image_and_one_or_ten_classes():
    detect = import_detect_script()
    for classes, names in (("one", 1), ("digits", 10)):
        train, val, class_names = detect.make_data(32, 20, 10, 0, classes)
        (images, targets), (val_images, _) = train, val
        assert images.shape == (20, 32, 32, 3) and val_images.shape[0] == 10
        assert targets["boxes"].shape == (20, 1, 4)
        assert len(class_names) == names
        assert set(np.unique(targets["labels"])) <= set(range(names))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_detect_example_trains_evaluates_and_writes_a_preset(tmp_path, capsys):
    # In this process, through the script's own entry point: a subprocess
    # would only add the cost of importing TensorFlow and KerasHub again.
    detect = import_detect_script()
    tiny = "--epochs 1 --train-images 8 --val-images 8 --batch-size 8 --seed 3"
    output_dir = tmp_path / "run"
    detect.main([*tiny.split(), "--output-dir", str(output_dir)])
    assert "Held-out: AP50" in capsys.readouterr().out
    with open(output_dir / "metrics.json") as file:
        metrics = json.load(file)
    assert metrics["images"] == 8
    for key in (
        "ap50",
        "ap75",
        "top1_mean_iou",
        "top1_localised",
        "top1_correct",
    ):
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])
    with open(output_dir / "preset" / "config.json") as file:
        encoder = json.load(file)["config"]["image_encoder"]
    assert encoder["registered_name"] == "keras_sge>SGEResNetBackbone"
