"""The README's quick start, runnable: SGE in Sequential and functional models.

    python examples/quickstart.py --out runs/quickstart

Trains a small SGE convnet for one epoch on scikit-learn's handwritten
digits (shipped inside its wheel, no download), then exports a SavedModel
that serves without keras_sge.
"""

import argparse
import os

import keras
import numpy as np

import keras_sge


def digits_32x32():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[..., None].astype("float32") / 16.0
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)  # 8x8 -> 32x32
    return images, digits.target


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras_sge.SGE(groups=8),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def functional_model():
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras_sge.SGE(groups=16)(x)  # before the activation, as in SGE-ResNet
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quickstart", help="output directory")
    args = parser.parse_args()
    images, labels = digits_32x32()
    for build in (sequential_model, functional_model):
        model = build()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(images[:1500], labels[:1500], epochs=1, batch_size=64, verbose=0)
        _, accuracy = model.evaluate(images[1500:], labels[1500:], verbose=0)
        print(f"{build.__name__}: loss {history.history['loss'][-1]:.3f}, validation accuracy {accuracy:.3f}")
    export_dir = os.path.join(args.out, "saved_model")
    model.export(export_dir, format="tf_saved_model", verbose=False)
    print(f"exported a SavedModel to {export_dir}")


if __name__ == "__main__":
    main()
