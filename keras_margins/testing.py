"""Test utilities for code built on keras_margins (used by our own test-suite too).

Small public equivalents of Keras' private layer-test helpers.
"""

import os
import tempfile

import keras
import numpy as np


def config_roundtrip(obj):
    """Serialise ``obj`` with Keras and back; assert the config survives unchanged."""
    serialized = keras.saving.serialize_keras_object(obj)
    clone = keras.saving.deserialize_keras_object(serialized, safe_mode=True)
    assert type(clone) is type(obj), (type(clone), type(obj))
    assert clone.get_config() == obj.get_config(), (clone.get_config(), obj.get_config())
    return clone


def assert_save_load_identical(model, x, directory=None, atol=0.0):
    """``model.save(".keras")`` then ``load_model(safe_mode=True)``: predictions must match.

    Returns the reloaded model. ``atol=0`` demands bit-identical outputs.
    """
    directory = directory or tempfile.mkdtemp(prefix="km_roundtrip_")
    path = os.path.join(str(directory), "model.keras")
    before = model.predict(x, verbose=0)
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    after = reloaded.predict(x, verbose=0)
    for b, a in zip(_flatten(before), _flatten(after)):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    return reloaded


def _flatten(value):
    if isinstance(value, dict):
        return [value[k] for k in sorted(value)]
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def finite_difference_grad(fn, x, eps=1e-6):
    """Central finite differences of a scalar NumPy function ``fn`` at float64 array ``x``."""
    x = np.array(x, dtype="float64")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        orig = x[idx]
        x[idx] = orig + eps
        plus = fn(x)
        x[idx] = orig - eps
        minus = fn(x)
        x[idx] = orig
        grad[idx] = (plus - minus) / (2 * eps)
    return grad
