"""KerasHub, imported once for the whole subpackage, with a clear error if missing."""

MIN_KERAS_HUB_VERSION = (0, 32)
_INSTALL = 'pip install "keras-sge[hub]" (or "keras-hub>=0.32")'

try:
    import keras_hub
except ImportError as error:  # the `hub` extra is not installed
    raise ImportError(
        f"keras_sge.hub needs KerasHub 0.32 or later: {_INSTALL}."
    ) from error


def _check_version(version):
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:  # a development build: assume it is recent
        return
    if found < MIN_KERAS_HUB_VERSION:
        raise ImportError(
            f"keras_sge.hub needs KerasHub 0.32 or later: {_INSTALL}. "
            f"Received: keras_hub {version}"
        )


_check_version(keras_hub.__version__)

__all__ = ["keras_hub"]
