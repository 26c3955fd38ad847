"""km.layers.L2Normalize: values against NumPy, zero rows, axes, XLA, config and .keras round trip."""

import keras
import numpy as np
import pytest

import keras_margins as km


def _ref(x, axis):
    x = np.asarray(x, "float64")
    out = np.empty_like(x)
    moved, dest = np.moveaxis(x, axis, -1), np.moveaxis(out, axis, -1)
    for index in np.ndindex(moved.shape[:-1]):  # one vector at a time
        v = moved[index]
        norm = np.sqrt(sum(float(t) * float(t) for t in v))
        dest[index] = v / max(norm, 1e-12)
    return out


@pytest.mark.parametrize("shape, axis", [((7, 5), -1), ((7, 5), 0), ((3, 4, 6), 1), ((3, 4, 6), -1)])
def test_values_equal_numpy(shape, axis):
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    x.reshape(-1)[:3] *= 100.0
    got = np.asarray(km.layers.L2Normalize(axis=axis)(x))
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, _ref(x, axis), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(got, axis=axis), 1.0, rtol=1e-6)


def test_zero_and_tiny_rows_and_nan():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-20, 0.0], [-2.0, 0.0]], "float32")
    got = np.asarray(km.layers.L2Normalize()(x))
    np.testing.assert_allclose(got, [[0.6, 0.8], [0.0, 0.0], [1e-8, 0.0], [-1.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(got, _ref(x, -1), rtol=1e-6)
    with pytest.raises(ValueError, match="inputs"):
        km.layers.L2Normalize()(np.array([[np.nan, 1.0]], "float32"))


def test_under_xla_and_keras_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 6)).astype("float32")
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4), km.layers.L2Normalize(name="unit")]
    )
    model.compile(jit_compile=True)
    dense = model.layers[0]
    want = _ref(x @ np.asarray(dense.kernel) + np.asarray(dense.bias), -1)
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    reloaded = km.testing.assert_save_load_identical(model, x, directory=tmp_path)
    layer = reloaded.get_layer("unit")
    assert type(layer) is km.layers.L2Normalize and layer.axis == -1
    clone = km.testing.config_roundtrip(km.layers.L2Normalize(axis=1, name="n"))
    assert clone.axis == 1 and clone.name == "n"
