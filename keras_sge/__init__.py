"""keras_sge: Spatial Group-wise Enhance (SGE) for Keras 3.

- `keras_sge.SGE`: the layer. Models with it export with Keras's own
  `model.export` (SavedModel, ONNX, LiteRT) and run without keras_sge.
- `keras_sge.layers`: `SGE`, `SGEResidual` (a residual block's end with
  SGE) and `SqueezeExcite`, one module each.
- `keras_sge.applications`: SGE-ResNet-18/34/50/101/152 (and SE / plain
  variants), preprocessing, ImageNet labels, C2-C5 features, official
  PyTorch checkpoints on load.
- `keras_sge.convert`: `python -m keras_sge.convert SRC DST` turns an
  official checkpoint into a Keras weights file (or a KerasHub preset).
- `keras_sge.hub`: the SGE-ResNets as KerasHub backbones, classifiers and
  presets (needs the `hub` extra).
- `keras_sge.inspect` / `keras_sge.plotting`: SGE gate maps, per-group
  feature norms and their figures.
- `keras_sge.litert`: int8 LiteRT export with the SGE layers in float.

The submodules load on first use, so `import keras_sge` stays light.
"""

import importlib

from keras_sge import layers
from keras_sge.cost import model_cost
from keras_sge.layers.sge import SGE
from keras_sge.surgery import add_attention
from keras_sge.version import __version__

_LAZY_SUBMODULES = (
    "applications",
    "convert",
    "hub",
    "inspect",
    "litert",
    "plotting",
)

__all__ = [
    "SGE",
    "add_attention",
    "layers",
    "model_cost",
    "__version__",
    *_LAZY_SUBMODULES,
]


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"keras_sge.{name}")
    raise AttributeError(f"module 'keras_sge' has no attribute {name!r}")
