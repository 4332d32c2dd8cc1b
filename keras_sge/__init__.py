"""keras_sge: Spatial Group-wise Enhance (SGE) for Keras 3."""

from keras_sge.layers.sge import SGE
from keras_sge.version import __version__

__all__ = ["SGE", "__version__"]
