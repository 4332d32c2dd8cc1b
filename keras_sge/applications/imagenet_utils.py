"""ImageNet-1k class names, shipped with the package (no download)."""

import functools
import importlib.resources
import json

import numpy as np

CLASS_INDEX_FILE = "imagenet_class_index.json"


@functools.lru_cache(maxsize=None)
def _class_index():
    """`[(wnid, name), ...]` for the 1000 classes, in model output order.

    Package data `keras_sge/data/imagenet_class_index.json`, written by
    `scripts/make_imagenet_class_index.py` from KerasHub (Apache 2.0).
    """
    text = (
        importlib.resources.files("keras_sge")
        .joinpath("data", CLASS_INDEX_FILE)
        .read_text("utf-8")
    )
    index = json.loads(text)
    return tuple(
        (index[str(i)][0], index[str(i)][1]) for i in range(len(index))
    )


def imagenet_class_names():
    """The 1000 ImageNet class names, in model output order.

    Example:

    >>> from keras_sge.applications import imagenet_class_names
    >>> names = imagenet_class_names()
    >>> len(names), names[0], names[207]
    (1000, 'tench', 'golden_retriever')
    """
    return [name for _, name in _class_index()]


def decode_predictions(preds, top=5):
    """Decodes ImageNet predictions, as `keras.applications` does.

    Args:
        preds: a batch of predictions, shape `(samples, 1000)` (NumPy array
            or tensor; probabilities or logits).
        top: how many top guesses to return per sample.

    Returns:
        One list per sample of `(wnid, class_name, score)` tuples, best
        first.

    Example:

    >>> import numpy as np
    >>> from keras_sge.applications import decode_predictions
    >>> preds = np.zeros((1, 1000)); preds[0, 207] = 0.9
    >>> decode_predictions(preds, top=1)
    [[('n02099601', 'golden_retriever', 0.9)]]
    """
    from keras import ops

    preds = (
        np.asarray(ops.convert_to_numpy(preds))
        if not isinstance(preds, np.ndarray)
        else preds
    )
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions (i.e. a 2D array "
            f"of shape (samples, 1000)). Received array with shape: {preds.shape}"
        )
    if (
        isinstance(top, bool)
        or not isinstance(top, int)
        or not 1 <= top <= 1000
    ):
        raise ValueError(
            f"`top` must be an integer between 1 and 1000. Received: top={top!r}"
        )
    index = _class_index()
    results = []
    for pred in preds:
        best = np.argsort(-pred, kind="stable")[:top]
        results.append([(*index[i], float(pred[i])) for i in best])
    return results
