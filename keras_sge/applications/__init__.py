"""SGE-ResNet models in the style of `keras.applications`.

- `SGEResNet18`, `SGEResNet34`, `SGEResNet50`, `SGEResNet101`,
  `SGEResNet152`: the reference networks (`groups=None`: plain ResNet).
- `preprocess_input`, `center_crop_resize`: the reference's input pipeline.
- `decode_predictions`, `imagenet_class_names`: offline ImageNet labels.
- `stage_outputs`, `stage_output_names`: C2-C5 features for dense heads.

PyTorch checkpoints load with `weights="file.pth.tar"` or convert once with
`python -m keras_sge.convert SRC DST`.
"""

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
    "imagenet_class_names",
    "preprocess_input",
    "stage_output_names",
    "stage_outputs",
]
