"""km.layers.PEDCCHead: fixed centroids, cosine output, saved (not regenerated) on load."""

import keras
import numpy as np
import pytest

import keras_margins as km


def _cosines(x, c):
    out = np.zeros((len(x), c.shape[1]))
    for i in range(len(x)):
        for j in range(c.shape[1]):
            out[i, j] = x[i] @ c[:, j] / (np.linalg.norm(x[i]) * np.linalg.norm(c[:, j]))
    return out


def _model(seed=0):
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)])
    return km.models.MarginModel(backbone, km.layers.PEDCCHead(4, seed=seed))


def test_centroids_fixed_and_output_cosines():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 8)).astype("float32")
    head = km.layers.PEDCCHead(4, seed=2)
    out = head(x)
    np.testing.assert_array_equal(head.kernel.numpy(), km.ops.pedcc_centroids(4, 8, seed=2))
    np.testing.assert_allclose(out, _cosines(x, head.kernel.numpy()), atol=1e-5)
    assert head.trainable_weights == [] and len(head.non_trainable_weights) == 1


def test_centroids_set_when_built_symbolically_and_unchanged_by_training():
    model = _model(seed=1)
    x = np.random.default_rng(1).normal(size=(16, 6)).astype("float32")
    y = np.arange(16) % 4
    model.compile("adam", loss=km.losses.POD(), jit_compile=True)
    model.fit(x, y, epochs=2, verbose=0)
    np.testing.assert_array_equal(model.head.kernel.numpy(), km.ops.pedcc_centroids(4, 8, seed=1))


def test_saved_centroids_are_restored_not_regenerated(tmp_path):
    model = _model()
    x = np.random.default_rng(2).normal(size=(8, 6)).astype("float32")
    model.predict(x, verbose=0)
    custom = km.ops.pedcc_centroids(4, 8, seed=99)
    model.head.kernel.assign(custom)
    reloaded = km.testing.assert_save_load_identical(model, x, directory=tmp_path)
    np.testing.assert_array_equal(reloaded.head.kernel.numpy(), custom)
    seq = keras.Sequential([keras.Input((8,)), km.layers.PEDCCHead(5, seed=3)])
    (tmp_path / "seq").mkdir()
    km.testing.assert_save_load_identical(seq, x @ np.ones((6, 8), "float32"), directory=tmp_path / "seq")


def test_config_and_bad_input():
    head = km.testing.config_roundtrip(km.layers.PEDCCHead(7, seed=5))
    assert head.seed == 5 and head.num_classes == 7
    with pytest.raises(ValueError, match="seed"):
        km.layers.PEDCCHead(3, seed="a")
    with pytest.raises(ValueError, match="num_classes"):
        km.layers.PEDCCHead(1)
    with pytest.raises(ValueError):
        km.layers.PEDCCHead(3)(np.zeros((2, 3, 4), "float32"))
