"""The cost floor of a spatial gate, as an `attention` for the builders.

`FloorAttention` multiplies a block output by its own spatial mean: one
read (the mean) and one read-write pass (the multiply) over the feature map
in every runtime, with no further maths. The SGE-ResNet built with it shows
what any spatial attention costs here before its arithmetic; SGE needs one
more read of each block output (the similarity map). Benchmarks only: the
numbers it computes mean nothing.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sge_benchmarks")
class FloorAttention(keras.layers.Layer):
    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = data_format or keras.config.image_data_format()

    def call(self, inputs):
        spatial = (1, 2) if self.data_format == "channels_last" else (2, 3)
        return inputs * ops.mean(inputs, axis=spatial, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}
