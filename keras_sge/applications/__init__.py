"""SGE-ResNet models in the style of `keras.applications`.

- `SGEResNet18`, `SGEResNet34`, `SGEResNet50`, `SGEResNet101`,
  `SGEResNet152`: the reference networks; `attention="se"` gives the
  SE-ResNets, `groups=None` / `attention=None` the plain ResNets.
- `from_checkpoint`: the network a PyTorch checkpoint holds, with its
  weights.
- `preprocess_input`, `center_crop_resize`: the reference's input pipeline.
- `decode_predictions`, `imagenet_class_names`: offline ImageNet labels.
- `stage_outputs`, `stage_output_names`: C2-C5 features for dense heads.

PyTorch checkpoints load with `weights="file.pth.tar"` or convert once with
`python -m keras_sge.convert SRC DST`.

Modules, in import order (each imports only those above it):
`architectures` (the tables), `torch_checkpoint` (reading checkpoints),
`torch_mapping` (Keras <-> torch names and layouts), `weights` (the
`weights` argument), `resnet` (the builders), `checkpoint_model`
(`from_checkpoint`), and the
independent `preprocessing`, `imagenet_utils` and `stages`.
"""

from keras_sge.applications.checkpoint_model import from_checkpoint
from keras_sge.applications.imagenet_utils import decode_predictions
from keras_sge.applications.imagenet_utils import imagenet_class_names
from keras_sge.applications.preprocessing import center_crop_resize
from keras_sge.applications.preprocessing import preprocess_input
from keras_sge.applications.resnet import SGEResNet18
from keras_sge.applications.resnet import SGEResNet34
from keras_sge.applications.resnet import SGEResNet50
from keras_sge.applications.resnet import SGEResNet101
from keras_sge.applications.resnet import SGEResNet152
from keras_sge.applications.stages import stage_output_names
from keras_sge.applications.stages import stage_outputs

__all__ = [
    "SGEResNet18",
    "SGEResNet34",
    "SGEResNet50",
    "SGEResNet101",
    "SGEResNet152",
    "center_crop_resize",
    "decode_predictions",
    "from_checkpoint",
    "imagenet_class_names",
    "preprocess_input",
    "stage_output_names",
    "stage_outputs",
]
