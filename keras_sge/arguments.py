"""Argument checks shared by the layers, builders and data pipelines.

A leaf module (it imports only Keras), so that every part of the package can
use it without import cycles. Errors name the argument and the value.
"""

import keras

DATA_FORMATS = ("channels_last", "channels_first")


def check_positive_int(name, value, hint=""):
    """Returns `value` if it is an int >= 1 (not a bool), else raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer{hint}. Received: {name}={value!r}"
        )
    return value


def standardize_data_format(data_format):
    """`None` -> Keras's image data format; otherwise checked and lower-cased."""
    if data_format is None:
        return keras.config.image_data_format()
    value = str(data_format).lower()
    if value not in DATA_FORMATS:
        raise ValueError(
            "`data_format` must be 'channels_last' or 'channels_first'. "
            f"Received: data_format={data_format!r}"
        )
    return value
