"""A servable SavedModel: raw images in, probabilities and class names out.

The SavedModel holds the network's traced graph and weights, the evaluation
preprocessing and the class names, so it serves (TF Serving,
`tf.saved_model.load`) without Keras or keras_sge. Its signatures:

- `serving_default(images)`: a batch of encoded JPEG / PNG / GIF / BMP
  strings, each of any size, as TF Serving clients send them;
- `serve_uint8(images)`: a uint8 RGB batch `(N, H, W, 3)`, any `H, W`.

Both resize the shorter side to `image_size * 256 / 224`, crop the centre,
scale the pixels as in training (the network's own preprocessing: ImageNet
mean and std for an SGE-ResNet, that of its family for a keras.applications
network; see `data.preprocess`), and return `probabilities` `(N,
classes)`, `top_k_indices` `(N, k)` and `top_k_names` `(N, k)` with `k =
min(5, classes)`. The loaded object also has a `class_names` variable.
"""

import tensorflow as tf

from examples.training import data


class ServingModule(tf.Module):
    """The exported object; see the module docstring.

    Args:
        model: a Keras classifier taking `(N, image_size, image_size, 3)`
            preprocessed images and returning probabilities.
        class_names: the names of the model's outputs, in order.
        image_size: the side of the model's square input.
        preprocessing: how the model wants its pixels scaled, one of
            `data.PREPROCESSING_MODES`.
    """

    def __init__(self, model, class_names, image_size, preprocessing="torch"):
        super().__init__(name="sge_classifier")
        # The Keras model stays untracked: the signatures' graphs are all a
        # loader needs, plus the variables, tracked (hence saved) as a list.
        object.__setattr__(self, "_model", model)
        self.model_variables = list(model.variables)
        self.class_names = tf.Variable(
            list(class_names), trainable=False, name="class_names"
        )
        self.image_size = image_size
        self.preprocessing = preprocessing
        self.top_k = min(5, len(class_names))
        # Both signatures call this one function: the network is traced once
        # and SavedModel traces the gradients of its SGE layers once, instead
        # of once per signature. Untracked: the signatures hold it.
        predict = tf.function(
            self._predict,
            input_signature=[
                tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
            ],
        )
        object.__setattr__(self, "_predict_batch", predict)

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="images")]
    )
    def serve_encoded(self, images):
        size = self.image_size
        spec = tf.TensorSpec([size, size, 3], tf.float32)
        batch = tf.map_fn(
            lambda image: data.eval_image(
                data.decode(image), size, self.preprocessing
            ),
            images,
            fn_output_signature=spec,
        )
        return self._predict_batch(batch)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
        ]
    )
    def serve_uint8(self, images):
        return self._predict_batch(
            data.eval_image(images, self.image_size, self.preprocessing)
        )

    def _predict(self, batch):
        probabilities = tf.cast(self._model(batch, training=False), tf.float32)
        top = tf.math.top_k(probabilities, k=self.top_k)
        return {
            "probabilities": probabilities,
            "top_k_indices": top.indices,
            "top_k_names": tf.gather(self.class_names, top.indices),
        }


def export_saved_model(
    model, path, class_names, image_size, preprocessing="torch"
):
    """Writes the SavedModel to `path`; returns the module it was made from."""
    module = ServingModule(model, class_names, image_size, preprocessing)
    # The SGE layers trace plain TensorFlow ops: no XLA-only function,
    # which TF Serving would not run. The signatures are traced inside
    # `save`: traced before it, they would be traced again there (TensorFlow
    # keys its traces by the save context).
    signatures = {
        "serving_default": module.serve_encoded,
        "serve_uint8": module.serve_uint8,
    }
    tf.saved_model.save(module, path, signatures=signatures)
    return module
