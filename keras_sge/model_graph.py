"""Reading a functional Keras model's graph of layers.

Keras keeps a functional (or Sequential) model's graph on its symbolic
tensors: each tensor's `_keras_history` names the operation that made it
and which of that operation's calls, and each operation lists its calls in
`_inbound_nodes`. Keras has no public accessor for them, so this module is
the one place that reads them; `cost` and `surgery` walk graphs through it.
"""

import keras


def is_functional(model):
    """Whether `model` has a graph of layers (not a subclassed `call`)."""
    outputs = getattr(model, "outputs", None)
    return bool(outputs) and all(
        getattr(t, "_keras_history", None) is not None
        for t in keras.tree.flatten(outputs)
    )


def producer(tensor):
    """The node (one call of an operation) that made symbolic `tensor`."""
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def producing_operation(tensor):
    """The layer or operation that made symbolic `tensor`."""
    return tensor._keras_history[0]


def nodes(model):
    """The nodes of a functional `model`, in topological order (inputs first)."""
    order, seen = [], set()
    stack = [(producer(t), False) for t in keras.tree.flatten(model.outputs)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        elif id(node) not in seen:
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((producer(t), False) for t in node.input_tensors)
    return order


def is_add(operation):
    """Whether `operation` adds its inputs.

    Both `keras.layers.Add` and `x + y` on symbolic tensors (an operation
    of `keras.ops`, as in keras.applications' ConvNeXt), whose class Keras
    does not export.
    """
    return isinstance(operation, keras.layers.Add) or (
        type(operation).__name__ == "Add"
        and type(operation).__module__.startswith("keras.")
    )
