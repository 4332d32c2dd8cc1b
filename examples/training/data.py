"""Input pipelines: image folders and an embedded dataset.

Two sources share one `tf.data` pipeline:

- an image folder (`scan_image_folder`), in the ImageNet layout,
  `train/<class>/*.jpg` and `val/<class>/*.jpg`, or one folder per class
  split into train and val by a seeded, stratified fraction; read and
  decoded in parallel;
- scikit-learn's handwritten digits (`load_digits`), a small real dataset
  shipped inside the scikit-learn wheel, held in memory.

The training stream is a pure function of `(seed, step)`: epoch `e` visits
the images in a permutation seeded by `(seed, e)`, and every augmentation is
a stateless random op seeded by the image's position in the stream. Two
properties follow, and the training script relies on both:

- **Resumable mid-epoch.** `Pipeline.train(..., start_step=k)` yields exactly
  what an uninterrupted run would have yielded from step `k` on, and getting
  there skips integers, not decoded images.
- **Independent of the cluster's shape.** Per-replica batch `j` is the
  `j`-th run of `per_replica_batch` images of the stream; replica `r` gets
  batch `k * R + r` at step `k`, whether the `R` replicas sit on one machine
  or on several. Each input pipeline (one per worker) keeps only its own
  replicas' images *before* reading or decoding them, so workers read
  disjoint shards.

One bad file must not cost a long run. At start every file of a folder
gets a cheap structural check (`image_files`): images TensorFlow would
misread or refuse are converted once to PNG, unreadable files are listed
and skipped (or the run is refused). What the check cannot see (corrupt
data inside a complete file) is caught when decoding fails at run time:
the training stream drops that image with a warning
(`Dataset.ignore_errors`), and the evaluation pass replaces it with a
weight-0 blank at the end of the pass. The trade-offs: the properties above
hold exactly for files that decode; after a dropped image its input
pipeline runs one image ahead of the pure stream (batches stay full, so
every replica still gets one batch per step and multi-worker runs stay in
step), and a val image that fails counts in no metric.
"""

import concurrent.futures
import contextlib
import dataclasses
import os
import tempfile
import zlib

import numpy as np
import tensorflow as tf

from examples.training import image_files
from keras_sge.applications import center_crop_resize
from keras_sge.applications import preprocess_input

# What to do with image files that cannot be decoded (see `scan_image_folder`).
BAD_IMAGE_POLICIES = ("skip", "refuse")
# How a network wants its RGB input in [0, 255] scaled, in the names of
# keras.applications' `preprocess_input(mode=...)`: "torch" (ImageNet mean
# and std) is the SGE-ResNets' own; "caffe" (BGR, ImageNet mean
# subtracted), "tf" ([-1, 1]) and "none" (as is: the network rescales
# inside itself) are those of keras.applications' families.
PREPROCESSING_MODES = ("torch", "caffe", "tf", "none")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
BAD_IMAGES_REPORT = "bad_images.txt"


class DataError(ValueError):
    """A problem with the input data, reported as one line."""


@dataclasses.dataclass(frozen=True)
class Split:
    """The images and labels of one split (train or val).

    Exactly one of `images` (decoded uint8 `(N, H, W, 3)`, in memory) and
    `paths` (encoded image files) is set.
    """

    labels: np.ndarray
    images: np.ndarray = None
    paths: np.ndarray = None
    num_bytes: int = 0

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A dataset: its train and val splits and its class names."""

    name: str
    train: Split
    val: Split
    class_names: tuple
    # What the folder check found (see `scan_image_folder`): remarks for
    # `describe`, `(path, reason)` of the skipped files, `(path, PNG, reason)`
    # of the converted ones, and the file listing the skipped ones.
    notes: tuple = ()
    skipped: tuple = ()
    converted: tuple = ()
    report_path: str = None

    def describe(self):
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val "
            f"images, {len(self.class_names)} classes"
            + "".join(f"; {note}" for note in self.notes)
        )

    def skipped_lines(self, limit=20):
        """Console lines naming the skipped files, the first `limit` of them."""
        if not self.skipped:
            return []
        where = (
            f", all listed in {self.report_path}" if self.report_path else ""
        )
        lines = [
            f"Skipping {len(self.skipped)} unreadable image file(s){where}:"
        ]
        lines += [
            f"  {path}: {reason}" for path, reason in self.skipped[:limit]
        ]
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        return lines


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


def upscaled_digits(size):
    """scikit-learn's digits, `(1797, size, size)` uint8, and their labels.

    Upsampled bilinearly from 8x8, with ink scaled from 0-16 to 0-255.
    """
    from scipy import ndimage
    from sklearn import datasets

    digits = datasets.load_digits()
    zoom = size / digits.images.shape[-1]
    gray = ndimage.zoom(
        digits.images * (255.0 / 16.0),
        (1, zoom, zoom),
        order=1,
        grid_mode=True,
        mode="nearest",
    )
    return np.clip(np.round(gray), 0, 255).astype(
        "uint8"
    ), digits.target.astype("int32")


def load_digits(image_size=32, val_fraction=0.2, seed=0):
    """scikit-learn's 8x8 handwritten digits as RGB images.

    1797 images of the digits 0-9 (the UCI optical-recognition test set),
    upsampled bilinearly to `image_size` and repeated over three channels,
    split into train and val with stratification (fixed by `seed`).

    NumPy and SciPy only: TensorFlow must not start before the strategy is
    created (`MultiWorkerMirroredStrategy` configures it).
    """
    from sklearn import model_selection

    gray, labels = upscaled_digits(image_size)
    images = np.repeat(gray[..., None], 3, axis=-1)
    train, val = model_selection.train_test_split(
        np.arange(len(labels)),
        test_size=val_fraction,
        random_state=seed,
        stratify=labels,
    )
    return ImageData(
        name="digits (scikit-learn, embedded)",
        train=Split(labels=labels[train], images=images[train]),
        val=Split(labels=labels[val], images=images[val]),
        class_names=tuple(str(name) for name in np.unique(labels)),
    )


def scan_image_folder(
    root,
    output_dir=None,
    bad_images="skip",
    max_bad_fraction=0.01,
    val_fraction=0.2,
    seed=0,
):
    """Lists and checks an image folder, in either of two layouts.

    - ImageNet layout: `root/train/<class>/<image>` and
      `root/val/<class>/<image>`; the sorted train class folders define the
      labels, and val may hold a subset of them.
    - One folder per class, `root/<class>/<image>` (what
      `keras.utils.image_dataset_from_directory` reads); files beside the
      class folders (a LICENSE) are ignored. Val is a seeded, stratified
      `val_fraction` of each class (`_split_per_class`): the same for a given
      `seed` on every worker and every rerun.

    Every file is checked at start (`image_files.check_files`, cheap): files
    that TensorFlow would misread or refuse but Pillow decodes are converted
    once to PNG under `output_dir/converted/`; unreadable ones (truncated,
    not an image: a `.txt`, `Thumbs.db`) are listed, path and reason, in
    `output_dir/bad_images.txt`, and then skipped (`bad_images="skip"`) or
    refused (`"refuse"`: a DataError naming the first). Skipping stops at
    `max_bad_fraction` of the files: more than that is a broken copy or the
    wrong folder, not a few bad files, and is refused too. Hidden files
    (`.DS_Store`, ...) are not listed. Without `output_dir`, conversions go
    to a temporary folder and no list is written.

    Raises:
        DataError: a missing folder, an empty class folder, a stray file
            beside the class folders of train/ or val/, a val class that
            train does not have, an empty split, or unreadable files refused.
    """
    if bad_images not in BAD_IMAGE_POLICIES:
        raise ValueError(
            f"bad_images must be one of {BAD_IMAGE_POLICIES}, got {bad_images!r}"
        )
    if not 0 <= max_bad_fraction <= 1:
        raise DataError(
            f"the fraction of unreadable files to skip must be in [0, 1], got {max_bad_fraction}"
        )
    if not os.path.isdir(root):
        raise DataError(f"data directory not found: {root}")
    class_names, splits, notes = list_image_folder(root, val_fraction, seed)
    paths = splits["train"][0] + splits["val"][0]
    converted_dir = (
        os.path.join(output_dir, "converted")
        if output_dir
        else _temporary_converted_dir()
    )
    check = image_files.check_files(paths, root, converted_dir)
    report = _report_bad_files(check.bad, output_dir)
    _enforce_bad_image_policy(
        check.bad, len(paths), root, report, bad_images, max_bad_fraction
    )
    if check.converted:
        notes.append(
            f"{len(check.converted)} converted to PNG in {converted_dir}"
        )
    if check.bad:
        notes.append(
            f"{len(check.bad)} unreadable skipped"
            + (f" (listed in {report})" if report else "")
        )
    num_train = len(splits["train"][0])
    train = _checked_split(splits["train"][1], check, slice(0, num_train))
    val = _checked_split(splits["val"][1], check, slice(num_train, len(paths)))
    for name, split in (("train", train), ("val", val)):
        if not len(split):
            raise DataError(f"no readable {name} images in {root}")
    return ImageData(
        name=root,
        train=train,
        val=val,
        class_names=tuple(class_names),
        notes=tuple(notes),
        skipped=check.bad,
        converted=check.converted,
        report_path=report,
    )


def folder_classes(root):
    """The class names of an image folder, either layout, from its folder names.

    Cheap (no file is listed or read): what a run directory is bound to
    can be checked before the folder is scanned.

    Raises:
        DataError: a missing folder, or one without class folders.
    """
    if not os.path.isdir(root):
        raise DataError(f"data directory not found: {root}")
    if is_imagenet_layout(root):
        return tuple(_class_folders(os.path.join(root, "train")))
    return tuple(_class_folders(root, ignore_files=True))


def is_imagenet_layout(root):
    """Whether `root` holds `train/` (and `val/`) rather than one folder per class."""
    return os.path.isdir(os.path.join(root, "train"))


def list_image_folder(root, val_fraction=0.2, seed=0):
    """`(class names, {split: (paths, labels)}, notes)` of either layout.

    The files of an image folder and their split, before any file is read
    (`scan_image_folder` then checks them): `root/train/<class>/*` and
    `root/val/<class>/*`, or one folder per class, `root/<class>/*`, split
    by a seeded, stratified `val_fraction` of each class. `notes` are lines
    about the split to print.
    """
    if is_imagenet_layout(root):
        class_names = _class_folders(os.path.join(root, "train"))
        _check_several_classes(os.path.join(root, "train"), class_names)
        splits = {
            "train": _list_split(
                os.path.join(root, "train"), class_names, class_names
            ),
            "val": _list_split(
                os.path.join(root, "val"),
                _class_folders(os.path.join(root, "val")),
                class_names,
            ),
        }
        return class_names, splits, []
    if not 0 < val_fraction < 1:
        raise DataError(
            f"the validation fraction must be in (0, 1), got {val_fraction}"
        )
    class_names = _class_folders(root, ignore_files=True)
    _check_several_classes(root, class_names)
    paths, labels = _list_split(root, class_names, class_names)
    splits = _split_per_class(paths, labels, class_names, val_fraction, seed)
    notes = [
        f"val: a seeded {val_fraction * 100:g}% of each class (seed {seed})"
    ]
    return class_names, splits, notes + _single_image_note(labels, class_names)


def _check_several_classes(folder, class_names):
    # One class trains to a meaningless "accuracy 1.0": refuse it.
    if len(class_names) < 2:
        raise DataError(
            f"{folder} has a single class folder, {class_names[0]!r}: a "
            "classifier needs two classes or more, one folder each"
        )


def _single_image_note(labels, class_names, limit=5):
    """A note naming the classes of one image: none of them is validated."""
    counts = np.bincount(labels, minlength=len(class_names))
    single = [name for name, count in zip(class_names, counts) if count == 1]
    if not single:
        return []
    names = ", ".join(repr(name) for name in single[:limit])
    more = f" and {len(single) - limit} more" if len(single) > limit else ""
    return [
        f"note: {len(single)} class(es) with a single image, kept for "
        f"training, so none in val: {names}{more}"
    ]


def _class_folders(split_dir, ignore_files=False):
    if not os.path.isdir(split_dir):
        raise DataError(
            f"expected an ImageNet-layout folder, missing directory: {split_dir}"
        )
    names, strays = [], []
    for entry in os.scandir(split_dir):
        if entry.name.startswith("."):
            continue
        (names if entry.is_dir() else strays).append(entry.name)
    if strays and not ignore_files:
        raise DataError(
            f"expected only class folders in {split_dir}, found file: {sorted(strays)[0]}"
        )
    if not names:
        raise DataError(f"no class folders in {split_dir}")
    return sorted(names)


def _list_split(split_dir, names, class_names):
    """`(paths, labels)` of the class folders `names` of one split."""
    paths, labels = [], []
    for name in names:
        if name not in class_names:
            raise DataError(
                f"class folder {os.path.join(split_dir, name)} has no counterpart in train/"
            )
        files = sorted(
            entry.path
            for entry in os.scandir(os.path.join(split_dir, name))
            if not entry.name.startswith(".")
        )
        if not files:
            raise DataError(
                f"empty class folder: {os.path.join(split_dir, name)}"
            )
        paths += files
        labels += [class_names.index(name)] * len(files)
    return paths, labels


def _split_per_class(paths, labels, class_names, val_fraction, seed):
    """A seeded, stratified train/val split of one folder per class.

    In each class, the first `round(n * val_fraction)` files of a permutation
    seeded by `(seed, class name)` go to val (at least one, and never all,
    of a class of two or more). It depends only on the seed and the class's
    own file names, not on other classes or on the machine; both splits
    keep the sorted order.
    """
    paths, labels = np.asarray(paths), np.asarray(labels)
    in_val = np.zeros(len(paths), bool)
    for label, name in enumerate(class_names):
        members = np.flatnonzero(labels == label)
        count = len(members)
        num_val = (
            min(max(round(count * val_fraction), 1), count - 1)
            if count > 1
            else 0
        )
        rng = np.random.default_rng([seed % 2**32, zlib.crc32(name.encode())])
        in_val[members[rng.permutation(count)[:num_val]]] = True
    if not in_val.any():
        raise DataError(
            "the validation split is empty: every class has a single image"
        )
    return {
        "train": (paths[~in_val].tolist(), labels[~in_val].tolist()),
        "val": (paths[in_val].tolist(), labels[in_val].tolist()),
    }


def _checked_split(labels, check, part):
    """The split of the files `part` of `check` that can be read."""
    keep = check.keep[part]
    return Split(
        labels=np.asarray(labels, "int32")[keep],
        paths=check.paths[part][keep],
        num_bytes=int(check.sizes[part][keep].sum()),
    )


def _report_bad_files(bad, output_dir):
    """Writes `output_dir/bad_images.txt` (path TAB reason); returns its path.

    A clean folder removes the list an earlier run may have left. Written
    under a temporary name and renamed: workers sharing `output_dir` write
    the same list.
    """
    if not output_dir:
        return None
    report = os.path.join(output_dir, BAD_IMAGES_REPORT)
    if not bad:
        with contextlib.suppress(FileNotFoundError):
            os.remove(report)
        return None
    os.makedirs(output_dir, exist_ok=True)
    fd, temporary = tempfile.mkstemp(
        dir=output_dir, prefix=".bad_images-", suffix=".txt"
    )
    with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.writelines(f"{path}\t{reason}\n" for path, reason in bad)
    os.replace(temporary, report)
    return report


def _enforce_bad_image_policy(
    bad, total, root, report, policy, max_bad_fraction
):
    """Raises DataError if the unreadable files must not be skipped."""
    if not bad:
        return
    path, reason = bad[0]
    where = f"; all listed in {report}" if report else ""
    if policy == "refuse":
        raise DataError(
            f"{len(bad)} unreadable image file(s) in {root}, the first: {path} ({reason}){where}"
        )
    if len(bad) > max_bad_fraction * total:
        raise DataError(
            f"{len(bad)} of {total} files in {root} are unreadable "
            f"({len(bad) / total:.1%}), more than the "
            f"{max_bad_fraction:.1%} that may be skipped; the first: {path} ({reason}){where}"
        )


def _temporary_converted_dir():
    return os.path.join(
        tempfile.gettempdir(), f"keras_sge-converted-{os.getpid()}"
    )


# --------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Builds the `tf.data` datasets of one run.

    Args:
        image_size: side of the square images the model sees.
        num_classes: labels are one-hot over this many classes (the loss
            needs one-hot labels for label smoothing).
        seed: seeds the epoch permutations and the augmentation.
        crop_scale: area range of the random-resized crop (0.08-1 in the
            paper; `None` disables cropping: the image is resized whole).
        flip: whether to flip training images horizontally at random.
        cache_bytes: in-memory cache budget per split, in bytes. Training
            files whose total size fits are read once and kept encoded;
            the val set is cached decoded and cropped if that fits.
        preprocessing: how the model wants its input scaled, one of
            `PREPROCESSING_MODES` (see `preprocess`).
    """

    image_size: int
    num_classes: int
    seed: int = 0
    crop_scale: tuple = (0.08, 1.0)
    flip: bool = True
    cache_bytes: int = 0
    preprocessing: str = "torch"

    def train(
        self, split, input_context, global_batch, steps_per_epoch, start_step=0
    ):
        """The training stream of one input pipeline, from `start_step` on.

        Endless and batched per replica; see the module docstring for
        which images each pipeline gets.
        """
        per_replica = input_context.get_per_replica_batch_size(global_batch)
        replicas = input_context.num_replicas_in_sync
        local_replicas = replicas // input_context.num_input_pipelines

        def is_mine(position, index):
            replica = (position // per_replica) % replicas
            return replica // local_replicas == input_context.input_pipeline_id

        read, encoded = self._reader(split, self.cache_bytes)
        labels = tf.constant(split.labels)

        def load(position, index):
            seed = tf.stack([tf.constant(self.seed, tf.int64), position])
            image = self._augment(read(index), encoded, seed)
            return preprocess(image, self.preprocessing), self._one_hot(
                tf.gather(labels, index)
            )

        stream = _stream(
            len(split), steps_per_epoch, global_batch, self.seed, start_step
        )
        return (
            stream.filter(is_mine)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            # A file the start-up check let through but that fails to decode
            # is dropped with a warning, not the run (module docstring).
            .ignore_errors(log_warning=True)
            .batch(per_replica, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
        )

    def evaluate(self, split, input_context, global_batch):
        """Passes over `split` with the evaluation geometry, repeated.

        Yields `(images, one-hot labels, sample weights)`; each pass is
        `eval_steps(len(split), global_batch)` batches (what Keras's
        `validation_steps` expects: it keeps one iterator for the whole of
        `fit`). The split is
        padded, with weight-0 copies of its last image, to whole global
        batches: every replica then gets the same number of full batches
        (TensorFlow's CPU convolution fails on the empty batches a ragged end
        would give some replicas), and weighted metrics stay exact. An image
        that fails to decode is replaced by a weight-0 blank, so the count
        of batches holds.
        """
        read, encoded = self._reader(split, self.cache_bytes)
        labels = tf.constant(split.labels)
        per_replica = input_context.get_per_replica_batch_size(global_batch)
        padded = eval_steps(len(split), global_batch) * global_batch

        def load(index):
            weight = tf.cast(index < len(split), tf.float32)
            index = tf.minimum(index, len(split) - 1)
            image = read(index)
            if encoded:
                image = decode(image)
            return (
                eval_image(image, self.image_size, self.preprocessing),
                self._one_hot(tf.gather(labels, index)),
                weight,
            )

        dataset = (
            tf.data.Dataset.range(padded)
            .shard(
                input_context.num_input_pipelines,
                input_context.input_pipeline_id,
            )
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        )
        if encoded:
            # An image that fails to decode is dropped, and a weight-0 blank
            # at the end of the pass takes its place: every pass keeps its
            # number of batches on every replica.
            shard_size = len(
                range(
                    input_context.input_pipeline_id,
                    padded,
                    input_context.num_input_pipelines,
                )
            )
            blank = (
                tf.zeros([self.image_size] * 2 + [3]),
                tf.zeros([self.num_classes]),
                tf.constant(0.0),
            )
            dataset = (
                dataset.ignore_errors(log_warning=True)
                .concatenate(tf.data.Dataset.from_tensors(blank).repeat())
                .take(shard_size)
            )
        if padded * self.image_size**2 * 3 * 4 <= self.cache_bytes:
            dataset = dataset.cache()
        return (
            dataset.batch(per_replica, drop_remainder=True)
            .repeat()
            .prefetch(tf.data.AUTOTUNE)
        )

    def _one_hot(self, label):
        return tf.one_hot(label, self.num_classes)

    def _augment(self, image, encoded, seed):
        """Random-resized crop and flip, seeded statelessly by `seed`."""
        crop_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 2)
        )
        if self.crop_scale is None:
            image = decode(image) if encoded else image
        elif encoded:
            image = tf.cond(
                tf.io.is_jpeg(image),
                # Decoding only the crop window saves much of JPEG's cost.
                lambda: tf.io.decode_and_crop_jpeg(
                    image,
                    self._crop_window(
                        tf.io.extract_jpeg_shape(image), crop_seed
                    ),
                    channels=3,
                ),
                lambda: self._crop(decode(image), crop_seed),
            )
        else:
            image = self._crop(image, crop_seed)
        image = tf.image.resize(
            image, (self.image_size, self.image_size), antialias=True
        )
        if self.flip:
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        return image

    def _crop_window(self, shape, seed):
        """`[top, left, height, width]` of an Inception-style random crop.

        Area in `crop_scale` of the image, aspect ratio in [3/4, 4/3]; after
        10 failed draws the whole image (torchvision falls back to a centre
        crop instead).
        """
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.zeros([1, 0, 4]),
            seed=seed,
            min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=self.crop_scale,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        return tf.concat([begin[:2], size[:2]], axis=0)

    def _crop(self, image, seed):
        window = self._crop_window(tf.shape(image), seed)
        return tf.image.crop_to_bounding_box(
            image, window[0], window[1], window[2], window[3]
        )

    @staticmethod
    def _reader(split, cache_bytes):
        """Returns `read(index)` and whether what it returns is encoded."""
        if split.images is not None:
            images = tf.constant(split.images)
            return (lambda index: tf.gather(images, index)), False
        if split.num_bytes <= cache_bytes:
            # Small enough: read every file once, keep the encoded bytes.
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                blobs = tf.constant(list(pool.map(_read_bytes, split.paths)))
            return (lambda index: tf.gather(blobs, index)), True
        paths = tf.constant(split.paths)
        return (lambda index: tf.io.read_file(tf.gather(paths, index))), True


def eval_steps(num_images, global_batch):
    """Batches in one pass of `Pipeline.evaluate` (the last one padded)."""
    return -(-num_images // global_batch)


def decode(encoded):
    """Decodes a JPEG, PNG, GIF or BMP string to uint8 RGB `(H, W, 3)`."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def eval_image(image, image_size, preprocessing="torch"):
    """The evaluation preprocessing of one uint8 image (or a batch)."""
    return preprocess(center_crop_resize(image, image_size), preprocessing)


def preprocess(images, mode="torch"):
    """Scales RGB images in [0, 255], channels last, as `mode` says.

    `mode` is one of `PREPROCESSING_MODES`; each gives what keras.applications'
    `preprocess_input` of that mode gives, in TensorFlow ops, so that it runs
    in `tf.data` and is traced into the SavedModel, which then serves
    without Keras.
    """
    images = tf.cast(images, tf.float32)
    if mode == "torch":
        return preprocess_input(images)
    if mode == "caffe":
        return images[..., ::-1] - tf.constant(_CAFFE_MEAN_BGR)
    if mode == "tf":
        return images / 127.5 - 1.0
    if mode == "none":
        return images
    raise ValueError(
        f"unknown preprocessing {mode!r}: expected one of {PREPROCESSING_MODES}"
    )


def _read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _stream(num_images, steps_per_epoch, global_batch, seed, start_step):
    """`(position, image index)` pairs of the global stream from `start_step`.

    Epoch `e` is the first `steps_per_epoch * global_batch` images of a
    permutation seeded by `(seed, e)`; `position` counts images from the
    start of training.
    """
    per_epoch = steps_per_epoch * global_batch

    def epoch(e):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_images, dtype=tf.int64),
            seed=tf.stack([tf.constant(seed, tf.int64), e]),
        )
        positions = e * per_epoch + tf.range(per_epoch, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices(
            (positions, order[:per_epoch])
        )

    first_epoch, done = divmod(start_step, steps_per_epoch)
    return (
        tf.data.Dataset.counter(first_epoch)
        .flat_map(epoch)
        .skip(done * global_batch)
    )
