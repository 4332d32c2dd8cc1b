"""Parameters and multiply-adds of a model, per layer: `model_cost`.

Two conventions (the SGE paper's numbers need the second):

- `"standard"`: what the layers compute at inference, as multiply-adds
  (MACs). Convolutions and dense layers: one MAC per kernel weight and
  output position (biases ride on the accumulation and are not counted).
  Normalisations: one MAC per element (their affine transform; BN's is
  folded at inference, LN/GN statistics are not counted). SGE: its real
  work (below). Squeeze-and-Excitation: its pooling, its two projections
  and its gate multiply. Every other layer (activations, pooling, `Add`,
  layer scales) counts 0.
- `"paper"`: the conventions of `ptflops` (flops-counter.pytorch), the
  PyTorch counter we infer behind the paper's table, since they reproduce
  it: `keras_sge.applications.SGEResNet50(groups=None)` at 224x224 counts
  4.1220 G (the paper: 4.122), and SGE-, SE-ResNet-50 and (SGE-)ResNet-101
  match too (see `model_cost`). Convolutions and dense layers: MACs plus
  one per output for a bias. BatchNormalization: two per element (scale
  and shift; one without either). ReLUs: one per element. Pooling: one
  per input element. `Add`: 0 (a torch `+=` is not a module). An
  attention module counts only the parts the counter knows: SGE, its
  global average pool (C*H*W); SE, its pool and two fully connected
  layers. Convolutions and the classifier alone, the other usual
  convention (fvcore's), give 4.0892 G: 0.8% short of the paper.

**SGE's work.** On a C-channel, H x W map in G groups (P = H*W positions):
group means C*P adds, similarity C*P MACs, normalisation over the positions
about 4 operations per position and group (mean, variance, normalise and
scale-shift, sigmoid), gate multiply C*P: `3*C*P + 4*G*P` in all. Over
SGE-ResNet-50 at 224 that is 0.0201 G (+0.49%), while the paper's +0.005 G
(4.127 against 4.122) is the group-mean pooling alone, 0.0055 G: the
paper's counter saw only SGE's `AdaptiveAvgPool2d`. Either way SGE is
cheap: SE adds 0.008 G by the paper's count (4.130) and 2.5M parameters;
SGE 2,048 parameters.

```python
import keras_sge

model = keras_sge.applications.SGEResNet18(input_shape=(32, 32, 3))
cost = keras_sge.model_cost(model)
print(cost)  # a table: one row per layer, totals by kind
cost.macs, cost.params  # totals
```
"""

import dataclasses
import math

import keras

from keras_sge import model_graph
from keras_sge.layers.sge import SGE
from keras_sge.layers.squeeze_excite import SqueezeExcite

CONVENTIONS = ("standard", "paper")


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """One layer's cost: `name`, `kind` (class name), `output_shape`
    (without the batch axis), trainable `params`, `non_trainable_params`
    (e.g. BatchNormalization's moving statistics) and `macs` per sample."""

    name: str
    kind: str
    output_shape: tuple
    params: int
    non_trainable_params: int
    macs: int


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """A model's cost: per-layer `rows` and totals, per sample.

    `params` counts trainable parameters (as PyTorch and the paper count
    them), `non_trainable_params` the rest, `macs` the multiply-adds under
    `convention`; `gmacs` is `macs / 1e9`. `str(cost)` is a table.
    """

    model_name: str
    convention: str
    rows: tuple

    @property
    def params(self):
        return sum(row.params for row in self.rows)

    @property
    def non_trainable_params(self):
        return sum(row.non_trainable_params for row in self.rows)

    @property
    def macs(self):
        return sum(row.macs for row in self.rows)

    @property
    def gmacs(self):
        return self.macs / 1e9

    def by_kind(self):
        """`{kind: macs}`, largest first."""
        totals = {}
        for row in self.rows:
            totals[row.kind] = totals.get(row.kind, 0) + row.macs
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def __str__(self):
        width = max([len(row.name) for row in self.rows] + [5])
        line = f"{{:<{width}}}  {{:<20}}  {{:>18}}  {{:>12}}  {{:>15}}"
        lines = [
            f"{self.model_name}: multiply-adds by the {self.convention!r} "
            "convention, per sample",
            line.format("layer", "kind", "output", "params", "MACs"),
        ]
        for row in self.rows:
            lines.append(
                line.format(
                    row.name,
                    row.kind,
                    str(row.output_shape),
                    f"{row.params:,}",
                    f"{row.macs:,}",
                )
            )
        lines.append(
            line.format("total", "", "", f"{self.params:,}", f"{self.macs:,}")
        )
        lines.append(
            f"{self.gmacs:.4f} G multiply-adds; {self.params:,} trainable "
            f"and {self.non_trainable_params:,} non-trainable parameters"
        )
        for kind, macs in self.by_kind().items():
            if macs:
                lines.append(f"  {kind}: {macs / 1e9:.4f} G")
        return "\n".join(lines)


def model_cost(model, convention="standard", input_shape=None):
    """Returns a model's parameters and multiply-adds, per layer and in total.

    See the module docstring for the two conventions. With
    `convention="paper"`, `keras_sge.applications.SGEResNet50(groups=None)`
    at 224x224 counts 4.1220 G (the paper: 4.122), SGE-ResNet-50 4.1275 G
    (4.127), SE-ResNet-50 4.1300 G (4.130), ResNet-101 7.8495 G (7.849)
    and SGE-ResNet-101 7.8585 G (7.858). Convolutions and the classifier
    alone give 4.0892 G for ResNet-50 (0.8% under the paper: the count
    of fvcore and many later papers). By the standard count: 4.1003 G,
    4.1204 G (+0.0201 G of SGE work) and 4.1139 G. Nested
    models (e.g. a backbone inside a classifier) are counted layer by
    layer, their rows named `outer/inner`.

    Args:
        model: a functional or Sequential `keras.Model` whose shapes are
            known (a fixed input size), or any model with `input_shape`.
        convention: `"standard"` (the default) or `"paper"`.
        input_shape: optional input shape without the batch axis, e.g.
            `(224, 224, 3)`: the model is counted as if built for it (a
            copy is made; `model` is untouched). Needed when the model's
            input size is not fixed.

    Returns:
        A `ModelCost`: `rows` (one `LayerCost` per layer with parameters
        or multiply-adds), totals `params`, `non_trainable_params`,
        `macs`, `gmacs`, `by_kind()`, and a readable `str()`.

    Example:

    ```python
    import keras
    import keras_sge

    model = keras.Sequential([
        keras.Input((8, 8, 16)),
        keras.layers.Conv2D(32, 3, padding="same", use_bias=False),
        keras_sge.SGE(groups=4),
    ])
    cost = keras_sge.model_cost(model)
    assert cost.rows[0].macs == 8 * 8 * 32 * 3 * 3 * 16
    assert cost.rows[1].macs == 3 * 32 * 64 + 4 * 4 * 64  # SGE's work
    assert cost.params == 32 * 3 * 3 * 16 + 2 * 4
    ```
    """
    if convention not in CONVENTIONS:
        raise ValueError(
            f"`convention` must be one of {CONVENTIONS}. "
            f"Received: convention={convention!r}"
        )
    if input_shape is not None:
        model = keras.models.clone_model(
            model, input_tensors=keras.Input(tuple(input_shape))
        )
    rows = _model_rows(model, convention, prefix="")
    return ModelCost(model.name, convention, tuple(rows))


def _model_rows(model, convention, prefix):
    if not model_graph.is_functional(model):
        raise ValueError(
            "model_cost reads the shapes of a functional or Sequential "
            "model's graph; a subclassed model has none. Received: "
            f"model {model.name!r} of type {type(model).__name__}."
        )
    rows = []
    for node in model_graph.nodes(model):
        operation = node.operation
        if isinstance(operation, keras.layers.InputLayer):
            continue
        name = prefix + operation.name
        if isinstance(operation, keras.Model):
            rows.extend(_model_rows(operation, convention, name + "/"))
            continue
        inputs = [tuple(t.shape) for t in node.input_tensors]
        output = tuple(node.output_tensors[0].shape)
        row = _layer_row(operation, name, inputs, output, convention)
        if row.params or row.non_trainable_params or row.macs:
            rows.append(row)
    return rows


def _layer_row(layer, name, inputs, output, convention):
    weights = getattr(layer, "weights", [])
    trainable = sum(math.prod(w.shape) for w in weights if w.trainable)
    frozen = sum(math.prod(w.shape) for w in weights if not w.trainable)
    macs = _macs(layer, inputs, output, convention)
    return LayerCost(
        name, type(layer).__name__, output[1:], trainable, frozen, macs
    )


def _elements(shape, what):
    if any(dim is None for dim in shape[1:]):
        raise ValueError(
            f"model_cost needs static shapes; {what} has shape {shape}. "
            "Pass input_shape=(height, width, channels) (or the model's "
            "layout), or build the model for a fixed input size."
        )
    return math.prod(shape[1:])


def _macs(layer, inputs, output, convention):
    paper = convention == "paper"
    out = _elements(output, f"the output of {layer.name!r}")
    if isinstance(layer, SGE):
        return _sge_macs(layer, output, paper)
    if isinstance(layer, SqueezeExcite):
        return _se_macs(layer, output, paper)
    if isinstance(layer, _PROJECTIONS):
        macs = _projection_macs(layer, inputs[0], output)
        bias = getattr(layer, "bias", None) is not None
        return macs + (out if paper and bias else 0)
    if isinstance(layer, _NORMALIZATIONS):
        affine = bool(getattr(layer, "scale", True) or layer.center)
        return out * (2 if affine else 1) if paper else out
    if not paper:
        return 0
    if _is_relu(layer):
        return out
    if isinstance(layer, _POOLINGS):
        return _elements(inputs[0], f"the input of {layer.name!r}")
    return 0


_PROJECTIONS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)
_NORMALIZATIONS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
_POOLINGS = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)


def _is_relu(layer):
    if isinstance(layer, keras.layers.ReLU):
        return True
    return isinstance(layer, keras.layers.Activation) and (
        keras.activations.serialize(layer.activation) == "relu"
    )


def _projection_macs(layer, input_shape, output):
    out = _elements(output, f"the output of {layer.name!r}")
    if isinstance(layer, keras.layers.SeparableConv2D):
        # The depthwise step at every output position, then a 1x1 conv.
        depthwise = layer.depthwise_kernel.shape
        channels = output[_channel_axis(layer)]
        mid = depthwise[-2] * depthwise[-1]
        return out // channels * mid * (depthwise[0] * depthwise[1] + channels)
    kernel = layer.kernel.shape
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return out * kernel[0] * kernel[1]
    # Conv (any rank, grouped) and Dense: the kernel's input side per output.
    return out * math.prod(kernel[:-1])


def _channel_axis(layer):
    return 1 if getattr(layer, "data_format", "") == "channels_first" else -1


def _map_size(layer, output):
    """`(channels, positions)` of an attention layer's rank-4 output."""
    channels = output[layer.channel_axis]
    return channels, _elements(output, f"the output of {layer.name!r}") // (
        channels
    )


def _sge_macs(layer, output, paper):
    channels, positions = _map_size(layer, output)
    pooling = channels * positions
    if paper:
        # The reference's SGE module: the counter sees its AdaptiveAvgPool2d
        # only; the block's ReLU, fused into SGEResidual here, is a module.
        relu = pooling if type(layer).__name__ == "SGEResidual" else 0
        return pooling + relu
    # Means, similarity and gate: C*P each; the normalisation and sigmoid:
    # about 4 per position and group.
    return 3 * channels * positions + 4 * layer.groups * positions


def _se_macs(layer, output, paper):
    channels, positions = _map_size(layer, output)
    hidden = layer.squeeze_kernel.shape[-1]
    projections = 2 * channels * hidden
    if paper:
        # Pool, the two Linear layers with their biases, the hidden ReLU.
        return channels * positions + projections + channels + 2 * hidden
    return 2 * channels * positions + projections
