"""Cluttered digits: a small task where we know which pixels are the object.

In the spirit of cluttered MNIST (Jaderberg et al., *Spatial Transformer
Networks*, 2015), built from scikit-learn's 8x8 handwritten digits (shipped
inside its wheel, nothing downloads): each image is a black square canvas
holding one digit, upscaled and pasted at a random position, among random
fragments of *other* digits as clutter. The label is the digit; each image
also carries the digit's box, so a measure can compare what a network does on
the object with what it does on clutter and background.

Geometry, for a canvas of side `S` (32 by default):

- the digit is upscaled bilinearly to `round(S / 2)` pixels (16 at 32; in
  cluttered MNIST a 28-pixel digit sits on a 60-pixel canvas) and pasted at
  a uniformly random position at least `ceil(S / 16)` pixels from every
  edge, so the evaluation centre crop of `examples/train.py` (7/8 of the
  side) leaves the digit whole, to within a pixel;
- `clutter` fragments (6 by default), each a square crop of side
  `round(0.3 * digit side)` (5 at 32) of another upscaled digit, holding at
  least a quarter of the ink density of its source digit, are pasted at
  random positions that do not overlap the digit's box. Inside the box there
  is the digit and nothing else, outside it only clutter and background.
  Fragments may overlap each other; overlapping ink keeps the brighter
  pixel.

The source digits are split into train and val first (stratified, fixed by
`seed`, as `data.load_digits` splits them), and each split's canvases use only
that split's digits, for the pasted digit and for the clutter: a val image
shows no stroke of a training digit. Every canvas is a pure function of
`seed`: the same seed gives the same images, labels and boxes.

NumPy and SciPy only: `examples/train.py` loads its data before creating
the distribution strategy, which must come before TensorFlow starts.
"""

import dataclasses
import math

import numpy as np

from examples.training.data import ImageData
from examples.training.data import Split
from examples.training.data import upscaled_digits

# The digit's side as a fraction of the canvas, the fragments' side as a
# fraction of the digit's, and the margin kept from the canvas edges.
DIGIT_FRACTION = 1 / 2
FRAGMENT_FRACTION = 0.3
MARGIN_FRACTION = 1 / 16
# A fragment holds at least this fraction of its source digit's mean ink
# density: a crop of a digit's empty border would be no clutter at all.
MIN_FRAGMENT_INK = 0.25
MIN_IMAGE_SIZE = 24
MAX_TRIES = 1000


@dataclasses.dataclass(frozen=True)
class ClutteredSplit(Split):
    """A split of cluttered digits: a `data.Split` with the objects' boxes.

    Boxes are `(top, left, bottom, right)` in pixels, bottom and right
    exclusive: `images[i, top:bottom, left:right]` is the pasted patch.

    Attributes:
        boxes: `(N, 4)` int32, the digit's box in each image.
        clutter_boxes: `(N, K, 4)` int32, the boxes of the K fragments.
        sources: `(N,)` int32, the pasted digit's index in
            `sklearn.datasets.load_digits()`.
    """

    boxes: np.ndarray = None
    clutter_boxes: np.ndarray = None
    sources: np.ndarray = None


def digit_size(image_size):
    """The side of the pasted digit on a canvas of side `image_size`."""
    return round(image_size * DIGIT_FRACTION)


def fragment_size(image_size):
    """The side of one clutter fragment on a canvas of side `image_size`."""
    return max(2, round(digit_size(image_size) * FRAGMENT_FRACTION))


def margin(image_size):
    """The digit's least distance from the canvas edges, in pixels."""
    return math.ceil(image_size * MARGIN_FRACTION)


def load_cluttered_digits(
    image_size=32,
    train_images=6000,
    val_images=2000,
    clutter=6,
    val_fraction=0.2,
    seed=0,
):
    """Cluttered digits as an `ImageData` of `ClutteredSplit`s.

    Args:
        image_size: side of the square RGB canvas, at least 24.
        train_images: canvases made from the training digits.
        val_images: canvases made from the held-out digits.
        clutter: fragments of other digits per canvas.
        val_fraction: share of scikit-learn's 1797 digits held out for val.
        seed: fixes the split of the source digits and every canvas.

    Returns:
        An `ImageData` whose `train` and `val` are `ClutteredSplit`s of
        uint8 `(N, image_size, image_size, 3)` images (gray, repeated over
        the channels), labels 0-9 and boxes.

    Raises:
        ValueError: a size or count out of range, named with its value.
    """
    from sklearn import model_selection

    _check_arguments(
        image_size, train_images, val_images, clutter, val_fraction
    )
    patches, labels = upscaled_digits(digit_size(image_size))
    train, val = model_selection.train_test_split(
        np.arange(len(labels)),
        test_size=val_fraction,
        random_state=seed,
        stratify=labels,
    )
    # One generator per split, so that the val set does not change with
    # the number of training images.
    splits = [
        _make_split(
            patches,
            labels,
            pool,
            count,
            image_size,
            clutter,
            np.random.default_rng([seed, index]),
        )
        for index, (pool, count) in enumerate(
            ((train, train_images), (val, val_images))
        )
    ]
    return ImageData(
        name=(
            "cluttered digits (scikit-learn digits, embedded; "
            f"{image_size}x{image_size}, {clutter} fragments)"
        ),
        train=splits[0],
        val=splits[1],
        class_names=tuple(str(digit) for digit in range(10)),
    )


def _check_arguments(
    image_size, train_images, val_images, clutter, val_fraction
):
    checks = [
        (
            image_size,
            "image_size",
            lambda v: isinstance(v, int) and v >= MIN_IMAGE_SIZE,
            f"an integer >= {MIN_IMAGE_SIZE}",
        ),
        (
            train_images,
            "train_images",
            lambda v: isinstance(v, int) and v >= 1,
            "a positive integer",
        ),
        (
            val_images,
            "val_images",
            lambda v: isinstance(v, int) and v >= 1,
            "a positive integer",
        ),
        (
            clutter,
            "clutter",
            lambda v: isinstance(v, int) and v >= 0,
            "an integer >= 0",
        ),
        (
            val_fraction,
            "val_fraction",
            lambda v: 0.05 <= v <= 0.5,
            "in [0.05, 0.5]",
        ),
    ]
    for value, name, ok, expected in checks:
        if isinstance(value, bool) or not ok(value):
            raise ValueError(
                f"cluttered digits: `{name}` must be {expected}. Received: {name}={value!r}"
            )


def _make_split(patches, labels, pool, count, image_size, clutter, rng):
    """`count` canvases from the source digits `pool` (indices into patches)."""
    sources = _balanced_sources(pool, labels, count, rng)
    images = np.zeros((count, image_size, image_size), "uint8")
    boxes = np.zeros((count, 4), "int32")
    clutter_boxes = np.zeros((count, clutter, 4), "int32")
    for i, source in enumerate(sources):
        boxes[i] = _paste_digit(images[i], patches[source], rng)
        for k in range(clutter):
            clutter_boxes[i, k] = _paste_fragment(
                images[i], patches, pool, source, boxes[i], rng
            )
    return ClutteredSplit(
        labels=labels[sources],
        images=np.repeat(images[..., None], 3, axis=-1),
        boxes=boxes,
        clutter_boxes=clutter_boxes,
        sources=sources,
    )


def _balanced_sources(pool, labels, count, rng):
    """`count` digits of `pool`, in random order, the classes balanced.

    Passes over the pool in cycles, each digit once per cycle; within a cycle
    the classes take turns (a random digit of each, then a second of each,
    ...), so any number of canvases has every class as often as any other,
    within one (as far as the pool's classes are equal in size).
    """
    cycles = []
    for _ in range(-(-count // len(pool))):
        shuffled = rng.permutation(pool)
        turn = np.zeros(len(shuffled), "int64")
        for digit in np.unique(labels[shuffled]):
            members = labels[shuffled] == digit
            turn[members] = np.arange(members.sum())
        cycles.append(shuffled[np.lexsort((rng.random(len(shuffled)), turn))])
    return rng.permutation(np.concatenate(cycles)[:count]).astype("int32")


def _paste_digit(canvas, patch, rng):
    size, side, edge = canvas.shape[0], patch.shape[0], margin(canvas.shape[0])
    top, left = rng.integers(edge, size - edge - side, endpoint=True, size=2)
    canvas[top : top + side, left : left + side] = patch
    return top, left, top + side, left + side


def _paste_fragment(canvas, patches, pool, source, digit_box, rng):
    """Pastes a crop of another digit outside `digit_box`; returns its box."""
    fragment = _fragment(
        patches, pool, source, fragment_size(canvas.shape[0]), rng
    )
    side, size = fragment.shape[0], canvas.shape[0]
    for _ in range(MAX_TRIES):
        top, left = rng.integers(0, size - side, endpoint=True, size=2)
        box = (top, left, top + side, left + side)
        if not _overlap(box, digit_box):
            region = canvas[top : top + side, left : left + side]
            np.maximum(region, fragment, out=region)
            return box
    # Unreachable for image_size >= 24: a strip beside the digit always fits.
    raise RuntimeError(
        f"no room for a {side}-pixel fragment outside the digit box {digit_box}"
    )


def _fragment(patches, pool, source, side, rng):
    """A square crop of a random digit of `pool` other than `source`."""
    while True:
        other = pool[rng.integers(len(pool))]
        if other != source:
            break
    patch = patches[other]
    least_ink = MIN_FRAGMENT_INK * patch.mean()
    for _ in range(MAX_TRIES):
        top, left = rng.integers(
            0, patch.shape[0] - side, endpoint=True, size=2
        )
        crop = patch[top : top + side, left : left + side]
        if crop.mean() >= least_ink:
            return crop
    # Rare (a digit with little ink): take the crop around its ink's centre.
    return _central_crop(patch, side)


def _central_crop(patch, side):
    rows, cols = np.nonzero(patch)
    top = int(np.clip(round(rows.mean()) - side // 2, 0, patch.shape[0] - side))
    left = int(
        np.clip(round(cols.mean()) - side // 2, 0, patch.shape[1] - side)
    )
    return patch[top : top + side, left : left + side]


def _overlap(a, b):
    """Whether boxes `(top, left, bottom, right)` share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
