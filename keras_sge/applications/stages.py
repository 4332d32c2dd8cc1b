"""The C2-C5 stage outputs of an SGE-ResNet, for detection/segmentation."""

import re

import keras

STAGES = ("C2", "C3", "C4", "C5")
_BLOCK_OUTPUT = re.compile(r"^conv([2-5])_block(\d+)_out$")


def stage_output_names(model):
    """Names of the layers giving C2, C3, C4 and C5: `conv{2..5}_block{last}_out`.

    Strides relative to the input: 4, 8, 16 and 32.
    """
    last = {}
    for layer in model.layers:
        match = _BLOCK_OUTPUT.match(layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            last[stage] = max(last.get(stage, 0), block)
    if sorted(last) != [2, 3, 4, 5]:
        raise ValueError(
            f"Model {model.name!r} has no conv{{2..5}}_block{{i}}_out layers for every "
            f"stage (found stages {sorted(last)}); pass a keras_sge.applications model."
        )
    return [f"conv{stage}_block{last[stage]}_out" for stage in range(2, 6)]


def stage_outputs(model, name=None):
    """A multi-output model giving the four stage outputs C2-C5 of `model`.

    The paper's COCO gains come from SGE in the backbone; this is the
    backbone as a feature extractor for FPN-style heads. The returned model
    shares its layers (and weights) with `model` and outputs a dict
    `{"C2": ..., "C3": ..., "C4": ..., "C5": ...}` at strides 4, 8, 16, 32.

    Args:
        model: a model from `keras_sge.applications` (any `include_top`).
        name: the new model's name (default: `"<model name>_stages"`).

    Example:

    ```python
    import numpy as np
    from keras_sge import applications

    backbone = applications.SGEResNet50(include_top=False, input_shape=(64, 64, 3))
    features = applications.stage_outputs(backbone)
    images = applications.preprocess_input(np.zeros((1, 64, 64, 3)))
    c5 = features(images)["C5"]  # (1, 2, 2, 2048); C2 is (1, 16, 16, 256)
    ```

    Equivalently, by hand: `keras.Model(backbone.input,
    [backbone.get_layer(n).output for n in stage_output_names(backbone)])`.
    """
    outputs = {
        stage: model.get_layer(layer_name).output
        for stage, layer_name in zip(STAGES, stage_output_names(model))
    }
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=name or f"{model.name}_stages")
