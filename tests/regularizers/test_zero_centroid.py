import keras
import numpy as np
import pytest

import keras_margins as km


def test_value_matches_reference_sum_and_mean():
    w = np.random.default_rng(0).normal(size=(4, 6))
    total = np.zeros(4)
    for k in range(6):
        total += w[:, k] / np.sqrt(np.sum(w[:, k] ** 2))
    ref = float(np.sum(total**2))
    assert float(km.regularizers.ZeroCentroid(3.0)(w)) == pytest.approx(3.0 * ref, rel=1e-10)
    assert float(km.regularizers.ZeroCentroid(3.0, "mean")(w)) == pytest.approx(3.0 * ref / 36, rel=1e-10)


def test_adds_to_model_losses_and_moves_centroid_to_zero():
    keras.utils.set_random_seed(0)
    reg = km.regularizers.ZeroCentroid(5.0)
    head = km.layers.LargestMarginHead(
        4, kernel_regularizer=reg, kernel_initializer=keras.initializers.Constant(0.0),
        kernel_layout="feature_major",  # .kernel is the variable: assignable
    )
    model = keras.Sequential([keras.Input((3,)), head])
    head.kernel.assign(np.abs(np.random.default_rng(0).normal(size=(3, 4))) + 0.1)  # all in one orthant
    assert len(model.losses) == 1
    before = float(km.ops.zero_centroid(head.kernel))
    model.compile(keras.optimizers.Adam(0.05), loss=km.losses.NormFace(), jit_compile=True)
    x = np.random.default_rng(1).normal(size=(64, 3)).astype("float32")
    model.fit(x, np.arange(64) % 4, epochs=20, verbose=0)
    assert float(km.ops.zero_centroid(head.kernel)) < 0.2 * before


def test_config_and_validation():
    km.testing.config_roundtrip(km.regularizers.ZeroCentroid(2.5, "mean"))
    with pytest.raises(ValueError, match="weight"):
        km.regularizers.ZeroCentroid(-1.0)
    with pytest.raises(ValueError, match="reduction"):
        km.regularizers.ZeroCentroid(1.0, "max")
