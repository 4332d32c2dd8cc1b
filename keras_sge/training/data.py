"""Input pipelines: ImageNet-layout image folders and an embedded dataset.

Two sources share one `tf.data` pipeline:

- an ImageNet-layout directory, `train/<class>/*.jpg` and `val/<class>/*.jpg`
  (`scan_image_folder`), read and decoded in parallel;
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
"""

import concurrent.futures
import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_sge.applications import center_crop_resize
from keras_sge.applications import preprocess_input

# Magic numbers of the formats `tf.io.decode_image` reads.
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}


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

    def describe(self):
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val "
            f"images, {len(self.class_names)} classes"
        )


# --------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------


def load_digits(image_size=32, val_fraction=0.2, seed=0):
    """scikit-learn's 8x8 handwritten digits as RGB images.

    1797 images of the digits 0-9 (the UCI optical-recognition test set),
    upsampled bilinearly to `image_size` and repeated over three channels,
    split into train and val with stratification (fixed by `seed`).

    NumPy and SciPy only: TensorFlow must not start before the strategy is
    created (`MultiWorkerMirroredStrategy` configures it).
    """
    from scipy import ndimage
    from sklearn import datasets
    from sklearn import model_selection

    digits = datasets.load_digits()
    zoom = image_size / digits.images.shape[-1]
    gray = ndimage.zoom(digits.images * (255.0 / 16.0), (1, zoom, zoom), order=1, grid_mode=True, mode="nearest")
    images = np.repeat(np.clip(np.round(gray), 0, 255).astype("uint8")[..., None], 3, axis=-1)
    labels = digits.target.astype("int32")
    train, val = model_selection.train_test_split(
        np.arange(len(labels)), test_size=val_fraction, random_state=seed, stratify=labels
    )
    return ImageData(
        name="digits (scikit-learn, embedded)",
        train=Split(labels=labels[train], images=images[train]),
        val=Split(labels=labels[val], images=images[val]),
        class_names=tuple(str(name) for name in digits.target_names),
    )


def scan_image_folder(root):
    """Lists and checks an ImageNet-layout directory.

    Expects `root/train/<class>/<image>` and `root/val/<class>/<image>`;
    the sorted train class folders define the labels, and val may hold a
    subset of them. Every file's first bytes are checked, so a file that is
    not a JPEG, PNG, GIF or BMP image fails now, in one line, rather than
    hours into training. Hidden files (`.DS_Store`, ...) are skipped.

    Raises:
        DataError: a missing folder, an empty class folder, a stray or
            non-image file, or a val class that train does not have.
    """
    if not os.path.isdir(root):
        raise DataError(f"data directory not found: {root}")
    class_names = _class_folders(os.path.join(root, "train"))
    train = _scan_split(os.path.join(root, "train"), class_names, class_names)
    val = _scan_split(os.path.join(root, "val"), _class_folders(os.path.join(root, "val")), class_names)
    return ImageData(name=root, train=train, val=val, class_names=tuple(class_names))


def _class_folders(split_dir):
    if not os.path.isdir(split_dir):
        raise DataError(f"expected an ImageNet-layout folder, missing directory: {split_dir}")
    names, strays = [], []
    for entry in os.scandir(split_dir):
        if entry.name.startswith("."):
            continue
        (names if entry.is_dir() else strays).append(entry.name)
    if strays:
        raise DataError(f"expected only class folders in {split_dir}, found file: {sorted(strays)[0]}")
    if not names:
        raise DataError(f"no class folders in {split_dir}")
    return sorted(names)


def _scan_split(split_dir, names, class_names):
    paths, labels = [], []
    for name in names:
        if name not in class_names:
            raise DataError(f"class folder {os.path.join(split_dir, name)} has no counterpart in train/")
        files = sorted(
            entry.path
            for entry in os.scandir(os.path.join(split_dir, name))
            if not entry.name.startswith(".")
        )
        if not files:
            raise DataError(f"empty class folder: {os.path.join(split_dir, name)}")
        paths += files
        labels += [class_names.index(name)] * len(files)
    sizes = _check_images(paths)
    return Split(labels=np.asarray(labels, "int32"), paths=np.asarray(paths), num_bytes=sum(sizes))


def _check_images(paths):
    """Returns the file sizes; raises DataError on the first non-image."""
    # Many small reads: threads hide the file system's latency.
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(_sniff, paths))
    for path, (kind, _) in zip(paths, results):
        if kind is None:
            raise DataError(f"not a JPEG/PNG/GIF/BMP image: {path}")
    return [size for _, size in results]


def _sniff(path):
    if not os.path.isfile(path):
        return None, 0
    with open(path, "rb") as f:
        head = f.read(8)
        size = os.fstat(f.fileno()).st_size
    kind = next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), None)
    return kind, size


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
    """

    image_size: int
    num_classes: int
    seed: int = 0
    crop_scale: tuple = (0.08, 1.0)
    flip: bool = True
    cache_bytes: int = 0

    def train(self, split, input_context, global_batch, steps_per_epoch, start_step=0):
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
            return preprocess_input(image), self._one_hot(tf.gather(labels, index))

        stream = _stream(len(split), steps_per_epoch, global_batch, self.seed, start_step)
        return (
            stream.filter(is_mine)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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
        would give some replicas), and weighted metrics stay exact.
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
            return eval_image(image, self.image_size), self._one_hot(tf.gather(labels, index)), weight

        dataset = (
            tf.data.Dataset.range(padded)
            .shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        )
        if padded * self.image_size**2 * 3 * 4 <= self.cache_bytes:
            dataset = dataset.cache()
        return dataset.batch(per_replica, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE)

    def _one_hot(self, label):
        return tf.one_hot(label, self.num_classes)

    def _augment(self, image, encoded, seed):
        """Random-resized crop and flip, seeded statelessly by `seed`."""
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if self.crop_scale is None:
            image = decode(image) if encoded else image
        elif encoded:
            image = tf.cond(
                tf.io.is_jpeg(image),
                # Decoding only the crop window saves much of JPEG's cost.
                lambda: tf.io.decode_and_crop_jpeg(
                    image, self._crop_window(tf.io.extract_jpeg_shape(image), crop_seed), channels=3
                ),
                lambda: self._crop(decode(image), crop_seed),
            )
        else:
            image = self._crop(image, crop_seed)
        image = tf.image.resize(image, (self.image_size, self.image_size), antialias=True)
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
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

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


def eval_image(image, image_size):
    """The evaluation preprocessing of one uint8 image (or a batch)."""
    return preprocess_input(center_crop_resize(image, image_size))


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
            tf.range(num_images, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), e])
        )
        positions = e * per_epoch + tf.range(per_epoch, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((positions, order[:per_epoch]))

    first_epoch, done = divmod(start_step, steps_per_epoch)
    return tf.data.Dataset.counter(first_epoch).flat_map(epoch).skip(done * global_batch)
