"""Shared helpers for the surgery tests: small models with non-default weights."""

import keras
import numpy as np
from keras import ops

from keras_sge.layers import SGE
from tests import harness

SIZE = 32


def randomize(model, seed=0):
    """Sets every normalisation, bias and layer scale to non-default values.

    At their defaults (gamma 1, beta 0, mean 0, variance 1, layer scale
    1e-6) a wrong fold could hide: these make every branch matter.
    """
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        scale = type(layer).__name__ == "LayerScale"
        for variable in layer.weights:
            name = variable.path.rsplit("/", 1)[-1]
            shape = tuple(variable.shape)
            if name == "gamma" or scale:
                value = rng.uniform(0.5, 1.5, shape)
            elif name in ("beta", "moving_mean", "bias"):
                value = rng.normal(0.0, 0.2, shape)
            elif name == "moving_variance":
                value = rng.uniform(0.5, 2.0, shape)
            else:
                continue
            variable.assign(value.astype(variable.dtype))
    return model


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        yield layer


def images(shape=(2, SIZE, SIZE, 3), seed=1, high=255.0):
    return np.random.default_rng(seed).uniform(0, high, shape).astype("float32")


def outputs(model, x):
    return harness.inference(model, x).astype("float32")


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def sge_layers(model):
    return [layer for layer in model.layers if isinstance(layer, SGE)]


def count_adds(model):
    """Additions of two tensors (`x + 3.0` adds a constant: not residual)."""
    return sum(
        (isinstance(op, keras.layers.Add) or type(op).__name__ == "Add")
        and len(keras.tree.flatten(op.input)) >= 2
        for op in model.operations
    )


def weights_snapshot(model):
    return [ops.convert_to_numpy(w).copy() for w in model.weights]
