"""Resolves the `weights` argument of the SGE-ResNet builders."""

import os

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"


def _is_keras_weights_file(path):
    """`.weights.h5` / `.h5` files are HDF5; a `.keras` archive is a zip.

    torch's (zip) checkpoints are zips too, so zips count as Keras only by
    their `.keras` extension.
    """
    if path.endswith(".keras"):
        return True
    with open(path, "rb") as f:
        return f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE


def load_weights(model, weights):
    """Loads a Keras weights file or converts a PyTorch checkpoint into `model`.

    Raises:
        ValueError: `weights` is not an existing file, or the file does not
            fit the model (the message names the keys).
    """
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(
            "The `weights` argument should be either `None` (random "
            "initialization) or the path to a Keras weights file or a PyTorch "
            f"checkpoint. No such file: Received: weights={weights!r}"
        )
    if _is_keras_weights_file(path):
        model.load_weights(path)
        return
    from keras_sge import convert

    convert.load_checkpoint_into(model, path)
