"""Where SGE's gates point: measures against a known object box.

The paper's claim (Li, Hu and Yang 2019, Figure 5) is that SGE's gates
enhance the semantic regions of a feature map and suppress noise. Given
`keras_sge.inspect` maps for images where we know which pixels are the object
(e.g. `examples.training.cluttered`), these measures put numbers on it.

Feature-map cells are compared with input pixels through the network's
geometry: cell `i` of a map with stride `s` is centred on input pixel
`first_centre + s * i` (`first_centre = 0` in `keras_sge.applications`'
ResNets, whose torch-style explicit padding centres every cell's receptive
field on a multiple of its stride), and every input pixel takes the value of
the cell centred nearest to it. So each measure below is a statement about
input pixels:

- `gate_ratio`: the mean gate over the pixels of the object's box divided
  by the mean gate over the pixels off it; 1 means no preference, which is
  exactly what an SGE layer at initialisation gives (gamma = 0: every gate
  is `sigmoid(beta)`).
- `gate_auc`: per image and group, the probability that a random pixel of
  the box has a higher gate than a random pixel off it (ties count half),
  i.e. the area under the ROC curve of the gate as an object-vs-rest
  detector, averaged over images and groups; 0.5 means no preference. It
  counts the direction of a group's preference, not its strength.
- `gate_spread`: the gate's standard deviation over the positions of a map,
  averaged over images and groups; 0 for a flat gate (as at initialisation).
- `norm_ratio_before` / `norm_ratio_after`: the paper's feature-norm view,
  the mean per-group feature norm (`SGEMaps.norm_before` / `norm_after`) on
  the box divided by that off it, before and after SGE. SGE enhances the
  object when the ratio after exceeds the ratio before.

With a second region, e.g. the clutter's boxes, the same ratios compare the
object with that region alone (`gate_ratio_vs_clutter`,
`norm_ratio_*_vs_clutter`): a gate that fires on any stroke has a high
`gate_ratio` but a `gate_ratio_vs_clutter` near 1.
"""

import numpy as np

# Images per chunk of the pairwise AUC (memory: chunk * G * (H*W)^2 floats).
_AUC_CHUNK = 8


def box_masks(boxes, image_size):
    """Pixel masks of boxes: `(N, 4)` -> `(N, S, S)`, or `(N, K, 4)` -> their union.

    Boxes are `(top, left, bottom, right)`, bottom and right exclusive.
    """
    boxes = np.asarray(boxes)
    if boxes.ndim == 2:
        boxes = boxes[:, None]
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(
            "`boxes` must be (N, 4) or (N, K, 4) (top, left, bottom, right). "
            f"Received: shape={boxes.shape}"
        )
    pixels = np.arange(image_size)
    rows = (pixels >= boxes[..., 0, None]) & (
        pixels < boxes[..., 2, None]
    )  # (N, K, S)
    cols = (pixels >= boxes[..., 1, None]) & (pixels < boxes[..., 3, None])
    return (rows[..., :, None] & cols[..., None, :]).any(axis=1)


def pixel_cells(image_size, cells, stride=None, first_centre=0.0):
    """The cell of a map with `cells` cells that each input pixel falls in.

    Args:
        image_size: pixels along the axis.
        cells: cells of the feature map along the same axis.
        stride: input pixels per cell (default `image_size / cells`; pass the
            network's stride when the input is not a multiple of it).
        first_centre: the input pixel on which cell 0 is centred.

    Returns:
        `(image_size,)` int array: for each pixel, the cell centred nearest.
    """
    stride = image_size / cells if stride is None else stride
    nearest = np.floor((np.arange(image_size) - first_centre) / stride + 0.5)
    return np.clip(nearest, 0, cells - 1).astype("int64")


def cell_edges(image_size, cells, stride=None, first_centre=0.0):
    """The pixel edges of the cells, as `pixel_cells` assigns pixels to them.

    Returns:
        `(cells + 1,)` floats: cell `i` covers the pixels between edges `i`
        and `i + 1`, on half-pixel boundaries (for drawing a map over its
        image).
    """
    first_pixels = np.searchsorted(
        pixel_cells(image_size, cells, stride, first_centre), np.arange(cells)
    )
    return np.append(first_pixels, image_size) - 0.5


def cell_counts(masks, map_shape, stride=None, first_centre=0.0):
    """How many pixels of each mask fall in each cell: `(N, S, S)` -> `(N, h, w)`."""
    masks = np.asarray(masks, "float64")
    size = masks.shape[-1]
    rows = np.eye(map_shape[0])[
        pixel_cells(size, map_shape[0], stride, first_centre)
    ]  # (S, h)
    cols = np.eye(map_shape[1])[
        pixel_cells(size, map_shape[1], stride, first_centre)
    ]  # (S, w)
    return np.einsum("pi,npq,qj->nij", rows, masks, cols)


def weighted_mean(values, weights):
    """The mean of `(N, h, w, G)` values over images, cells and groups,
    each cell weighted by `(N, h, w)` pixel counts."""
    values = np.asarray(values, "float64")
    return float(
        np.einsum("nhwg,nhw->", values, weights)
        / (weights.sum() * values.shape[-1])
    )


def ratio(values, inside, outside):
    """`weighted_mean(values, inside) / weighted_mean(values, outside)`."""
    return weighted_mean(values, inside) / weighted_mean(values, outside)


def weighted_auc(values, positive, negative):
    """Per image and group, P(value at a positive pixel > at a negative one).

    Ties count half. Pixels are weighted through their cells' counts.

    Args:
        values: `(N, h, w, G)`.
        positive, negative: `(N, h, w)` pixel counts per cell; every image
            needs some of each.

    Returns:
        `(N, G)` float64 AUCs.
    """
    n, h, w, groups = values.shape
    # float32 is exact here: the gates are float32 and the counts integers.
    scores = (
        np.asarray(values, "float32")
        .reshape(n, h * w, groups)
        .transpose(0, 2, 1)
    )  # (N, G, K)
    positive, negative = (
        np.asarray(m, "float32").reshape(n, h * w) for m in (positive, negative)
    )
    if (positive.sum(1) == 0).any() or (negative.sum(1) == 0).any():
        raise ValueError(
            "weighted_auc: every image needs pixels in both regions"
        )
    aucs = np.empty((n, groups))
    for start in range(0, n, _AUC_CHUNK):
        part = slice(start, start + _AUC_CHUNK)
        s = scores[part]
        # 1 where the positive pixel's value is higher, 1/2 on ties, 0 below.
        wins = np.sign(s[..., :, None] - s[..., None, :]) * np.float32(
            0.5
        ) + np.float32(0.5)  # (n, G, K, K)
        beaten = wins @ negative[part, None, :, None]  # (n, G, K, 1)
        aucs[part] = np.einsum(
            "nk,ngk->ng",
            positive[part].astype("float64"),
            beaten[..., 0].astype("float64"),
        )
    totals = positive.sum(1, dtype="float64") * negative.sum(1, dtype="float64")
    return aucs / totals[:, None]


def channels_last(maps):
    """`(gate, norm_before, norm_after)` of an `SGEMaps`, as `(N, h, w, G)`."""
    arrays = (maps.gate, maps.norm_before, maps.norm_after)
    if maps.data_format == "channels_first":
        arrays = tuple(np.transpose(a, (0, 2, 3, 1)) for a in arrays)
    return arrays


def measure_layer(
    maps, boxes, image_size, clutter_boxes=None, stride=None, first_centre=0.0
):
    """The localisation measures of one SGE layer (see the module docstring).

    Args:
        maps: the layer's `keras_sge.inspect.SGEMaps` for N images.
        boxes: `(N, 4)` the object's box in each image, input pixels
            `(top, left, bottom, right)`.
        image_size: the side of the (square) input images.
        clutter_boxes: optional `(N, K, 4)` boxes of a second region; adds
            the `*_vs_clutter` measures.
        stride: the layer's stride in input pixels (default: `image_size`
            over the map's side).
        first_centre: the input pixel on which cell 0 is centred.

    Returns:
        A dict of floats, plus `map_shape`.
    """
    gate, norm_before, norm_after = channels_last(maps)
    if len(boxes) != len(gate):
        raise ValueError(
            f"{len(boxes)} boxes for {len(gate)} images in {maps.name!r}"
        )
    map_shape = gate.shape[1:3]
    digit_mask = box_masks(boxes, image_size)
    digit = cell_counts(digit_mask, map_shape, stride, first_centre)
    off_digit = cell_counts(~digit_mask, map_shape, stride, first_centre)
    result = {
        "map_shape": list(map_shape),
        "gate_ratio": ratio(gate, digit, off_digit),
        "gate_auc": float(weighted_auc(gate, digit, off_digit).mean()),
        "gate_mean": float(gate.mean()),
        "gate_spread": float(gate.std(axis=(1, 2), dtype="float64").mean()),
        "norm_ratio_before": ratio(norm_before, digit, off_digit),
        "norm_ratio_after": ratio(norm_after, digit, off_digit),
    }
    if clutter_boxes is not None:
        clutter = cell_counts(
            box_masks(clutter_boxes, image_size) & ~digit_mask,
            map_shape,
            stride,
            first_centre,
        )
        result.update(
            gate_ratio_vs_clutter=ratio(gate, digit, clutter),
            norm_ratio_before_vs_clutter=ratio(norm_before, digit, clutter),
            norm_ratio_after_vs_clutter=ratio(norm_after, digit, clutter),
        )
    return result
