"""Keras files written when SGE blocks used plain `SGE` layers still load.

Such files key the blocks' SGE weights as `layers/sge_K` (Keras keys a
file's groups by class name); today's blocks are `SGEResidual` layers
(`layers/sge_residual_K`). A model whose blocks are `SGE` layers followed
by Add and ReLU (a callable attention) writes exactly that old layout.
"""

import h5py
import numpy as np

from keras_sge import applications
from keras_sge.layers import SGE
from tests import harness


def old_layout_model():
    model = applications.SGEResNet18(
        input_shape=(32, 32, 3),
        classes=5,
        attention=lambda channels, name: SGE(groups=64, name=name),
    )
    rng = np.random.default_rng(3)
    # Positive 1-D weights: valid BN variances and non-zero SGE gammas.
    model.set_weights(
        [
            w + rng.uniform(0.1, 0.5, w.shape).astype(w.dtype)
            if w.ndim == 1
            else w
            for w in model.get_weights()
        ]
    )
    return model


def images():
    return (
        np.random.default_rng(4)
        .uniform(-1, 1, (2, 32, 32, 3))
        .astype("float32")
    )


def test_old_weights_file_and_keras_archive_load_into_todays_builder(tmp_path):
    old = old_layout_model()
    old.save_weights(tmp_path / "old.weights.h5")
    old.save(tmp_path / "old.keras")
    with h5py.File(tmp_path / "old.weights.h5", "r") as f:
        assert "sge_7" in f["layers"] and "sge_residual" not in f["layers"]
    expected = old.predict(images(), verbose=0)
    for name in ("old.weights.h5", "old.keras"):
        model = applications.SGEResNet18(
            weights=str(tmp_path / name), input_shape=(32, 32, 3), classes=5
        )
        harness.assert_all_close(
            model.predict(images(), verbose=0), expected, rtol=1e-5, atol=1e-6
        )
        # The backbone alone too (the classifier is dropped).
        backbone = applications.SGEResNet18(
            weights=str(tmp_path / name),
            include_top=False,
            input_shape=(32, 32, 3),
        )
        np.testing.assert_array_equal(
            backbone.get_layer("conv5_block2_sge").get_weights()[0],
            old.get_layer("conv5_block2_attention").get_weights()[0],
        )


def test_todays_files_load_without_translation(tmp_path):
    model = applications.SGEResNet18(input_shape=(32, 32, 3), classes=5)
    model.save_weights(tmp_path / "new.weights.h5")
    with h5py.File(tmp_path / "new.weights.h5", "r") as f:
        assert "sge_residual_7" in f["layers"] and "sge" not in f["layers"]
    again = applications.SGEResNet18(
        weights=str(tmp_path / "new.weights.h5"),
        input_shape=(32, 32, 3),
        classes=5,
    )
    harness.assert_all_close(
        again.predict(images(), verbose=0), model.predict(images(), verbose=0)
    )
