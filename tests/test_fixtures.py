"""``.keras`` files written by keras_margins 0.1.0 (``tests/fixtures/v0_1``, made by
``tests/fixtures/make_fixtures.py`` before the model-aware losses were redesigned) load with
``safe_mode=True``, predict exactly what they predicted when saved, keep their loss state and
train on."""

import os

import keras
import numpy as np
import pytest

import keras_margins as km

FOLDER = os.path.join(os.path.dirname(__file__), "fixtures", "v0_1")
NAMES = ["sequential_arcface", "partial_fc", "pod", "loss_ensemble", "sample_margin", "ensemble_model"]


def _load(name):
    model = keras.models.load_model(os.path.join(FOLDER, f"{name}.keras"), safe_mode=True)
    data = np.load(os.path.join(FOLDER, f"{name}.npz"))
    return model, data["x"], data["predictions"]


@pytest.mark.parametrize("name", NAMES)
def test_fixture_predicts_as_saved(name):
    model, x, expected = _load(name)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_keeps_training(name):
    model, x, _ = _load(name)
    (xt, yt), _ = km.data.digits_classification()
    history = model.fit(xt[:64].astype("float32"), yt[:64], batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_fixture_loss_state_is_restored():
    model, _, _ = _load("pod")
    assert isinstance(model.loss, km.losses.POD)
    # PODDelta set δ = α·1·mean norm after epoch 0 and α·2·mean norm after epoch 1: not 0.05.
    delta = float(keras.ops.convert_to_numpy(model.loss.delta_variable))
    assert delta != pytest.approx(0.05)
    ensemble, _, _ = _load("loss_ensemble")
    c = keras.ops.convert_to_numpy(ensemble.loss.coefficients)
    assert c.shape == (2,) and np.all(c > 0)
    assert not np.allclose(c, [2 / 3, 1 / 3], atol=1e-6)  # trained two epochs from the prior
    partial, x, _ = _load("partial_fc")
    # Saved by 0.1.0 with K = C (rate 0.5 of 10 classes, batches of 32: the full-head path),
    # where that version did not advance the sampler's step: it reads back as saved, 0, and
    # now counts every training step.
    assert int(keras.ops.convert_to_numpy(partial.loss.step_variable)) == 0
    (xt, yt), _ = km.data.digits_classification()
    partial.fit(xt[:64].astype("float32"), yt[:64], batch_size=32, epochs=1, verbose=0)
    assert int(keras.ops.convert_to_numpy(partial.loss.step_variable)) == 2
