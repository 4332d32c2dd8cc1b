"""Figures of what SGE does, from `keras_sge.inspect` results.

Needs matplotlib (the `examples` extra: `pip install "keras-sge[examples]"`),
imported only when a figure is drawn. The functions return
`matplotlib.figure.Figure` objects built without `pyplot`, so they touch no
global state and need no display: save them with `figure.savefig(path)`.

Example:

```python
import keras
import numpy as np
import keras_sge
from keras_sge import inspect, plotting

inputs = keras.Input((32, 32, 3))
x = keras.layers.Conv2D(32, 3, padding="same")(inputs)
x = keras_sge.SGE(groups=8, gamma_initializer="random_normal", name="sge")(x)
model = keras.Model(inputs, x)

images = np.random.uniform(0, 255, (2, 32, 32, 3))
maps = inspect.inspect_sge(model, images / 255.0)
plotting.plot_sge_maps(images[0], maps["sge"]).savefig("sge_maps.png")
plotting.plot_activation_histograms(maps).savefig("sge_histograms.png")
```
"""

import numpy as np

from keras_sge.inspect import most_selective_groups

# (SGEMaps attribute, column title) of the grid's map columns.
_COLUMNS = (
    ("norm_before", "norm before SGE"),
    ("gate", "gate"),
    ("norm_after", "norm after SGE"),
)


def plot_sge_maps(
    image,
    maps,
    index=0,
    groups=4,
    alpha=0.5,
    cmap="jet",
    title=None,
    panel_size=1.8,
):
    """A grid: the input image, then per group the norm before SGE, the gate
    and the norm after SGE, each overlaid on the image at its resolution.

    The two norms of a row share one colour scale (0 to the row's largest
    norm before SGE), so what SGE suppresses fades between them; the gate's
    scale is its full range, 0 to 1. Each title gives the panel's maximum
    (the gate's minimum too).

    Args:
        image: the image the model saw, `(H, W, 3)` RGB in [0, 255], before
            `preprocess_input` (a channels-first `(3, H, W)` image is
            transposed).
        maps: the `keras_sge.inspect.SGEMaps` of one layer.
        index: which image of the `maps` batch `image` is.
        groups: a list of group indices, or how many of the most spatially
            selective groups to show (`inspect.most_selective_groups`).
        alpha: the overlay's opacity.
        cmap: the overlay's colormap.
        title: the figure title (default: the layer name and `index`).
        panel_size: the side of one panel, in inches.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    if isinstance(groups, int):
        groups = most_selective_groups(maps, index, groups)
    image = _display_image(image)
    # Stretch the (h, w) map onto the image's own pixel extent.
    extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
    figure = _figure(figsize=(panel_size * 4, panel_size * len(groups) + 0.4))
    grid = figure.add_gridspec(len(groups), 4)
    _show(figure.add_subplot(grid[:, 0]), image, "input")
    for row, group in enumerate(groups):
        panels = {
            kind: maps.spatial(kind, index, group) for kind, _ in _COLUMNS
        }
        norm_scale = float(panels["norm_before"].max()) or 1.0
        for column, (kind, label) in enumerate(_COLUMNS, start=1):
            values = panels[kind]
            axes = figure.add_subplot(grid[row, column])
            if kind == "gate":
                vmax, label = (
                    1.0,
                    f"{label} {values.min():.2f}-{values.max():.2f}",
                )
            else:
                vmax, label = norm_scale, f"{label}, max {values.max():.3g}"
            _show(axes, image, f"group {group}: {label}")
            axes.imshow(
                values,
                cmap=cmap,
                alpha=alpha,
                vmin=0.0,
                vmax=vmax,
                extent=extent,
                interpolation="bilinear",
            )
    figure.suptitle(title or f"{maps.name}, image {index}")
    return figure


def plot_activation_histograms(maps, bins=100, title=None, panel_size=3.6):
    """Histograms of the activations before and after SGE, one panel per layer.

    Pass the layers' maps for a set of images: the paper's claim is that
    SGE keeps large activations and pushes small ones toward zero. Counts
    are on a log scale; the legend gives each distribution's std.

    Args:
        maps: a dict `{name: SGEMaps}` as `inspect.inspect_sge` returns, or
            a list of `SGEMaps`.
        bins: the number of bins, shared by before and after.
        title: the figure title (default: the number of images).
        panel_size: the height of one panel, in inches.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    maps = list(maps.values()) if isinstance(maps, dict) else list(maps)
    figure = _figure(figsize=(panel_size * 1.2 * len(maps), panel_size))
    for axes, layer_maps in zip(
        figure.subplots(1, len(maps), squeeze=False)[0], maps
    ):
        before, after = layer_maps.inputs.ravel(), layer_maps.outputs.ravel()
        edges = np.linspace(
            min(before.min(), after.min()),
            max(before.max(), after.max()),
            bins + 1,
        )
        for values, label in ((before, "before SGE"), (after, "after SGE")):
            axes.hist(
                values,
                edges,
                histtype="step",
                linewidth=1.2,
                label=f"{label} (std {values.std():.3g})",
            )
        axes.set_yscale("log")
        axes.set_xlabel("activation")
        axes.set_title(layer_maps.name, fontsize=9)
        axes.legend(fontsize=7)
    figure.axes[0].set_ylabel("count")
    figure.suptitle(title or f"Activations over {len(maps[0].inputs)} image(s)")
    return figure


def _figure(figsize):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            'keras_sge.plotting needs matplotlib: pip install "keras-sge[examples]" (or matplotlib)'
        ) from error
    return Figure(figsize=figsize, layout="constrained")


def _display_image(image):
    image = np.asarray(image, "float32")
    if image.ndim != 3 or 3 not in (image.shape[0], image.shape[-1]):
        raise ValueError(
            f"`image` must be one RGB image, (H, W, 3) or (3, H, W). Received: shape={image.shape}"
        )
    if image.shape[-1] != 3:
        image = np.transpose(image, (1, 2, 0))
    return np.clip(image, 0, 255).astype("uint8")


def _show(axes, image, title):
    axes.imshow(image)
    axes.set_title(title, fontsize=7)
    axes.set_xticks([])
    axes.set_yticks([])
