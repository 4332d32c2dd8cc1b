"""Trains a KerasHub RetinaNet with an SGE-ResNet backbone on synthetic data.

    python examples/detect.py        # SGE-ResNet-18, 64x64, minutes on a CPU
    python examples/detect.py --epochs 1 --train-images 64  # a smoke run

The data are made here, offline: the cluttered digits of
`examples.training.cluttered` (scikit-learn's handwritten digits, shipped
in its wheel), one digit per image at a known box, among fragments of other
digits. With `--classes one` (the default) the detector learns to find the
digit and to leave the fragments alone; `--classes digits` asks it for the
digit's class too (see below).

The detector is `keras_hub.models.RetinaNetObjectDetector` on
`keras_hub.models.RetinaNetBackbone(image_encoder=SGEResNetBackbone(...))`,
trained from scratch with RetinaNet's focal loss and a Huber box loss.

It prints and writes to `--output-dir`:

- `metrics.json`: on held-out images, the average precision at IoU 0.5
  and 0.75 (`ap50`, `ap75`: per class, then averaged; VOC's all-point
  interpolation) and,
  for the most confident detection of each image, the mean IoU with the
  true box (`top1_mean_iou`), the share at IoU >= 0.5 (`top1_localised`)
  and the share at IoU >= 0.5 with the right class (`top1_correct`);
- `preset/`: the trained detector as a KerasHub preset
  (`keras_hub.models.ObjectDetector.from_preset(...)` after
  `import keras_sge.hub`).

With `--classes digits`, a few CPU minutes find the digits as well, but
leave their classes near chance: RetinaNet's classification learns from
the few anchors on each object and needs far longer from scratch (on COCO
detectors start from ImageNet weights and train for 90k steps).

Needs the `hub` and `examples` extras (KerasHub, scikit-learn).
"""

import argparse
import json
import os
import sys
import time

# The scripts' TensorFlow-only pieces are the `examples` package of this
# clone (not installed with keras_sge): put the clone on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

# The pyramid levels the detector uses: at 64x64 the digit (32 pixels) sits
# on the stride-8 level's anchors (32 to 50 pixels).
MIN_LEVEL, MAX_LEVEL = 3, 5
# The cluttered digits' boxes: (top, left, bottom, right), in pixels.
BOX_FORMAT = "yxyx"
DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--arch", choices=sorted(DEPTHS), default="resnet18", help="backbone")
    add("--groups", default="64", help="SGE groups, or 'none' (plain ResNet)")
    add(
        "--classes",
        choices=("one", "digits"),
        default="one",
        help="'one': find the digit; 'digits': and tell which (default one)",
    )
    add("--image-size", type=int, default=64, help="image side (default 64)")
    add("--train-images", type=int, default=1024, help="default 1024")
    add("--val-images", type=int, default=256, help="held out; default 256")
    add("--epochs", type=int, default=4, help="default 4")
    add("--batch-size", type=int, default=16, help="default 16")
    add("--learning-rate", type=float, default=1e-3, help="Adam's peak rate")
    add("--seed", type=int, default=0, help="fixes data, weights and order")
    add("--threads", type=int, default=0, help="TensorFlow threads (0: all)")
    add("--output-dir", default="runs/sge_retinanet-digits")
    args = parser.parse_args(argv)
    args.groups = _groups(parser, args.groups)
    for name in ("train_images", "val_images", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            parser.error(
                f"{flag} must be positive. Received: {getattr(args, name)}"
            )
    if args.image_size < 32:
        parser.error(
            "--image-size must be at least 32, the backbone's smallest "
            f"input. Received: {args.image_size}"
        )
    return args


def _groups(parser, value):
    if value.lower() == "none":
        return None
    if not value.isdigit() or int(value) < 1:
        parser.error(
            "--groups must be a positive integer or 'none'. "
            f"Received: {value!r}"
        )
    return int(value)


def make_data(image_size, train_images, val_images, seed, classes="one"):
    """Cluttered digits as `(images, {"boxes", "labels"})` per split.

    Images preprocessed as the backbone expects; one object per image: the
    digit's box (float32 `(N, 1, 4)`, yxyx pixels) and class (int32
    `(N, 1)`; all 0 with `classes="one"`). Returns the two splits and the
    class names.
    """
    from examples.training.cluttered import load_cluttered_digits
    from keras_sge.applications import preprocess_input

    data = load_cluttered_digits(
        image_size, train_images=train_images, val_images=val_images, seed=seed
    )
    one = classes == "one"

    def detection(split):
        labels = np.zeros_like(split.labels) if one else split.labels
        targets = {
            "boxes": split.boxes[:, None, :].astype("float32"),
            "labels": labels[:, None].astype("int32"),
        }
        return preprocess_input(split.images), targets

    names = ("digit",) if one else data.class_names
    return detection(data.train), detection(data.val), names


def build_detector(encoder, num_classes, seed=0):
    """A RetinaNet on `encoder`'s pyramid, its heads as the paper starts them."""
    import keras_hub

    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder,
        min_level=MIN_LEVEL,
        max_level=MAX_LEVEL,
        use_p5=False,
        image_shape=encoder.image_shape,
    )
    # No preprocessor: make_data preprocesses the images once.
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone=backbone,
        num_classes=num_classes,
        bounding_box_format=BOX_FORMAT,
        preprocessor=None,
    )
    start_from_the_prior(detector, seed=seed)
    return detector


def start_from_the_prior(detector, prior=0.01, seed=0):
    """RetinaNet's initialisation of its heads (Lin et al., 2017).

    Convolutions N(0, 0.01), biases 0, and the classification logits'
    bias at probability `prior`: every anchor starts near "background", so
    the focal loss is not swamped by the thousands of easy negatives in
    the first steps. KerasHub 0.32 draws the heads from N(0, 0.05), which
    over four 256-channel convolutions makes the first logits large, and
    gives the prior to the box head rather than the classification head.
    """
    rng = np.random.default_rng(seed)
    for head in (detector.classification_head, detector.box_head):
        for conv in (*head.conv_layers, head.prediction_layer):
            kernel = rng.normal(0.0, 0.01, conv.kernel.shape)
            conv.kernel.assign(kernel.astype("float32"))
            if conv.bias is not None:  # none before a GroupNormalization
                conv.bias.assign(np.zeros(conv.bias.shape, "float32"))
    bias = detector.classification_head.prediction_layer.bias
    logit = -np.log((1 - prior) / prior)
    bias.assign(np.full(bias.shape, logit, "float32"))


def focal_loss():
    """RetinaNet's focal loss: summed over classes, positives weighted 0.25.

    Keras's `BinaryFocalCrossentropy` (KerasHub's default for RetinaNet)
    averages over the classes, which divides the classification gradient
    by their number; the paper sums, with alpha = 0.25.
    """
    import keras

    class SummedFocalCrossentropy(keras.losses.BinaryFocalCrossentropy):
        def call(self, y_true, y_pred):
            classes = keras.ops.shape(y_pred)[-1]
            loss = super().call(y_true, y_pred)
            return loss * keras.ops.cast(classes, loss.dtype)

    return SummedFocalCrossentropy(
        apply_class_balancing=True,
        alpha=0.25,
        from_logits=True,
        reduction="sum",
    )


def schedule(learning_rate, steps):
    """A linear warm-up over the first tenth of the steps, then cosine to 0."""
    import keras

    warmup = max(1, steps // 10)
    return keras.optimizers.schedules.CosineDecay(
        learning_rate / 100,
        decay_steps=max(1, steps - warmup),
        warmup_target=learning_rate,
        warmup_steps=warmup,
    )


def train(detector, train_data, args):
    """Fits the detector; returns the last epoch's losses."""
    import keras

    images, targets = train_data
    steps = args.epochs * -(-len(images) // args.batch_size)
    optimizer = keras.optimizers.Adam(schedule(args.learning_rate, steps))
    detector.compile(optimizer=optimizer, classification_loss=focal_loss())
    history = detector.fit(
        images,
        targets,
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        verbose=2,
    )
    return {key: float(values[-1]) for key, values in history.history.items()}


def detect(detector, images, batch_size):
    """Every detection above confidence 0.05, for the precision-recall curve."""
    import keras_hub

    detector.prediction_decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format=BOX_FORMAT,
        from_logits=True,
        confidence_threshold=0.05,
        max_detections=10,
    )
    return detector.predict(images, batch_size=batch_size, verbose=0)


def box_iou(boxes, box):
    """IoU of `(K, 4)` yxyx boxes with one yxyx box."""
    top = np.maximum(boxes[:, 0], box[0])
    left = np.maximum(boxes[:, 1], box[1])
    bottom = np.minimum(boxes[:, 2], box[2])
    right = np.minimum(boxes[:, 3], box[3])
    intersection = np.clip(bottom - top, 0, None) * np.clip(
        right - left, 0, None
    )
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + (box[2] - box[0]) * (box[3] - box[1]) - intersection
    return intersection / np.maximum(union, 1e-9)


def evaluate(detections, true_boxes, true_labels, num_classes):
    """AP at IoU 0.5 and 0.75, the top detection's IoU and hits; one box per image."""
    top_iou, top_correct = [], []
    records = {0.5: [], 0.75: []}  # (class, confidence, true positive?)
    for i in range(len(true_boxes)):
        count = int(detections["num_detections"][i])
        boxes = np.asarray(detections["boxes"][i][:count], "float32")
        scores = np.asarray(detections["confidence"][i][:count], "float32")
        labels = np.asarray(detections["labels"][i][:count], "int64")
        ious = box_iou(boxes, true_boxes[i, 0]) if count else np.zeros(0)
        right_class = labels == true_labels[i, 0]
        order = np.argsort(-scores, kind="stable")
        for threshold, found in records.items():
            hits = right_class[order] & (ious[order] >= threshold)
            # The true box counts once; more hits on it are false positives.
            hits &= np.cumsum(hits) == 1
            found.extend(zip(labels[order], scores[order], hits))
        best = int(order[0]) if count else None
        top_iou.append(float(ious[best]) if count else 0.0)
        top_correct.append(
            count > 0 and right_class[best] and ious[best] >= 0.5
        )
    top_iou = np.asarray(top_iou)
    true_classes = true_labels[:, 0]
    return {
        "ap50": average_precision(records[0.5], true_classes, num_classes),
        "ap75": average_precision(records[0.75], true_classes, num_classes),
        "top1_mean_iou": float(top_iou.mean()),
        "top1_localised": float(np.mean(top_iou >= 0.5)),
        "top1_correct": float(np.mean(top_correct)),
        "images": int(len(true_boxes)),
    }


def average_precision(records, true_labels, num_classes):
    """Mean over the classes present of VOC's all-point interpolated AP."""
    precisions = []
    for label in range(num_classes):
        positives = int(np.sum(true_labels == label))
        if positives == 0:
            continue
        ranked = sorted(
            (r for r in records if r[0] == label), key=lambda r: -r[1]
        )
        hits = np.asarray([r[2] for r in ranked], "float64")
        if not hits.size:
            precisions.append(0.0)
            continue
        true_positives = np.cumsum(hits)
        ranks = np.arange(1, hits.size + 1)
        recall = np.concatenate([[0.0], true_positives / positives, [1.0]])
        precision = np.concatenate([[1.0], true_positives / ranks, [0.0]])
        # The interpolated envelope: the best precision at any higher recall.
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        precisions.append(float(np.sum(np.diff(recall) * precision[1:])))
    return float(np.mean(precisions))


def configure(args):
    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)


def report(metrics, args):
    print(
        f"Held-out: AP50 {metrics['ap50']:.3f}, AP75 {metrics['ap75']:.3f}; "
        "the most confident box: "
        f"mean IoU {metrics['top1_mean_iou']:.3f}, "
        f"IoU >= 0.5 {metrics['top1_localised']:.3f}, "
        f"and the right class {metrics['top1_correct']:.3f} "
        f"({metrics['seconds']:.0f} s in all). "
        f"Wrote {args.output_dir}/metrics.json and {args.output_dir}/preset"
    )


def main(argv=None):
    args = parse_args(argv)
    configure(args)
    import keras_sge.hub

    start = time.time()
    train_data, val_data, class_names = make_data(
        args.image_size,
        args.train_images,
        args.val_images,
        args.seed,
        args.classes,
    )
    encoder = keras_sge.hub.SGEResNetBackbone(
        depth=DEPTHS[args.arch],
        groups=args.groups,
        image_shape=(args.image_size, args.image_size, 3),
    )
    detector = build_detector(encoder, len(class_names), args.seed)
    name = f"{'SGE-' if args.groups else ''}ResNet-{DEPTHS[args.arch]}"
    print(
        f"RetinaNet on {name}, {detector.count_params():,} parameters, "
        f"{len(class_names)} class(es); {len(train_data[0])} training and "
        f"{len(val_data[0])} held-out {args.image_size}-pixel images"
    )
    losses = train(detector, train_data, args)
    val_images, val_targets = val_data
    detections = detect(detector, val_images, args.batch_size)
    metrics = evaluate(
        detections,
        val_targets["boxes"],
        val_targets["labels"],
        len(class_names),
    )
    metrics["final_losses"] = losses
    metrics["seconds"] = round(time.time() - start, 1)
    metrics["arguments"] = vars(args)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as file:
        json.dump(metrics, file, indent=2)
    detector.save_to_preset(os.path.join(args.output_dir, "preset"))
    report(metrics, args)
    return metrics


if __name__ == "__main__":
    main()
