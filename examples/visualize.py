"""Draw what SGE does in a model: gate maps, feature norms, histograms.

    python examples/visualize.py [IMAGE ...] --weights PATH --out DIR

`--weights` is one of:

- an official PyTorch checkpoint (implus/PytorchInsight, e.g.
  `sge_resnet50.pth.tar`; needs torch), converted on load: the depth is read
  from the checkpoint;
- a Keras weights file of an SGE-ResNet (`.weights.h5`, e.g. written by
  `python -m keras_sge.convert`; pass `--depth` unless it is 50);
- a whole model saved as `.keras`, e.g. by examples/train.py;
- omitted: a randomly initialised SGE-ResNet (`--seed`). Every gate is then
  sigmoid(1): the pictures show the tool and the network's features, not
  what SGE learns.

Each image is resized (shorter side) and centre-cropped to the model's input
size (224 when the model takes any size, or `--image-size`), preprocessed
with `keras_sge.applications.preprocess_input`, and run once through the
model. With no IMAGE the two photos shipped inside scikit-learn are used
(china.jpg, flower.jpg). For each image and chosen SGE layer (default: the
last stage's) it writes `<image>_<layer>.png`: the image, and for the most
spatially selective groups the feature norm before SGE, the gate and the
norm after SGE; and `activation_histograms.png` over all the images.
"""

import os
import sys

# The scripts' TensorFlow-only pieces are the `examples` package of this
# clone (not installed with keras_sge): put the clone on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from examples.training import cli

DEFAULT_IMAGE_SIZE = 224


def parse_args(argv):
    parser = cli.OneLineParser(
        prog="visualize.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help="image files (default: scikit-learn's photos)",
    )
    parser.add_argument(
        "--weights",
        help="PyTorch checkpoint, .weights.h5 or .keras model (default: random init)",
    )
    parser.add_argument(
        "--out", required=True, help="directory for the PNG figures"
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=None,
        choices=(18, 34, 50, 101, 152),
        help="SGE-ResNet depth",
    )
    parser.add_argument(
        "--layers",
        default="last_stage",
        help="'last_stage', 'all' or comma-separated SGE layer names",
    )
    parser.add_argument(
        "--groups",
        type=int,
        default=4,
        help="groups shown per figure (the most selective)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side for models that take any size",
    )
    parser.add_argument(
        "--dpi", type=int, default=100, help="resolution of the figures"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the random initialisation (no --weights)",
    )
    args = parser.parse_args(argv)
    for path in args.images + ([args.weights] if args.weights else []):
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {path}")
    for flag, value, least in (
        ("--groups", args.groups, 1),
        ("--image-size", args.image_size, 32),
        ("--dpi", args.dpi, 10),
    ):
        if value is not None and value < least:
            raise ValueError(
                f"{flag} must be at least {least}. Received: {value}"
            )
    if args.layers not in ("last_stage", "all"):
        args.layers = [name.strip() for name in args.layers.split(",")]
    return args


def load_model(weights, depth):
    """The model to inspect; see the module docstring for `weights`.

    The figures need only the SGE layers, so the network is built without
    its classifier: a checkpoint's classifier is ignored, whatever its
    number of classes.
    """
    import keras

    from keras_sge.applications import architectures
    from keras_sge.applications import checkpoint_model
    from keras_sge.applications.resnet import SGEResNet
    from keras_sge.applications.weights import WeightsFile

    if weights is not None and weights.endswith(".keras"):
        return keras.saving.load_model(weights, compile=False)
    if weights is not None and not WeightsFile(weights).is_keras:
        checkpoint = WeightsFile(weights)  # read once, for both calls
        arch = checkpoint_model.checkpoint_architecture(checkpoint, depth=depth)
        print(f"Building {architectures.describe(**arch)} from {weights} ...")
        return checkpoint_model.from_checkpoint(
            checkpoint, include_top=False, depth=depth
        )
    depth = depth or 50
    print(
        f"Building SGE-ResNet-{depth} ({'random init' if weights is None else weights}) ..."
    )
    return SGEResNet(
        depth,
        include_top=False,
        weights=weights,
        input_shape=_any_size_input_shape(),
    )


def _any_size_input_shape():
    import keras

    return (
        (None, None, 3)
        if keras.config.image_data_format() == "channels_last"
        else (3, None, None)
    )


def read_images(paths):
    """`{name: uint8 (H, W, 3) RGB}`, from files or scikit-learn's photos."""
    if not paths:
        from sklearn.datasets import load_sample_images

        photos = load_sample_images()
        return {
            _stem(path): image
            for path, image in zip(photos.filenames, photos.images)
        }
    from PIL import Image

    images = {}
    for path in paths:
        try:
            with Image.open(path) as image:
                images[_stem(path)] = np.asarray(image.convert("RGB"))
        except OSError as error:
            raise ValueError(
                f"cannot read {path} as an image: {error}"
            ) from None
    return images


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def model_image_size(model, data_format, requested):
    """The model's fixed input side, else `requested` (default 224)."""
    shape = (
        model.input_shape[1:3]
        if data_format == "channels_last"
        else model.input_shape[2:4]
    )
    if None in shape:
        return requested or DEFAULT_IMAGE_SIZE
    if shape[0] != shape[1]:
        raise ValueError(
            f"the model takes {shape[0]}x{shape[1]} images: only square inputs are supported"
        )
    if requested not in (None, shape[0]):
        raise ValueError(
            f"--image-size {requested} does not fit the model, "
            f"which takes {shape[0]}x{shape[0]} images"
        )
    return shape[0]


def model_inputs(crops, data_format):
    """The batch the model takes: preprocessed, in its data format."""
    from keras_sge.applications import preprocess_input

    batch = preprocess_input(crops, data_format="channels_last")
    return (
        batch
        if data_format == "channels_last"
        else np.transpose(batch, (0, 3, 1, 2))
    )


def visualize(args):
    import keras

    from keras_sge import inspect
    from keras_sge import plotting
    from keras_sge.applications import center_crop_resize

    keras.utils.set_random_seed(args.seed)
    images = read_images(args.images)
    model = load_model(args.weights, args.depth)
    data_format = inspect.sge_layers(model, "all")[0].data_format
    size = model_image_size(model, data_format, args.image_size)
    crops = np.stack(
        [
            np.asarray(center_crop_resize(image, size))
            for image in images.values()
        ]
    )
    maps = inspect.inspect_sge(
        model, model_inputs(crops, data_format), layers=args.layers
    )

    os.makedirs(args.out, exist_ok=True)
    written = []
    for index, name in enumerate(images):
        for layer_maps in maps.values():
            title = f"{layer_maps.name} on {name}"
            figure = plotting.plot_sge_maps(
                crops[index],
                layer_maps,
                index=index,
                groups=args.groups,
                title=title,
            )
            written.append(
                _save(
                    figure,
                    os.path.join(args.out, f"{name}_{layer_maps.name}.png"),
                    args.dpi,
                )
            )
    figure = plotting.plot_activation_histograms(maps)
    written.append(
        _save(
            figure,
            os.path.join(args.out, "activation_histograms.png"),
            args.dpi,
        )
    )
    return written


def _save(figure, path, dpi):
    figure.savefig(path, dpi=dpi)
    return path


def main(argv=None):
    try:
        args = parse_args(argv)
        written = visualize(args)
    except (ValueError, OSError, ImportError) as error:
        # One line, without a traceback: these are the user's inputs.
        sys.exit(f"visualize.py: error: {' '.join(str(error).split())}")
    print(f"Wrote {len(written)} figures to {args.out}:")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    main()
