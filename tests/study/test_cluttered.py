"""The cluttered digits: deterministic, and the boxes are where the digits are."""

import numpy as np
import pytest

from examples.training import cluttered
from examples.training import data


def small(seed=0, clutter=8, image_size=48):
    return cluttered.load_cluttered_digits(
        image_size, train_images=60, val_images=30, clutter=clutter, seed=seed
    )


def test_the_same_seed_gives_the_same_images_labels_and_boxes():
    first, again, other = small(seed=3), small(seed=3), small(seed=4)
    for name in ("images", "labels", "boxes", "clutter_boxes", "sources"):
        for split in ("train", "val"):
            np.testing.assert_array_equal(
                getattr(getattr(first, split), name),
                getattr(getattr(again, split), name),
            )
    assert not np.array_equal(first.train.images, other.train.images)


def test_the_val_set_does_not_depend_on_the_number_of_training_images():
    more = cluttered.load_cluttered_digits(
        48, train_images=90, val_images=30, clutter=8, seed=0
    )
    np.testing.assert_array_equal(more.val.images, small().val.images)


def test_without_clutter_the_box_holds_the_pasted_digit_and_nothing_is_outside():
    dataset = small(clutter=0)
    patches, targets = data.upscaled_digits(cluttered.digit_size(48))
    for split in (dataset.train, dataset.val):
        for image, box, source, label in zip(
            split.images, split.boxes, split.sources, split.labels
        ):
            top, left, bottom, right = box
            np.testing.assert_array_equal(
                image[top:bottom, left:right, 0], patches[source]
            )
            outside = image.copy()
            outside[top:bottom, left:right] = 0
            assert not outside.any()
            assert label == targets[source]


def test_with_clutter_the_box_is_untouched_and_every_other_stroke_is_in_a_fragment_box():
    dataset = small()
    patches, _ = data.upscaled_digits(cluttered.digit_size(48))
    edge, side = cluttered.margin(48), cluttered.digit_size(48)
    for image, box, fragments, source in zip(
        dataset.train.images,
        dataset.train.boxes,
        dataset.train.clutter_boxes,
        dataset.train.sources,
    ):
        top, left, bottom, right = box
        assert (
            edge <= top
            and bottom <= 48 - edge
            and edge <= left
            and right <= 48 - edge
        )
        assert bottom - top == side and right - left == side
        np.testing.assert_array_equal(
            image[top:bottom, left:right, 0], patches[source]
        )
        covered = np.zeros((48, 48), bool)
        covered[top:bottom, left:right] = True
        for f_top, f_left, f_bottom, f_right in fragments:
            # No fragment overlaps the digit's box.
            assert (
                f_bottom <= top
                or f_top >= bottom
                or f_right <= left
                or f_left >= right
            )
            covered[f_top:f_bottom, f_left:f_right] = True
        assert not image[~covered].any()
        assert np.all(
            image[..., 0] == image[..., 2]
        )  # gray, repeated over the channels
    # Every fragment holds ink: clutter, not empty crops.
    for image, fragments in zip(
        dataset.train.images, dataset.train.clutter_boxes
    ):
        for f_top, f_left, f_bottom, f_right in fragments:
            assert image[f_top:f_bottom, f_left:f_right].any()


def test_val_images_use_only_held_out_digits_and_classes_are_balanced():
    dataset = cluttered.load_cluttered_digits(
        48, train_images=500, val_images=100, clutter=2
    )
    assert not set(dataset.train.sources) & set(dataset.val.sources)
    counts = np.bincount(dataset.train.labels, minlength=10)
    assert counts.min() == 50 and counts.max() == 50
    assert (
        dataset.train.images.dtype == np.uint8
        and dataset.train.images.shape == (500, 48, 48, 3)
    )
    assert dataset.class_names == tuple("0123456789")
    assert "500 train / 100 val images, 10 classes" in dataset.describe()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(image_size=16), "Received: image_size=16"),
        (dict(train_images=0), "Received: train_images=0"),
        (dict(clutter=-1), "Received: clutter=-1"),
        (dict(val_fraction=0.9), "Received: val_fraction=0.9"),
    ],
)
def test_bad_arguments_fail_in_one_line_naming_the_value(arguments, message):
    with pytest.raises(ValueError, match=message) as error:
        cluttered.load_cluttered_digits(**arguments)
    assert "\n" not in str(error.value)
