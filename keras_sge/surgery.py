"""Attention inserted into a trained residual network: `add_attention`.

The SGE paper puts one SGE layer on every residual branch, after the
branch's last normalisation and before the residual addition. This module
does the same to any functional Keras model with residual `Add`s, e.g. the
`keras.applications` ResNets, MobileNetV2, EfficientNets and ConvNeXts, or
a KerasHub ResNet backbone, and keeps the trained weights:

```python
import keras
import keras_sge

resnet = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3))
sge_resnet = keras_sge.add_attention(resnet, "sge", groups=64)
```

At insertion the new model computes what the original did (see
`add_attention`, `fold`), so fine-tuning starts from the trained network.
"""

import warnings

import keras
import numpy as np

from keras_sge import model_graph
from keras_sge.arguments import check_positive_int
from keras_sge.layers.sge import SGE
from keras_sge.layers.squeeze_excite import SqueezeExcite

# SENet's channel reduction, as in the builders' SE-ResNets.
_SE_REDUCTION = 16


def add_attention(model, attention="sge", groups=64, fold=True, branches=None):
    """Returns a copy of `model` with attention on every residual branch.

    Each two-input `Add` (layer or `+` on tensors) of rank-4 tensors is a
    residual addition. Its **branch** is the input with more weighted
    layers (layers that own weights: convolutions, normalisations, layer
    scales, ...) between it and the two inputs' shared ancestry; the
    **shortcut** is the other one, an identity (no weighted layer) or a
    projection (fewer). Equal counts are ambiguous and raise a
    `ValueError`; pass `branches` to decide. The attention goes right
    after the branch's last weighted layer, found by stepping back from
    the `Add` through layers without weights that keep the shape (dropout,
    stochastic depth, identities, activations): after the last
    BatchNormalization of a ResNet, MobileNetV2 or EfficientNet block
    (before EfficientNet's per-sample dropout, and before the swish that
    ends EfficientNetV2's expand-ratio-1 blocks), after the last 1x1
    convolution of a pre-activation ResNetV2 block, after the layer scale
    of a ConvNeXt block. That is the paper's place (after the branch's last
    normalisation, or its last projection or scale where it has no
    normalisation), and the layer there can absorb the fold below.

    The model returned is a new functional `keras.Model` (a KerasHub
    backbone comes back as a plain functional model): its layers are
    clones holding copies of the original's weights, and the original is
    untouched.

    **Same network at insertion.** SGE starts with `gamma = 0` and `beta =
    1`, so every gate is the constant `sigmoid(1) = 0.731` and SGE scales
    its input by it. With `fold=True` the inverse, `1 / sigmoid(beta)` per
    channel, is folded into the layer before the attention (a
    normalisation's scale and offset, a convolution's or dense layer's
    kernel and bias, a layer scale), so the new model's outputs equal the
    original's to float32 rounding, and fine-tuning learns `gamma` from
    there. A normalisation without a scale (`scale=False`) gets one,
    holding the folded factor. This holds for any attention whose initial
    gate is a constant: an `SGE` layer whose `gamma` starts at zero.
    Squeeze-and-Excitation's initial gate depends on the data, so nothing
    folds: `attention="se"` (or a callable returning another layer) warns
    that the new model differs from the original at insertion; pass
    `fold=False` to insert without folding and without the warning.

    **Groups.** With `attention="sge"`, a branch of C channels gets the
    largest divisor of C that is at most `groups` (MobileNetV2's 24
    channels get 24 groups at `groups=64`, ConvNeXt-T's 96 get 48); each
    layer's config holds the groups it uses.

    Args:
        model: a functional `keras.Model` with residual `Add`s.
        attention: `"sge"` (the default), `"se"` (`SqueezeExcite` with
            reduction 16) or a callable `(channels, name) -> layer`, as
            the `keras_sge.applications` builders take it. A callable's
            layer gets no data format or dtype policy: set them yourself
            if they are not the defaults.
        groups: int, the number of SGE groups at most (64 in the paper);
            only for `attention="sge"`.
        fold: bool, whether to fold the attention's initial gate into the
            layer before it, so that the new model starts equal to the
            original (see above).
        branches: optional dict from an `Add`'s name to the name of the
            layer that produces its residual branch, or to `None` to leave
            that `Add` without attention. It overrides the rule above.

    Returns:
        A new functional `keras.Model`.

    Raises:
        ValueError: `model` is not functional (e.g. subclassed), has no
            residual `Add`, or an `Add` whose branch is ambiguous or that
            is not a rank-4 two-input addition; with `fold=True`, a branch
            whose last weighted layer cannot take the folded factor.

    Example:

    ```python
    import keras
    import numpy as np
    import keras_sge

    base = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35
    )
    model = keras_sge.add_attention(base, "sge", groups=64)
    images = np.random.rand(2, 32, 32, 3).astype("float32")
    np.testing.assert_allclose(model(images), base(images), atol=1e-6)
    ```
    """
    make_attention = _attention_factory(attention, groups)
    graph = _Graph(model)
    sites = _residual_sites(graph, branches)
    for site in sites:
        site.layer = make_attention(site)
        if not site.layer.built:
            # Built now, to read its initial gate before the model exists.
            site.layer.build(tuple(site.tensor.shape))
        site.gate = _initial_gate(site) if fold else None
    _check_folds(sites, attention, fold)
    return _rebuild(model, sites)


# --------------------------------------------------------------------------
# The attention layers
# --------------------------------------------------------------------------


def _attention_factory(attention, groups):
    """`site -> layer` for the `attention` argument."""
    if attention == "sge":
        check_positive_int("groups", groups)
        return lambda site: SGE(
            groups=_largest_divisor(site.channels, groups),
            data_format=site.data_format,
            dtype=site.dtype_policy,
            name=site.name("sge"),
        )
    if attention == "se":
        return lambda site: SqueezeExcite(
            reduction=_SE_REDUCTION,
            data_format=site.data_format,
            dtype=site.dtype_policy,
            name=site.name("se"),
        )
    if callable(attention) and not isinstance(attention, str):
        return lambda site: attention(site.channels, site.name("attention"))
    raise ValueError(
        "`attention` must be 'sge', 'se' or a callable "
        f"`(channels, name) -> layer`. Received: attention={attention!r}"
    )


def _largest_divisor(channels, groups):
    """The largest divisor of `channels` that is at most `groups`."""
    return max(
        d for d in range(1, min(channels, groups) + 1) if not channels % d
    )


def _initial_gate(site):
    """The attention's initial gate per channel, or None if data-dependent.

    An SGE layer gates by `sigmoid(gamma * c_hat + beta)`: with `gamma` all
    zero that is `sigmoid(beta)` whatever the input.
    """
    layer = site.layer
    if not isinstance(layer, SGE):
        return None
    if np.any(keras.ops.convert_to_numpy(layer.gamma) != 0):
        return None
    beta = keras.ops.convert_to_numpy(layer.beta).astype("float64")
    gate = 1.0 / (1.0 + np.exp(-beta))
    return np.repeat(gate, site.channels // layer.groups)


def _check_folds(sites, attention, fold):
    if not fold:
        return
    unfoldable = [site for site in sites if site.gate is None]
    if unfoldable:
        kind = type(unfoldable[0].layer).__name__
        warnings.warn(
            f"The initial gate of {kind} (attention={attention!r}) is not a "
            "constant (SE's depends on the data; only an SGE layer whose "
            "gamma starts at zero has one), so no fold makes the new model "
            f"equal the original at insertion: {len(unfoldable)} layer(s) "
            "inserted without folding. Pass fold=False to insert without "
            "this warning.",
            stacklevel=3,
        )
    for site in sites:
        if site.gate is not None and _folder(site.anchor) is None:
            raise ValueError(
                f"Cannot fold the initial gate of {site.layer.name!r} into "
                f"the branch of {site.add.name!r}: the layer before it, "
                f"{site.after.name!r} ({type(site.after).__name__}), is not "
                "a normalisation, a convolution or dense layer with a "
                "linear or ReLU activation, or a layer scale. Pass "
                "fold=False to insert the attention without folding (the "
                "new model then differs from the original at insertion)."
            )


# --------------------------------------------------------------------------
# The model's graph and its residual additions
# --------------------------------------------------------------------------


class _Graph:
    """The nodes of a functional model, with producers and consumers."""

    def __init__(self, model):
        if not isinstance(model, keras.Model) or not model_graph.is_functional(
            model
        ):
            raise ValueError(
                "add_attention needs a functional Keras model (built with "
                "`keras.Model(inputs, outputs)`), whose graph of layers it "
                "can walk; a subclassed model's `call` is Python code. "
                f"Received: model={model!r} of type {type(model).__name__}. "
                "Rebuild it functionally, or put the attention in its "
                "`call` yourself."
            )
        self.model = model
        self.nodes = []  # topological order
        self.consumers = {}  # id(tensor) -> [node]
        self.calls = {}  # id(operation) -> number of nodes in this model
        seen = set()
        for output in model.outputs:
            # A model output has a consumer outside the graph.
            self.consumers.setdefault(id(output), []).append(None)
            self._visit(model_graph.producer(output), seen)

    def _visit(self, node, seen):
        stack = [(node, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                self.nodes.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            op = node.operation
            self.calls[id(op)] = self.calls.get(id(op), 0) + 1
            stack.append((node, True))
            for tensor in node.input_tensors:
                self.consumers.setdefault(id(tensor), []).append(node)
                stack.append((model_graph.producer(tensor), False))

    def ancestors(self, tensor):
        """Ids of the nodes that `tensor` depends on, its producer included."""
        found, stack = set(), [model_graph.producer(tensor)]
        while stack:
            node = stack.pop()
            if id(node) not in found:
                found.add(id(node))
                stack.extend(
                    model_graph.producer(t) for t in node.input_tensors
                )
        return found

    def weighted_nodes(self, node_ids):
        return sum(
            1
            for node in self.nodes
            if id(node) in node_ids and _has_weights(node.operation)
        )


def _has_weights(operation):
    return bool(getattr(operation, "weights", None))


class _Site:
    """One residual addition and where its attention goes."""

    def __init__(self, graph, add, branch):
        self.add = add
        self.tensor, self.anchor = _insertion_point(graph, add, branch)
        self.after = model_graph.producing_operation(self.tensor)
        self.data_format = _data_format(self.tensor)
        axis = -1 if self.data_format == "channels_last" else 1
        self.channels = self.tensor.shape[axis]
        self.dtype_policy = getattr(self.after, "dtype_policy", None)
        self.layer = None  # the attention layer
        self.gate = None  # its initial gate per channel, if constant
        self.clone = None  # the new model's copy of `after`
        self._taken = {layer.name for layer in graph.model.layers}

    def name(self, kind):
        name, index = f"{self.after.name}_{kind}", 1
        while name in self._taken:
            name, index = f"{self.after.name}_{kind}_{index}", index + 1
        return name


def _residual_sites(graph, branches):
    branches = dict(branches or {})
    sites = []
    for node in graph.nodes:
        add = node.operation
        if not model_graph.is_add(add):
            continue
        if add.name not in branches and len(node.input_tensors) < 2:
            # A tensor plus a constant (MobileNetV3's hard sigmoid, x + 3)
            # adds no second path: not a residual addition.
            continue
        if add.name in branches:
            chosen = branches.pop(add.name)
            if chosen is None:
                continue
            branch = _named_input(node, chosen)
        else:
            branch = _branch(graph, node)
        if graph.calls[id(add)] > 1:
            raise ValueError(
                f"The Add {add.name!r} is called {graph.calls[id(add)]} "
                "times in the model; add_attention needs one Add per "
                f"residual block. Pass branches={{{add.name!r}: None}} to "
                "leave it alone."
            )
        sites.append(_Site(graph, add, branch))
    if branches:
        raise ValueError(
            "`branches` names Adds that the model does not have: "
            f"{sorted(branches)}. Received: branches={branches!r}"
        )
    if not sites:
        raise ValueError(
            "The model has no residual addition (a two-input `Add` layer "
            "or `+` of rank-4 tensors), so there is no branch to put "
            f"attention on. Received: model {graph.model.name!r} with layer "
            f"types {sorted({type(op).__name__ for op in graph.model.layers})}"
            ". For a network without residual blocks, insert the attention "
            "layers where you want them yourself."
        )
    return sites


def _named_input(node, layer_name):
    for tensor in node.input_tensors:
        if model_graph.producing_operation(tensor).name == layer_name:
            return tensor
    names = [
        model_graph.producing_operation(t).name for t in node.input_tensors
    ]
    raise ValueError(
        f"`branches` says the branch of {node.operation.name!r} comes from "
        f"{layer_name!r}, but its inputs come from {names}."
    )


def _branch(graph, node):
    """The residual branch among a two-input Add's inputs (see the rule)."""
    add = node.operation
    inputs = node.input_tensors
    producers = [model_graph.producing_operation(t).name for t in inputs]
    hint = (
        f"Pass branches={{{add.name!r}: <name of the layer producing the "
        f"branch>}} to choose, or branches={{{add.name!r}: None}} to leave "
        "this Add alone."
    )
    if len(inputs) != 2 or any(len(t.shape) != 4 for t in inputs):
        raise ValueError(
            f"The Add {add.name!r} is not a residual addition of two rank-4 "
            f"feature maps: its inputs have shapes "
            f"{[tuple(t.shape) for t in inputs]} (from {producers}). {hint}"
        )
    ancestors = [graph.ancestors(t) for t in inputs]
    shared = ancestors[0] & ancestors[1]
    weighted = [graph.weighted_nodes(a - shared) for a in ancestors]
    if weighted[0] == weighted[1]:
        raise ValueError(
            f"Cannot tell the residual branch of the Add {add.name!r} from "
            f"its shortcut: both inputs (from {producers}) have "
            f"{weighted[0]} weighted layer(s) since their shared ancestry; "
            f"the branch is the input with more. {hint}"
        )
    return inputs[int(weighted[1] > weighted[0])]


def _insertion_point(graph, add, branch):
    """`(tensor, anchor)`: the tensor the attention takes and its producer.

    Steps back from the branch through shape-keeping layers without
    weights while each tensor feeds only the next layer, since the
    attention acts on everything that reads its input. `anchor` is the
    weighted layer reached, or None (then the attention takes `branch`).
    """
    _check_insertable(graph, add, branch)
    tensor = branch
    while not _has_weights(model_graph.producing_operation(tensor)):
        node = model_graph.producer(tensor)
        inputs = node.input_tensors
        if (
            len(inputs) != 1
            or tuple(inputs[0].shape) != tuple(tensor.shape)
            or not _insertable(graph, inputs[0])
        ):
            return branch, None
        tensor = inputs[0]
    return tensor, model_graph.producing_operation(tensor)


def _insertable(graph, tensor):
    """Whether the attention can follow `tensor`'s producer alone."""
    node = model_graph.producer(tensor)
    return (
        len(graph.consumers.get(id(tensor), ())) == 1
        and len(node.output_tensors) == 1
        and graph.calls[id(node.operation)] == 1
        and not node.is_input
    )


def _check_insertable(graph, add, branch):
    if not _insertable(graph, branch):
        producer = model_graph.producing_operation(branch)
        raise ValueError(
            f"Cannot put attention on the branch of {add.name!r}: the "
            f"layer producing it, {producer.name!r}, is called more than "
            "once, has several outputs, or its output feeds other layers "
            "(or is a model output) too, and the attention would change "
            f"those. Pass branches={{{add.name!r}: None}} to leave this "
            "Add alone."
        )


def _data_format(tensor):
    """The layout of `tensor`, from the nearest layer that states one."""
    stack, seen = [tensor], set()
    while stack:
        tensor = stack.pop(0)
        operation = model_graph.producing_operation(tensor)
        if id(operation) in seen:
            continue
        seen.add(id(operation))
        if isinstance(operation, keras.layers.Dense) or _is_layer_scale(
            operation
        ):
            return "channels_last"
        if getattr(operation, "data_format", None) in (
            "channels_last",
            "channels_first",
        ):
            return operation.data_format
        if isinstance(operation, keras.layers.BatchNormalization):
            first = operation.axis == 1
            return "channels_first" if first else "channels_last"
        stack.extend(model_graph.producer(tensor).input_tensors)
    return keras.config.image_data_format()


# --------------------------------------------------------------------------
# Folding the initial gate into the layer before the attention
# --------------------------------------------------------------------------


def _is_layer_scale(layer):
    # keras.applications' ConvNeXt: `x * gamma`, one gamma per channel.
    return type(layer).__name__ == "LayerScale" and hasattr(layer, "gamma")


_NORMALIZATIONS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)
_PROJECTIONS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)


def _folder(layer):
    """`(layer, factor) -> None` that scales the layer's output per channel.

    None if `layer` cannot: a ReLU after a projection commutes with a
    positive factor, other activations do not.
    """
    if isinstance(layer, _NORMALIZATIONS):
        return _fold_normalization
    if isinstance(layer, _PROJECTIONS):
        activation = keras.activations.serialize(layer.activation)
        name = activation if isinstance(activation, str) else None
        if name in ("linear", "relu"):
            return _fold_projection
        return None
    if _is_layer_scale(layer):
        return lambda layer, factor: _scale(layer.gamma, factor)
    return None


def _scale(variable, factor, axis=-1):
    value = keras.ops.convert_to_numpy(variable).astype("float64")
    shape = [1] * value.ndim
    shape[axis] = -1
    if value.shape[axis] != factor.size:
        raise ValueError(
            f"Cannot fold {factor.size} channel factors into the variable "
            f"{variable.path!r} of shape {tuple(value.shape)}."
        )
    variable.assign((value * factor.reshape(shape)).astype(variable.dtype))


def _fold_normalization(layer, factor):
    # y = gamma * x_hat + beta: dividing y divides gamma and beta.
    for variable in (layer.gamma, layer.beta):
        if variable is not None:
            _scale(variable, factor)


def _fold_projection(layer, factor):
    if isinstance(layer, keras.layers.SeparableConv2D):
        _scale(layer.pointwise_kernel, factor)
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        # Output channel i * multiplier + m comes from kernel[..., i, m].
        kernel = layer.kernel
        _scale_depthwise(kernel, factor)
    else:
        _scale(layer.kernel, factor)
    if layer.bias is not None:
        _scale(layer.bias, factor)


def _scale_depthwise(kernel, factor):
    value = keras.ops.convert_to_numpy(kernel).astype("float64")
    factor = factor.reshape(value.shape[-2], value.shape[-1])
    kernel.assign((value * factor).astype(kernel.dtype))


# --------------------------------------------------------------------------
# The new model
# --------------------------------------------------------------------------


def _rebuild(model, sites):
    by_anchor = {id(site.after): site for site in sites}
    clones = {}  # id(clone) -> original

    def clone_function(layer):
        site = by_anchor.get(id(layer))
        config = layer.get_config()
        if site is not None and site.gate is not None:
            # A normalisation without scale gets one, to hold the fold.
            if isinstance(layer, _NORMALIZATIONS) and not config["scale"]:
                config["scale"] = True
        clone = layer.__class__.from_config(config)
        clones[id(clone)] = layer
        return clone

    def call_function(operation, *args, **kwargs):
        outputs = operation(*args, **kwargs)
        site = by_anchor.get(id(clones.get(id(operation))))
        if site is not None:
            site.clone = operation
            outputs = site.layer(outputs)
        return outputs

    new_model = keras.models.clone_model(
        model, clone_function=clone_function, call_function=call_function
    )
    _copy_weights(new_model, clones)
    for site in sites:
        if site.gate is not None:
            _folder(site.anchor)(site.clone, 1.0 / site.gate)
    return new_model


def _copy_weights(new_model, clones):
    for clone in new_model.layers:
        original = clones.get(id(clone))
        if original is None:
            continue  # an attention layer, or an input
        if len(original.weights) == len(clone.weights):
            clone.set_weights(original.get_weights())
            continue
        # A normalisation given a scale: copy what the original has.
        old = {_short_name(v): v for v in original.weights}
        for variable in clone.weights:
            if _short_name(variable) in old:
                variable.assign(old[_short_name(variable)])


def _short_name(variable):
    return variable.path.rsplit("/", 1)[-1]
