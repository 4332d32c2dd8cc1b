"""See what SGE does: its gate maps and the per-group feature norms.

For chosen `SGE` layers of a model and a batch of images, `inspect_sge`
returns what each layer computed in the forward pass:

- `gate`: the sigmoid gate, straight from `SGE.gate`;
- `norm_before` / `norm_after`: the L2 norm, over each group's channels, of
  the layer's input and of its gated features `input * gate` (the paper's
  "feature maps before and after SGE", Li, Hu and Yang 2019, Figure 5);
- `inputs` / `outputs`: the activations themselves (for histograms).

Nothing of the layer's maths is re-implemented here: one `keras.Model`
(`sge_probe`) outputs every chosen layer's input and output in a single
forward pass, and the gate comes from the layer's own public `gate` method,
so the values are exactly those of the model's forward pass. An
`SGEResidual` layer (the end of a `keras_sge.applications` block) outputs
the block's `relu(shortcut + input * gate)`; for it, `outputs` is SGE's own
output `input * gate`, from the same layer called without the shortcut.

Maps are laid out like the layer's data format: `(N, H, W, G)` for
`"channels_last"` and `(N, G, H, W)` for `"channels_first"`.

Example:

```python
import keras
import numpy as np
import keras_sge
from keras_sge import inspect

inputs = keras.Input((32, 32, 3))
x = keras.layers.Conv2D(32, 3, padding="same")(inputs)
x = keras_sge.SGE(groups=8, name="sge")(x)
model = keras.Model(inputs, x)

maps = inspect.inspect_sge(model, np.random.rand(2, 32, 32, 3))["sge"]
maps.gate.shape, maps.norm_before.shape     # ((2, 32, 32, 8), (2, 32, 32, 8))
```
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from keras_sge.arguments import check_positive_int
from keras_sge.arguments import standardize_data_format
from keras_sge.layers.sge import SGE
from keras_sge.layers.sge_residual import SGEResidual

LAST_STAGE = "last_stage"
ALL = "all"
MAP_KINDS = ("gate", "norm_before", "norm_after")


@dataclasses.dataclass(frozen=True)
class SGEMaps:
    """What one SGE layer computed for a batch of images (float32 NumPy).

    Attributes:
        name: the SGE layer's name.
        groups: its number of groups, G.
        data_format: `"channels_last"` or `"channels_first"`; every array
            below is laid out that way.
        inputs: the layer's input, `(N, H, W, C)` or `(N, C, H, W)`.
        outputs: the layer's output in the same forward pass, `inputs`
            times the gate (for an `SGEResidual` layer, SGE's output
            before the add and ReLU).
        gate: `SGE.gate(inputs)`, `(N, H, W, G)` or `(N, G, H, W)`.
        norm_before: L2 norm of `inputs` over each group's channels, laid
            out like `gate`.
        norm_after: the same for `outputs`.
    """

    name: str
    groups: int
    data_format: str
    inputs: np.ndarray
    outputs: np.ndarray
    gate: np.ndarray
    norm_before: np.ndarray
    norm_after: np.ndarray

    def spatial(self, kind, index, group):
        """One `(H, W)` map: `kind` is "gate", "norm_before" or "norm_after"."""
        # `inputs` and `outputs` have C channels, not G groups: indexing them
        # by group would silently return one channel.
        if kind not in MAP_KINDS:
            raise ValueError(
                f"`kind` must be one of {', '.join(map(repr, MAP_KINDS))}. "
                f"Received: kind={kind!r}"
            )
        maps = getattr(self, kind)
        if self.data_format == "channels_last":
            return maps[index, :, :, group]
        return maps[index, group]


def sge_layers(model, layers=LAST_STAGE):
    """The model's SGE layers to inspect, in the order of the model's layers.

    Args:
        model: a `keras.Model` whose own layers include `SGE` layers.
        layers: `"last_stage"` (default): the SGE layers of the deepest
            stage, i.e. the trailing SGE layers whose input shape is the
            same as the last SGE layer's (`conv5_block{1,2,3}_sge` in an
            SGE-ResNet-50); `"all"`; or a layer name or a list of names.

    Returns:
        A list of `SGE` layers.

    Raises:
        ValueError: `model` is not a Keras model, it has no SGE layer,
            `layers` is empty or not names, or a name is not an SGE layer of
            the model.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "`model` must be a keras.Model (load a saved file with "
            f"keras.saving.load_model). Received: model of type {type(model).__name__}"
        )
    found = [layer for layer in model.layers if isinstance(layer, SGE)]
    if not found:
        raise ValueError(
            f"Model {model.name!r} has no SGE layer among its layers{_nested_hint(model)}."
        )
    if layers == ALL:
        return found
    if layers == LAST_STAGE:
        _model_input(model)  # the stage is found from the layers' inputs
        return _last_stage(found)
    names = _layer_names(layers)
    by_name = {layer.name: layer for layer in found}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(
            f"No SGE layer named {', '.join(map(repr, unknown))} in model {model.name!r}. "
            f"Its SGE layers: {', '.join(by_name)}. Or pass {LAST_STAGE!r} or {ALL!r}."
        )
    return [by_name[name] for name in names]


def _layer_names(layers):
    try:
        names = [layers] if isinstance(layers, str) else list(layers)
    except TypeError:  # not iterable, e.g. None or a layer
        names = []
    if not names or not all(isinstance(name, str) for name in names):
        raise ValueError(
            f"`layers` must be {LAST_STAGE!r}, {ALL!r}, an SGE layer's name "
            f"or a non-empty list of names (`layer.name`). Received: layers={layers!r}"
        )
    return list(names)


def _last_stage(found):
    stage_shape = tuple(_sge_input(found[-1]).shape[1:])
    stage = []
    for layer in reversed(found):
        if tuple(_sge_input(layer).shape[1:]) != stage_shape:
            break
        stage.append(layer)
    return stage[::-1]


def _sge_input(layer):
    """The SGE layer's input (an `SGEResidual`'s `input` also lists the shortcut)."""
    inputs = layer.input
    return inputs[0] if isinstance(inputs, (list, tuple)) else inputs


def _has_residual(layer):
    return isinstance(layer, SGEResidual)


def _nested_hint(model):
    nested = [
        layer.name for layer in model.layers if isinstance(layer, keras.Model)
    ]
    if not nested:
        return ""
    return (
        f" (it nests the model(s) {', '.join(map(repr, nested))}: "
        "inspect the one that holds the SGE layers)"
    )


def sge_probe(model, layers):
    """A model giving, in one forward pass, each SGE layer's input and output.

    It shares its layers and weights with `model`, takes the same inputs
    and outputs a dict `{layer name: (input, output)}`. For an `SGEResidual`
    layer, the output is the block's `relu(shortcut + SGE)`.

    Args:
        model: the model holding the layers.
        layers: a list of `SGE` layers of `model` (see `sge_layers`).
    """
    outputs = {
        layer.name: (_sge_input(layer), layer.output) for layer in layers
    }
    # `model.input` keeps the inputs' structure (a single tensor, not a
    # list of one), so the probe is called exactly like the model.
    return keras.Model(
        _model_input(model), outputs, name=f"{model.name}_sge_probe"
    )


def _model_input(model):
    """`model.input`; a ValueError if the model has no graph of layers."""
    try:
        return model.input
    except AttributeError:  # subclassed, or Sequential without keras.Input
        raise ValueError(
            f"Model {model.name!r} has no graph of layers to read the SGE "
            "layers' inputs from: inspect a functional model "
            "(keras.Model(inputs, outputs), or a Sequential model that "
            "starts with keras.Input), not a subclassed one."
        ) from None


def group_norms(features, groups, data_format):
    """The L2 norm over each group's contiguous channels.

    Args:
        features: `(N, H, W, C)` or `(N, C, H, W)` NumPy array.
        groups: the number of groups, G (must divide C).
        data_format: `"channels_last"` or `"channels_first"`.

    Returns:
        `(N, H, W, G)` or `(N, G, H, W)`, laid out like `SGE.gate`.

    Example:

    >>> import numpy as np
    >>> group_norms(np.full((1, 1, 1, 4), 3.0), 2, "channels_last").tolist()
    [[[[4.242640687119285, 4.242640687119285]]]]
    """
    features = np.asarray(features)
    data_format = _check_features(features, groups, data_format)
    if data_format == "channels_last":
        n, h, w, c = features.shape
        return np.linalg.norm(
            features.reshape(n, h, w, groups, c // groups), axis=-1
        )
    n, c, h, w = features.shape
    return np.linalg.norm(
        features.reshape(n, groups, c // groups, h, w), axis=2
    )


def _check_features(features, groups, data_format):
    """The checked data format; a ValueError for what cannot be grouped."""
    data_format = standardize_data_format(data_format)
    _positive_int("groups", groups)
    if features.ndim != 4:
        raise ValueError(
            "`features` must be a rank-4 batch, (N, H, W, C) or (N, C, H, W). "
            f"Received: features.shape={features.shape}"
        )
    channels = features.shape[-1 if data_format == "channels_last" else 1]
    if channels % groups:
        raise ValueError(
            f"The number of channels ({channels}) must be divisible by groups "
            f"({groups}), data_format={data_format!r}. "
            f"Received: features.shape={features.shape}"
        )
    return data_format


def inspect_sge(model, images, layers=LAST_STAGE, batch_size=16):
    """Gate maps and group feature norms of chosen SGE layers for `images`.

    The model runs in inference mode (`training=False`), `batch_size`
    images at a time; memory grows with the number of images times the
    chosen layers' activation sizes, so inspect many images only on a few
    layers.

    Args:
        model: a `keras.Model` with `SGE` layers among its own layers, e.g.
            a `keras_sge.applications` model.
        images: a NumPy batch the model accepts (already preprocessed).
        layers: which SGE layers, see `sge_layers` (default: last stage).
        batch_size: images per forward pass.

    Returns:
        A dict `{layer name: SGEMaps}`, in the order of the model's layers.

    Raises:
        ValueError: `batch_size` is not a positive integer; `images` is not
            a non-empty numeric batch of the model's input shape; the model
            has several inputs or is not functional; or see `sge_layers`.
    """
    batch_size = _positive_int("batch_size", batch_size)
    chosen = sge_layers(model, layers)
    probe = sge_probe(model, chosen)
    images = _check_images(model, images)
    starts = range(0, len(images), batch_size)
    batches = [
        _run_batch(probe, chosen, images[start : start + batch_size])
        for start in starts
    ]
    return {
        layer.name: _maps(layer, [batch[layer.name] for batch in batches])
        for layer in chosen
    }


def _positive_int(name, value):
    # NumPy integers are integers here too (e.g. a count computed with NumPy).
    if isinstance(value, np.integer):
        value = int(value)
    return check_positive_int(name, value)


def _check_images(model, images):
    """`images` as a NumPy batch that the model's single input takes."""
    if len(model.inputs) != 1:
        raise ValueError(
            f"inspect_sge takes a model with one input; model {model.name!r} "
            f"has {len(model.inputs)}. Build the probe with `sge_probe`."
        )
    array = np.asarray(images)
    if array.dtype.kind not in "biuf":
        raise ValueError(
            "`images` must be a numeric NumPy batch (already preprocessed). "
            f"Received: images of type {type(images).__name__}, dtype {array.dtype}"
        )
    if array.shape[:1] == (0,):
        raise ValueError(
            "`images` is an empty batch: inspect_sge needs at least one "
            f"image. Received: images.shape={array.shape}"
        )
    expected = tuple(model.inputs[0].shape)
    if len(array.shape) != len(expected) or any(
        size not in (None, got)
        for size, got in zip(expected[1:], array.shape[1:])
    ):
        single = " (one image? pass images[None])" * (
            array.ndim == len(expected) - 1
        )
        raise ValueError(
            f"`images` must be a batch of the model's input shape {expected}{single}. "
            f"Received: images.shape={array.shape}"
        )
    return array


def _run_batch(probe, layers, batch):
    """Per layer: (input, output, gate) as float32 NumPy, for one batch."""
    results = probe(batch, training=False)
    values = {}
    for layer in layers:
        inputs, outputs = results[layer.name]
        if _has_residual(layer):
            # The layer's output is past the add and ReLU; called without
            # the shortcut the same layer returns SGE's own output.
            outputs = layer(inputs)
        values[layer.name] = tuple(
            _numpy(t) for t in (inputs, outputs, layer.gate(inputs))
        )
    return values


def _numpy(tensor):
    return ops.convert_to_numpy(ops.cast(tensor, "float32"))


def _maps(layer, batches):
    inputs, outputs, gate = (np.concatenate(parts) for parts in zip(*batches))
    return SGEMaps(
        name=layer.name,
        groups=layer.groups,
        data_format=layer.data_format,
        inputs=inputs,
        outputs=outputs,
        gate=gate,
        norm_before=group_norms(inputs, layer.groups, layer.data_format),
        norm_after=group_norms(outputs, layer.groups, layer.data_format),
    )


def most_selective_groups(maps, index=0, count=4):
    """The groups whose gate varies most over the positions of one image.

    Groups where SGE is spatially selective make the telling pictures; a
    gate that is flat everywhere (an untrained layer's `sigmoid(beta)`)
    shows nothing. Ties keep the lower group index.

    Args:
        maps: an `SGEMaps`.
        index: the image in the batch.
        count: how many groups.

    Returns:
        A list of `count` group indices (fewer if the layer has fewer groups).
    """
    # A negative count would slice off the least selective groups instead.
    count = _positive_int("count", count)
    spread = [
        np.std(maps.spatial("gate", index, group))
        for group in range(maps.groups)
    ]
    return [
        int(g) for g in np.argsort(-np.asarray(spread), kind="stable")[:count]
    ]
