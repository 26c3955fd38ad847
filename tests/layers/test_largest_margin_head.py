import keras
import numpy as np
import pytest

import keras_margins as km


def test_output_is_cosines_of_kernel_columns():
    head = km.layers.LargestMarginHead(5)
    x = np.random.default_rng(0).normal(size=(7, 3)).astype("float32")
    out = np.asarray(head(x))
    w = np.asarray(head.kernel)
    assert w.shape == (3, 5) and out.shape == (7, 5)
    ref = np.zeros((7, 5))
    for i in range(7):
        for j in range(5):
            ref[i, j] = x[i] @ w[:, j] / (np.linalg.norm(x[i]) * np.linalg.norm(w[:, j]))
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_mixed_precision_outputs_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), km.layers.LargestMarginHead(3)])
    assert model.layers[-1].compute_dtype == "float32"
    out = model(np.ones((2, 8), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    model.compile("adam", loss=km.losses.ArcFace(), jit_compile=True)
    hist = model.fit(np.random.normal(size=(32, 8)), np.arange(32) % 3, epochs=2, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))


def test_validation_errors():
    with pytest.raises(ValueError, match="num_classes"):
        km.layers.LargestMarginHead(1)
    with pytest.raises(ValueError, match="num_classes"):
        km.layers.LargestMarginHead(2.5)
    head = km.layers.LargestMarginHead(3)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        head(np.ones((2, 3, 4), "float32"))
    head = km.layers.LargestMarginHead(3)
    head(np.ones((2, 4), "float32"))
    with pytest.raises(ValueError):
        head(np.ones((2, 5), "float32"))


def test_config_roundtrip_with_regularizer():
    head = km.layers.LargestMarginHead(4, kernel_regularizer=km.regularizers.ZeroCentroid(2.0), name="h")
    clone = km.testing.config_roundtrip(head)
    assert isinstance(clone.kernel_regularizer, km.regularizers.ZeroCentroid)
    assert clone.kernel_regularizer.weight == 2.0


def test_save_load_identical(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5),
            km.layers.LargestMarginHead(3, kernel_regularizer=km.regularizers.ZeroCentroid(1.0)),
        ]
    )
    model.compile(
        "adam",
        loss=km.losses.LMSoftmax(scale=5.0, sample_margin_weight=0.5),
        metrics=[km.metrics.SampleMargin()],
    )
    x = np.random.default_rng(1).normal(size=(10, 6)).astype("float32")
    model.fit(x, np.arange(10) % 3, epochs=1, verbose=0)
    reloaded = km.testing.assert_save_load_identical(model, x, tmp_path)
    assert isinstance(reloaded.loss, km.losses.LargestMarginSoftmax)
    assert reloaded.loss.sample_margin_weight == 0.5
