"""Attention layers, one module each.

- `SGE`: Spatial Group-wise Enhance (the paper's layer); `sge_ops` holds
  its maths as functions (forward, hand-written gradient, layouts).
- `SGEResidual`: `relu(shortcut + SGE(x))` as one layer, the end of an
  SGE-ResNet block.
- `SqueezeExcite`: Squeeze-and-Excitation, the paper's main comparison.
"""

from keras_sge.layers.sge import SGE
from keras_sge.layers.sge_residual import SGEResidual
from keras_sge.layers.squeeze_excite import SqueezeExcite

__all__ = ["SGE", "SGEResidual", "SqueezeExcite"]
