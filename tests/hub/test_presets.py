"""KerasHub presets: offline round trips, official checkpoints, fine-tuning, the command."""

import json
import os

import pytest

pytest.importorskip("keras_hub")

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

from keras_sge import applications  # noqa: E402
from keras_sge.hub import SGEResNetBackbone  # noqa: E402
from keras_sge.hub import SGEResNetImageClassifier  # noqa: E402
from keras_sge.hub import convert_to_preset  # noqa: E402
from keras_sge.hub import preset_class_names  # noqa: E402
from tests import harness  # noqa: E402
from tests.applications import parity  # noqa: E402
from tests.hub import helpers  # noqa: E402


@pytest.fixture(scope="module")
def saved_preset(tmp_path_factory):
    """`(directory, raw images, logits)` of a classifier saved with `save_to_preset`."""
    classifier = helpers.classifier(seed=3)
    directory = tmp_path_factory.mktemp("presets") / "saved"
    classifier.save_to_preset(str(directory))
    images = helpers.raw_images(4)
    return directory, images, helpers.logits(classifier, images)


def test_preset_loads_in_a_fresh_process_with_equal_outputs(
    saved_preset, tmp_path
):
    directory, images, logits = saved_preset
    np.save(tmp_path / "images.npy", images)
    harness.run_in_fresh_process(
        f"""
        import keras_hub, numpy as np
        import keras_sge.hub  # registers the classes from_preset looks up
        from tests.hub import helpers
        classifier = keras_hub.models.ImageClassifier.from_preset({str(directory)!r})
        assert type(classifier).__name__ == "SGEResNetImageClassifier", type(classifier)
        images = np.load({str(tmp_path / "images.npy")!r})
        np.save({str(tmp_path / "logits.npy")!r}, helpers.logits(classifier, images))
        backbone = keras_hub.models.Backbone.from_preset({str(directory)!r})
        assert type(backbone).__name__ == "SGEResNetBackbone", type(backbone)
        for mine, theirs in zip(backbone.weights, classifier.backbone.weights):
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
        """
    )
    harness.assert_all_close(
        np.load(tmp_path / "logits.npy"), logits, rtol=1e-5, atol=1e-5
    )


def test_from_preset_with_num_classes_fine_tunes_a_new_head(saved_preset):
    directory, images, _ = saved_preset
    classifier = keras_hub.models.ImageClassifier.from_preset(
        str(directory), num_classes=3
    )
    assert isinstance(classifier, SGEResNetImageClassifier)
    assert classifier.output_dense.kernel.shape == (512, 3)
    # The backbone is the preset's; only the head is new.
    stored = keras_hub.models.Backbone.from_preset(str(directory))
    assert isinstance(stored, SGEResNetBackbone)
    for mine, theirs in zip(classifier.backbone.weights, stored.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs)
        )
    head = classifier.output_dense.get_weights()
    # KerasHub's default optimizer and loss, eagerly: tracing or compiling
    # would take most of this test's time.
    classifier.compile(run_eagerly=True)
    history = classifier.fit(images, np.array([0, 2]), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(classifier.output_dense.get_weights()[0], head[0])


def test_preset_loads_in_mixed_precision_with_a_float32_head(saved_preset):
    directory, _, _ = saved_preset
    classifier = keras_hub.models.ImageClassifier.from_preset(
        str(directory), dtype="mixed_bfloat16"
    )
    conv = classifier.backbone.get_layer("conv2_block1_1_conv")
    assert conv.compute_dtype == "bfloat16"
    assert classifier.output_dense.compute_dtype == "float32"
    assert classifier.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.needs_torch
def test_preset_from_official_checkpoint_gives_the_pytorch_logits(
    official_checkpoint, tmp_path
):
    path, torch_model = official_checkpoint
    directory = tmp_path / "sge_resnet18_imagenet"
    convert_to_preset(path, directory, verbose=False, image_size=64)
    classifier = keras_hub.models.ImageClassifier.from_preset(str(directory))
    assert isinstance(classifier, SGEResNetImageClassifier)
    images = helpers.raw_images(5)  # 72x90: the preprocessor resizes and crops
    logits = helpers.logits(classifier, images)
    expected = parity.torch_logits(
        torch_model, applications.center_crop_resize(images, 64).numpy()
    )
    relative = parity.assert_logits_match(logits, expected)
    print(f"preset vs PyTorch: max abs diff / max |logit| = {relative:.2e}")
    assert preset_class_names(directory) == applications.imagenet_class_names()


@pytest.mark.needs_torch
def test_checkpoint_without_classifier_gives_a_backbone_preset(
    official_checkpoint, tmp_path
):
    import torch

    _, torch_model = official_checkpoint
    path = tmp_path / "features.pth"
    torch.save(
        {
            key: value
            for key, value in torch_model.state_dict().items()
            if not key.startswith("fc.")
        },
        path,
    )
    model = convert_to_preset(path, tmp_path / "preset", verbose=False)
    assert isinstance(model, SGEResNetBackbone)
    assert not (tmp_path / "preset" / "task.json").exists()
    assert preset_class_names(tmp_path / "preset") is None
    classifier = keras_hub.models.ImageClassifier.from_preset(
        str(tmp_path / "preset"), num_classes=5
    )
    assert isinstance(classifier, SGEResNetImageClassifier)
    assert classifier.preprocessor.image_converter.image_size == (224, 224)


def test_convert_refuses_a_directory_holding_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        ValueError, match=r"must be new or empty.*holds \['config.json'\]"
    ):
        convert_to_preset(tmp_path / "missing.pth.tar", tmp_path, verbose=False)


@pytest.mark.needs_torch
def test_overrides_apply_to_the_preset_as_to_the_weights_file(
    official_checkpoint, tmp_path
):
    path, _ = official_checkpoint
    directory = tmp_path / "preset"
    with pytest.raises(
        ValueError,
        match=r"10-class classifier: shape mismatches: "
        r"fc.weight: checkpoint \(1000, 512\), model \(10, 512\)",
    ):
        convert_to_preset(path, directory, verbose=False, classes=10)
    with pytest.raises(ValueError, match=r"unexpected keys.*layer1.0.sge"):
        convert_to_preset(path, directory, verbose=False, groups=None)
    assert not directory.exists() and os.listdir(tmp_path) == []


@pytest.mark.needs_torch
def test_class_names_must_fit_the_classifier(official_checkpoint, tmp_path):
    path, _ = official_checkpoint
    with pytest.raises(
        ValueError,
        match=r"each of the checkpoint's 1000 classes. Received: 2 class names",
    ):
        convert_to_preset(
            path, tmp_path / "preset", verbose=False, class_names=["cat", "dog"]
        )


@pytest.mark.needs_torch
def test_convert_command_writes_a_preset(official_checkpoint, tmp_path, capsys):
    # `python -m keras_sge.convert` runs `main` (its module entry point is
    # run in a fresh process in tests/applications/test_weights.py).
    from keras_sge import convert

    path, torch_model = official_checkpoint
    directory = tmp_path / "preset"
    assert convert.main([str(path), "--preset", str(directory), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    with open(directory / "metadata.json") as file:
        assert len(json.load(file)["class_names"]) == 1000
    classifier = keras_hub.models.ImageClassifier.from_preset(str(directory))
    kernel, bias = classifier.output_dense.get_weights()
    np.testing.assert_array_equal(
        kernel, torch_model.fc.weight.detach().numpy().T
    )
    np.testing.assert_array_equal(bias, torch_model.fc.bias.detach().numpy())
    assert os.path.isfile(directory / "model.weights.h5")
