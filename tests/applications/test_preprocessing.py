"""preprocess_input, center_crop_resize, decode_predictions and the class names."""

import os
import re
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from keras_sge import applications
from tests import harness

MEAN = np.array([0.485, 0.456, 0.406], "float32")
STD = np.array([0.229, 0.224, 0.225], "float32")


def rgb(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype("uint8")


# --------------------------------------------------------------------------
# preprocess_input
# --------------------------------------------------------------------------


def test_preprocess_input_matches_torchvision_normalize():
    x = rgb((2, 5, 6, 3))
    expected = (
        x.astype("float32") / 255.0 - MEAN
    ) / STD  # ToTensor + Normalize
    out = applications.preprocess_input(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    # A single image, and a list.
    np.testing.assert_allclose(
        applications.preprocess_input(x[0]), expected[0], atol=1e-6
    )
    np.testing.assert_allclose(
        applications.preprocess_input(x[0].tolist()), expected[0], atol=1e-6
    )


def test_preprocess_input_channels_first():
    x = rgb((2, 3, 4, 5))
    expected = (x.astype("float32") / 255.0 - MEAN[:, None, None]) / STD[
        :, None, None
    ]
    out = applications.preprocess_input(x, data_format="channels_first")
    np.testing.assert_allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="Received: data_format='nchw'"):
        applications.preprocess_input(x, data_format="nchw")


def test_preprocess_input_backend_and_symbolic_tensors():
    x = rgb((1, 4, 4, 3))
    expected = applications.preprocess_input(x)
    out = applications.preprocess_input(keras.ops.convert_to_tensor(x))
    assert keras.ops.is_tensor(out)
    harness.assert_all_close(out, expected, atol=1e-6)
    # Inside a functional model.
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, applications.preprocess_input(inputs))
    harness.assert_all_close(model(x.astype("float32")), expected, atol=1e-6)


def test_preprocess_input_in_tf_data():
    import tensorflow as tf

    x = rgb((3, 8, 8, 3))
    dataset = (
        tf.data.Dataset.from_tensor_slices(x)
        .map(applications.preprocess_input)
        .batch(3)
    )
    out = next(iter(dataset)).numpy()
    np.testing.assert_allclose(out, applications.preprocess_input(x), atol=1e-6)


# --------------------------------------------------------------------------
# center_crop_resize
# --------------------------------------------------------------------------


def pil_reference(image, image_size=224):
    """torchvision's Resize(256) + CenterCrop(224) on a PIL image."""
    from PIL import Image

    height, width = image.shape[:2]
    target = round(image_size * 256 / 224)
    if width <= height:
        size = (target, int(target * height / width))
    else:
        size = (int(target * width / height), target)
    resized = np.asarray(
        Image.fromarray(image).resize(size, Image.BILINEAR), "float32"
    )
    top = int(round((resized.shape[0] - image_size) / 2.0))
    left = int(round((resized.shape[1] - image_size) / 2.0))
    return resized[top : top + image_size, left : left + image_size]


def smooth_image(height, width):
    """A smooth RGB image, so that resampling filters barely differ."""
    yy, xx = np.meshgrid(
        np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij"
    )
    channels = [np.sin(3 * xx + 2 * yy), np.cos(4 * yy - xx), xx * yy]
    return ((np.stack(channels, -1) + 1) * 100).clip(0, 255).astype("uint8")


@pytest.mark.parametrize(
    "height,width", [(300, 400), (500, 333), (256, 256), (180, 240)]
)
def test_center_crop_resize_matches_torchvision_geometry(height, width):
    pytest.importorskip("PIL")
    image = smooth_image(height, width)
    out = applications.center_crop_resize(image).numpy()
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    expected = pil_reference(image)
    # Same geometry; PIL rounds to uint8 (measured: mean 0.2, max 1.0).
    assert np.abs(out - expected).mean() < 0.5
    assert np.abs(out - expected).max() < 2.0


def test_center_crop_resize_batch_and_other_sizes():
    batch = np.stack([smooth_image(120, 160)] * 2)
    out = applications.center_crop_resize(batch, image_size=112).numpy()
    assert out.shape == (2, 112, 112, 3)
    np.testing.assert_allclose(
        out[0],
        applications.center_crop_resize(batch[0], image_size=112).numpy(),
    )
    # Upsampling small images works too.
    assert applications.center_crop_resize(
        smooth_image(20, 30), image_size=32
    ).shape == (32, 32, 3)


def test_center_crop_resize_in_tf_data_with_dynamic_shapes():
    import tensorflow as tf

    images = [smooth_image(150, 200), smooth_image(300, 180)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(images),
        output_signature=tf.TensorSpec((None, None, 3), tf.uint8),
    )
    dataset = dataset.map(
        lambda image: applications.preprocess_input(
            applications.center_crop_resize(image, 64)
        )
    )
    outputs = [out.numpy() for out in dataset]
    assert [out.shape for out in outputs] == [(64, 64, 3), (64, 64, 3)]
    expected = applications.preprocess_input(
        applications.center_crop_resize(images[1], 64).numpy()
    )
    np.testing.assert_allclose(outputs[1], expected, atol=1e-5)


@pytest.mark.parametrize(
    "images,kwargs,message",
    [
        (np.zeros((8, 8, 3)), {"image_size": 0}, "Received: image_size=0"),
        (np.zeros((8, 8, 3)), {"image_size": 2.5}, "Received: image_size=2.5"),
        (np.zeros((8, 8)), {}, "Received: shape=(8, 8)"),
    ],
)
def test_center_crop_resize_validation(images, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        applications.center_crop_resize(images, **kwargs)


@pytest.mark.tensorflow_only
@pytest.mark.timeout(600)
def test_preprocessing_inside_exported_model(tmp_path):
    """A SavedModel taking raw uint8 images of any size, served without keras_sge."""
    import tensorflow as tf

    model = applications.SGEResNet18(input_shape=(64, 64, 3), classes=3)

    class Serving(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(
            input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8)]
        )
        def serve(self, images):
            x = applications.preprocess_input(
                applications.center_crop_resize(images, image_size=64)
            )
            return self.model(x, training=False)

    export_dir = str(tmp_path / "serving")
    tf.saved_model.save(Serving(model), export_dir)
    images = np.stack([smooth_image(90, 120), smooth_image(90, 120)[::-1]])
    np.save(tmp_path / "images.npy", images)
    stdout = harness.run_in_fresh_process(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        served = tf.saved_model.load({export_dir!r})
        out = served.serve(tf.constant(np.load({str(tmp_path / "images.npy")!r})))
        np.save({str(tmp_path / "served.npy")!r}, out.numpy())
        print("keras_sge" in sys.modules)
        """,
        env={"KERAS_BACKEND": "tensorflow"},
    )
    assert stdout.split()[-1] == "False"
    expected = model(
        applications.preprocess_input(
            applications.center_crop_resize(images, 64)
        )
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "served.npy"),
        keras.ops.convert_to_numpy(expected),
        atol=1e-5,
    )


def test_docstring_examples():
    import doctest

    from keras_sge.applications import imagenet_utils
    from keras_sge.applications import preprocessing

    for module in (preprocessing, imagenet_utils):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# --------------------------------------------------------------------------
# Class names and decode_predictions
# --------------------------------------------------------------------------


def test_imagenet_class_names():
    names = applications.imagenet_class_names()
    assert len(names) == 1000
    assert (
        names[0] == "tench"
        and names[207] == "golden_retriever"
        and names[999] == "toilet_tissue"
    )
    names[0] = "changed"
    assert applications.imagenet_class_names()[0] == "tench"


def test_decode_predictions():
    preds = np.zeros((2, 1000), "float32")
    preds[0, [1, 207, 999]] = [0.2, 0.5, 0.3]
    preds[1, 0] = 1.0
    decoded = applications.decode_predictions(preds, top=3)
    assert [(wnid, name) for wnid, name, _ in decoded[0]] == [
        ("n02099601", "golden_retriever"),
        ("n15075141", "toilet_tissue"),
        ("n01443537", "goldfish"),
    ]
    np.testing.assert_allclose(
        [score for *_, score in decoded[0]], [0.5, 0.3, 0.2]
    )
    assert decoded[1][0][:2] == ("n01440764", "tench")
    assert len(applications.decode_predictions(preds)[0]) == 5
    # Tensors work too.
    assert (
        applications.decode_predictions(
            keras.ops.convert_to_tensor(preds), top=1
        )[1][0][1]
        == "tench"
    )


@pytest.mark.parametrize(
    "shape,top,message",
    [
        ((1000,), 5, "Received array with shape: (1000,)"),
        ((2, 10), 5, "(2, 10)"),
        ((1, 1000), 0, "Received: top=0"),
    ],
)
def test_decode_predictions_validation(shape, top, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        applications.decode_predictions(np.zeros(shape), top=top)


@pytest.mark.timeout(600)
def test_installed_wheel_carries_the_class_names(tmp_path):
    """Builds the wheel, installs it elsewhere and decodes offline from it."""
    pytest.importorskip("setuptools")
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [
            *pip,
            "wheel",
            harness.REPO_ROOT,
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheel_dir),
        ],
        check=True,
        capture_output=True,
        timeout=500,
    )
    (wheel,) = wheel_dir.glob("keras_sge-*.whl")
    assert (
        "keras_sge/data/imagenet_class_index.json"
        in zipfile.ZipFile(wheel).namelist()
    )
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        timeout=300,
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import keras_sge.applications as a; print(a.__file__); "
            "print(a.imagenet_class_names()[207])",
        ],
        cwd=str(tmp_path),  # not the repo: the installed copy is imported
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path, name = result.stdout.split()[-2:]
    assert path.startswith(str(site)) and name == "golden_retriever"
