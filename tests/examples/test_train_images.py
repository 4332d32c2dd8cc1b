"""Training on your own image folders: odd formats, bad files, one folder per class.

Real files written by Pillow: every format TensorFlow decodes must train
(as it is, or converted once to PNG), every file nothing decodes must be
reported and skipped, or refused, before training starts.
"""

import base64
import io
import os
import struct

import numpy as np
import pytest
from PIL import Image

from tests.examples import runner

pytestmark = pytest.mark.tensorflow_only

CLASSES = ("disc", "square", "stripes")
# A 16x16 arithmetic-coded JPEG (libjpeg-turbo's `cjpeg -arithmetic`):
# Pillow cannot write this coding.
ARITHMETIC_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAIBAQEBAQIBAQECAgICAgQDAgICAgUEBAMEBgUGBgYFBgYGBwkIBgcJBwYGCAsICQoK"
    "CgoKBggLDAsKDAkKCgr/2wBDAQICAgICAgUDAwUKBwYHCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoK"
    "CgoKCgoKCgr/yQARCAAQABADASIAAhEBAxEB/8wACgAQEAUBEBEF/9oADAMBAAIRAxEAPwD/ANxqYMLZfANF4fvmVAIBf55iLY9M"
    "/wCr/9k="
)


def _picture(width=48, height=40, seed=0):
    """A small RGB picture: smooth gradients and a few blocks (compresses well)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:height, :width]
    image = np.stack(
        [
            xx * 255 // width,
            yy * 255 // height,
            (xx + yy) * 127 // (width + height),
        ],
        -1,
    )
    for _ in range(3):
        y, x = rng.randint(0, height - 8), rng.randint(0, width - 8)
        image[y : y + 8, x : x + 8] = rng.randint(0, 256, 3)
    return Image.fromarray(image.astype("uint8"))


def _encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _palette(image):
    return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)


def _gray16(image):
    return Image.fromarray(
        np.asarray(image.convert("L")).astype("uint16") * 257
    )


def _jpeg():
    return _encode(_picture(), "JPEG", quality=90)


def _bitfields_bmp(masks):
    """A top-down 32-bit BMP (V4 header, BI_BITFIELDS) with channel `masks` (R, G, B, A)."""
    pixels = np.asarray(_picture().convert("RGBA"), dtype=np.uint32)
    shifts = [(mask & -mask).bit_length() - 1 for mask in masks]
    data = (
        sum(pixels[..., c] << shifts[c] for c in range(4))
        .astype("<u4")
        .tobytes()
    )
    height, width = pixels.shape[:2]
    info = struct.pack(
        "<IiiHHIIiiII",
        108,
        width,
        -height,
        1,
        32,
        3,
        len(data),
        2835,
        2835,
        0,
        0,
    )
    info += struct.pack("<IIII", *masks) + bytes(108 - 56)
    return (
        b"BM"
        + struct.pack("<IHHI", 14 + 108 + len(data), 0, 0, 14 + 108)
        + info
        + data
    )


# name -> (bytes of the file, expected outcome of the start-up check)
FORMATS = {
    "rgb.jpg": (lambda: _jpeg(), "ok"),
    "gray.jpg": (lambda: _encode(_picture().convert("L"), "JPEG"), "ok"),
    "cmyk.jpg": (lambda: _encode(_picture().convert("CMYK"), "JPEG"), "ok"),
    "progressive.jpg": (
        lambda: _encode(_picture(), "JPEG", progressive=True),
        "ok",
    ),
    "exif.jpg": (
        lambda: _encode(_picture(), "JPEG", exif=b"Exif\0\0" + bytes(20000)),
        "ok",
    ),
    "arithmetic.jpg": (lambda: ARITHMETIC_JPEG, "ok"),
    "padded.jpg": (lambda: _jpeg() + bytes(64), "ok"),
    "video_after_end.jpg": (
        lambda: _jpeg() + b"\0\0\0\x18ftypmp42" + bytes(5000),
        "ok",
    ),
    "rgba.png": (lambda: _encode(_picture().convert("RGBA"), "PNG"), "ok"),
    "palette.png": (lambda: _encode(_palette(_picture()), "PNG"), "ok"),
    "palette_transparent.png": (
        lambda: _encode(_palette(_picture()), "PNG", transparency=0),
        "ok",
    ),
    "gray16.png": (lambda: _encode(_gray16(_picture()), "PNG"), "ok"),
    "png_named.JPEG": (lambda: _encode(_picture(), "PNG"), "ok"),
    "still.gif": (lambda: _encode(_palette(_picture()), "GIF"), "ok"),
    "animated.gif": (
        lambda: _encode(
            _palette(_picture()),
            "GIF",
            save_all=True,
            append_images=[_palette(_picture(seed=1))],
        ),
        "ok",
    ),
    "rgb24.bmp": (lambda: _encode(_picture(), "BMP"), "ok"),
    "rgba32.bmp": (lambda: _encode(_picture().convert("RGBA"), "BMP"), "ok"),
    "bgra_bitfields.bmp": (
        lambda: _bitfields_bmp((0xFF0000, 0xFF00, 0xFF, 0xFF000000)),
        "ok",
    ),
    # TensorFlow decodes an 8-bit BMP as grey, ignoring its palette, and
    # refuses 1-bit ones and BMPs longer than their header says.
    "palette8.bmp": (lambda: _encode(_palette(_picture()), "BMP"), "convert"),
    "mono1.bmp": (lambda: _encode(_picture().convert("1"), "BMP"), "convert"),
    "extra_bytes.bmp": (
        lambda: _encode(_picture(), "BMP") + bytes(10),
        "convert",
    ),
    # TensorFlow assumes BGRA whatever the masks say.
    "rgba_bitfields.bmp": (
        lambda: _bitfields_bmp((0xFF, 0xFF00, 0xFF0000, 0xFF000000)),
        "convert",
    ),
    "no_iend.png": (lambda: _encode(_picture(), "PNG")[:-12], "convert"),
    "no_trailer.gif": (
        lambda: _encode(_palette(_picture()), "GIF")[:-1],
        "convert",
    ),
    "picture.webp": (
        lambda: _encode(_picture(), "WEBP", lossless=True),
        "convert",
    ),
    "truncated.jpg": (lambda: _jpeg()[: len(_jpeg()) // 2], "bad"),
    "zero_tail.jpg": (
        lambda: (
            _jpeg()[: len(_jpeg()) // 2]
            + bytes(len(_jpeg()) - len(_jpeg()) // 2)
        ),
        "bad",
    ),
    "truncated.png": (lambda: _encode(_picture(), "PNG")[:-200], "bad"),
    "truncated.gif": (
        lambda: _encode(_palette(_picture()), "GIF")[:300],
        "bad",
    ),
    "truncated.bmp": (lambda: _encode(_picture(), "BMP")[:3000], "bad"),
    "notes.txt": (lambda: b"class notes\n", "bad"),
    "Thumbs.db": (
        lambda: bytes.fromhex("d0cf11e0a1b11ae1") + bytes(1000),
        "bad",
    ),
    "empty.jpg": (lambda: b"", "bad"),
}


def _reference(path):
    """What the image should decode to: Pillow's RGB, as the module converts."""
    from examples.training import image_files

    with Image.open(path) as image:
        image.load()
        return np.asarray(image_files._as_rgb(image))


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_check_classifies_each_format_and_tensorflow_decodes_what_it_keeps(
    tmp_path, name
):
    import tensorflow as tf

    from examples.training import data
    from examples.training import image_files

    make, expected = FORMATS[name]
    path = tmp_path / "images" / name
    path.parent.mkdir()
    path.write_bytes(make())
    check = image_files.check_files(
        [str(path)], str(tmp_path / "images"), str(tmp_path / "converted")
    )

    outcome = "bad" if check.bad else "convert" if check.converted else "ok"
    assert outcome == expected, (check.bad, check.converted)
    if expected == "bad":
        assert not check.keep[0] and check.bad[0][0] == str(path)
        return
    read = check.paths[0]
    assert read == (
        str(tmp_path / "converted" / name) + ".png"
        if expected == "convert"
        else str(path)
    )
    decoded = data.decode(tf.io.read_file(read)).numpy()
    reference = _reference(str(path))  # The original, decoded by Pillow.
    assert (
        decoded.shape
        == ((16, 16, 3) if name == "arithmetic.jpg" else (40, 48, 3))
        == reference.shape
    )
    difference = np.abs(decoded.astype(int) - reference)
    if expected == "ok" and path.read_bytes()[:2] == b"\xff\xd8":
        assert difference.mean() < 3  # TensorFlow's fast IDCT against Pillow's.
    else:
        assert (
            difference.max() <= 1
        )  # Lossless: the same pixels, in the right colours.


def test_pipelines_read_every_kept_and_converted_file(tmp_path):
    """The training crop (decode_and_crop_jpeg for JPEGs) and the eval pass."""
    import tensorflow as tf

    from examples.training import data
    from examples.training import image_files

    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for name, (make, expected) in sorted(FORMATS.items()):
        if expected != "bad":
            (folder / name).write_bytes(make())
            paths.append(str(folder / name))
    check = image_files.check_files(
        paths, str(folder), str(tmp_path / "converted")
    )
    assert check.keep.all() and not check.bad
    split = data.Split(
        labels=np.arange(len(paths)) % 3,
        paths=check.paths,
        num_bytes=int(check.sizes.sum()),
    )
    pipeline = data.Pipeline(image_size=32, num_classes=3, seed=1)
    context = tf.distribute.InputContext()
    batches = list(
        pipeline.train(
            split, context, global_batch=len(paths), steps_per_epoch=1
        ).take(2)
    )
    assert [tuple(images.shape) for images, _ in batches] == [
        (len(paths), 32, 32, 3)
    ] * 2
    images, _, weights = next(
        iter(pipeline.evaluate(split, context, global_batch=len(paths)))
    )
    assert images.shape == (len(paths), 32, 32, 3) and float(
        tf.reduce_sum(weights)
    ) == len(paths)


def test_pipelines_survive_a_file_that_fails_to_decode(tmp_path):
    """The safety net for what the start-up check misses: no crash, same batch counts."""
    import tensorflow as tf

    from examples.training import data

    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.jpg"))
        blob = _jpeg()
        # The start-up check would catch this one; the pipeline must cope anyway.
        with open(paths[-1], "wb") as f:
            f.write(blob[: len(blob) // 2] if i == 2 else blob)
    split = data.Split(
        labels=np.zeros(5, "int32"), paths=np.array(paths), num_bytes=0
    )
    pipeline = data.Pipeline(image_size=32, num_classes=3)
    context = tf.distribute.InputContext()

    batches = list(
        pipeline.train(split, context, global_batch=4, steps_per_epoch=1).take(
            6
        )
    )
    assert [tuple(images.shape) for images, _ in batches] == [
        (4, 32, 32, 3)
    ] * 6

    evaluation = pipeline.evaluate(split, context, global_batch=4)
    two_passes = list(evaluation.take(2 * data.eval_steps(5, 4)))
    assert [tuple(images.shape) for images, _, _ in two_passes] == [
        (4, 32, 32, 3)
    ] * 4
    weights = np.concatenate([w.numpy() for _, _, w in two_passes])
    # Four readable images a pass; the padding and the failed image weigh 0.
    assert weights[:8].sum() == 4 and weights[8:].sum() == 4


def _write_class_folders(root, per_class, fmt="JPEG"):
    for c, kind in enumerate(CLASSES):
        os.makedirs(os.path.join(root, kind), exist_ok=True)
        for i in range(per_class):
            image = _picture(32 + i % 5, 32 + i % 3, seed=100 * c + i)
            image.save(os.path.join(root, kind, f"{i:03d}.{fmt.lower()}"), fmt)


def _write_imagenet_layout(root, train_per_class, val_per_class):
    _write_class_folders(os.path.join(root, "train"), train_per_class)
    _write_class_folders(os.path.join(root, "val"), val_per_class)
    return root


def _add_unusual_files(root):
    """One file of every format, and the three bad ones, in train/; returns the bad paths."""
    folder = os.path.join(root, "train", CLASSES[0])
    for name, (make, expected) in FORMATS.items():
        if expected != "bad":
            with open(os.path.join(folder, "odd_" + name), "wb") as f:
                f.write(make())
    bad = {
        "half_copied.jpg": _jpeg()[:700],
        "notes.txt": b"class notes\n",
        "Thumbs.db": bytes.fromhex("d0cf11e0") + bytes(600),
    }
    for name, blob in bad.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(blob)
    return sorted(os.path.join(folder, name) for name in bad)


def test_the_folder_check_reports_converts_skips_and_refuses(tmp_path):
    from examples.training import data

    root = _write_imagenet_layout(str(tmp_path / "images"), 110, 2)
    bad = _add_unusual_files(root)
    out = str(tmp_path / "run")
    dataset = data.scan_image_folder(root, out)

    listed = [
        line.split("\t")
        for line in (tmp_path / "run" / "bad_images.txt")
        .read_text()
        .splitlines()
    ]
    assert sorted(path for path, _ in listed) == bad
    assert sorted(path for path, _ in dataset.skipped) == bad
    converted = sum(expected == "convert" for _, expected in FORMATS.values())
    assert len(dataset.converted) == converted
    assert all(
        os.path.isfile(png) and png.startswith(os.path.join(out, "converted"))
        for _, png, _ in dataset.converted
    )
    kept_odd = sum(expected != "bad" for _, expected in FORMATS.values())
    assert len(dataset.train) == 3 * 110 + kept_odd and len(dataset.val) == 6
    assert (
        f"{converted} converted to PNG" in dataset.describe()
        and "3 unreadable skipped" in dataset.describe()
    )
    lines = dataset.skipped_lines()
    assert lines[0] == (
        "Skipping 3 unreadable image file(s), all listed in "
        f"{os.path.join(out, 'bad_images.txt')}:"
    )
    assert [line.strip().split(": ")[0] for line in lines[1:]] == bad

    with pytest.raises(
        data.DataError,
        match=r"^3 unreadable image file\(s\) in .*, the first: .*Thumbs.db \(not a JPEG",
    ):
        data.scan_image_folder(root, out, bad_images="refuse")
    total = 3 * 110 + 6 + kept_odd + 3
    with pytest.raises(
        data.DataError,
        match=rf"^3 of {total} files .* are unreadable \(0.8%\), more than the 0.5%",
    ):
        data.scan_image_folder(root, out, max_bad_fraction=0.005)

    for path in bad:
        os.remove(path)
    data.scan_image_folder(root, out)
    assert not os.path.exists(os.path.join(out, "bad_images.txt")), (
        "a clean folder leaves no stale list"
    )


def test_one_folder_per_class_gets_a_seeded_stratified_val_split(tmp_path):
    from examples.training import data

    root = str(tmp_path / "images")
    _write_class_folders(root, 10)
    for c, count in ((0, 3), (1, 7)):  # Uneven classes.
        for i in range(count):
            _picture(seed=i).save(
                os.path.join(root, CLASSES[c], f"extra{i}.png")
            )
    with open(os.path.join(root, "LICENSE.txt"), "w") as f:
        f.write("beside the class folders: not part of the data")

    first, again = (
        data.scan_image_folder(root, val_fraction=0.25, seed=7)
        for _ in range(2)
    )
    other_seed = data.scan_image_folder(root, val_fraction=0.25, seed=8)
    for a, b in ((first.train, again.train), (first.val, again.val)):
        np.testing.assert_array_equal(a.paths, b.paths)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(first.val.paths, other_seed.val.paths)
    # Classes of 13, 17 and 10 images: a quarter of each, rounded.
    assert [int((first.val.labels == c).sum()) for c in range(3)] == [3, 4, 2]
    assert set(first.train.paths).isdisjoint(first.val.paths)
    assert len(first.train) + len(first.val) == 40
    assert (
        first.class_names == CLASSES
        and "val: a seeded 25% of each class (seed 7)" in first.describe()
    )


def test_a_class_of_one_image_is_named_and_one_class_is_refused(tmp_path):
    from examples.training import data

    root = str(tmp_path / "images")
    _write_class_folders(root, 4)
    os.makedirs(os.path.join(root, "owl"))
    _picture(seed=9).save(os.path.join(root, "owl", "only.jpg"))
    dataset = data.scan_image_folder(root, val_fraction=0.25)
    assert "only.jpg" not in " ".join(dataset.val.paths)
    assert dataset.describe().endswith(
        "; note: 1 class(es) with a single image, kept for training, so "
        "none in val: 'owl'"
    )

    alone = str(tmp_path / "one_class")
    os.makedirs(os.path.join(alone, "cats"))
    for i in range(5):
        _picture(seed=i).save(os.path.join(alone, "cats", f"{i}.jpg"))
    with pytest.raises(
        data.DataError,
        match=rf"^{alone} has a single class folder, 'cats': a classifier "
        "needs two classes or more",
    ):
        data.scan_image_folder(alone)


TRAIN = runner.QUICK + [
    "--epochs",
    "1",
    "--steps-per-epoch",
    "2",
    "--batch-size",
    "8",
]


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_a_folder_with_bad_and_unusual_files_trains_to_the_end(
    tmp_path, capsys
):
    root = _write_imagenet_layout(str(tmp_path / "images"), 110, 2)
    bad = _add_unusual_files(root)
    out = str(tmp_path / "run")

    output = runner.run_in_process(
        TRAIN + ["--data", root, "--output-dir", out], capsys
    )

    converted = sum(expected == "convert" for _, expected in FORMATS.values())
    assert (
        f"Skipping 3 unreadable image file(s), all listed in {os.path.join(out, 'bad_images.txt')}:"
        in output
    )
    for path in bad:
        assert f"  {path}: " in output
    assert (
        f"; {converted} converted to PNG in {os.path.join(out, 'converted')}; 3 unreadable skipped"
        in output
    )
    assert "Trained steps 0-2" in output and "Validation: accuracy" in output
    assert os.path.isfile(os.path.join(out, "model.keras"))
    assert (
        len((tmp_path / "run" / "bad_images.txt").read_text().splitlines()) == 3
    )


@pytest.mark.timeout(120)
def test_refuse_stops_before_training_in_one_line(tmp_path, capsys):
    root = _write_imagenet_layout(str(tmp_path / "images"), 110, 2)
    bad = _add_unusual_files(root)
    out = str(tmp_path / "run")

    status, output = runner.main_in_process(
        TRAIN + ["--data", root, "--output-dir", out, "--bad-images", "refuse"],
        capsys,
    )

    assert status == 2, output[-3000:]
    errors = [
        line
        for line in output.splitlines()
        if line.startswith("train.py: error:")
    ]
    report = os.path.join(out, "bad_images.txt")
    expected = (
        f"train.py: error: 3 unreadable image file(s) in {root}, the first: {bad[0]} "
        f"(not a JPEG/PNG/GIF/BMP image); all listed in {report}"
    )
    assert errors == [expected]
    assert "Traceback" not in output and "Trained steps" not in output
    assert not os.path.exists(os.path.join(out, "backup"))


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_one_folder_per_class_trains(tmp_path, capsys):
    root = str(tmp_path / "images")
    _write_class_folders(root, 12)

    output = runner.run_in_process(
        TRAIN
        + [
            "--data",
            root,
            "--output-dir",
            str(tmp_path / "run"),
            "--val-fraction",
            "0.25",
        ],
        capsys,
    )

    assert (
        f"Data: {root}: 27 train / 9 val images, 3 classes; "
        "val: a seeded 25% of each class (seed 0)"
    ) in output
    assert "Trained steps 0-2" in output and "Validation: accuracy" in output
