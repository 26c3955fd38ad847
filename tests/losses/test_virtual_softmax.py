"""km.losses.VirtualSoftmax: NLL of the head's log-probabilities; trains digits under XLA."""

import keras
import numpy as np
import pytest

import keras_margins as km


def test_value_sample_weight_and_config():
    rng = np.random.default_rng(0)
    log_probs = np.log(rng.dirichlet(np.ones(4), size=6))
    y = rng.integers(0, 4, 6)
    loss = km.losses.VirtualSoftmax()
    nll = np.array([-log_probs[i, y[i]] for i in range(6)])
    assert float(loss(y, log_probs)) == pytest.approx(nll.mean(), rel=1e-6)
    weights = rng.uniform(size=6)
    assert float(loss(y[:, None], log_probs, sample_weight=weights)) == pytest.approx(
        np.mean(nll * weights), rel=1e-6
    )
    clone = km.testing.config_roundtrip(loss)
    assert clone.name == "virtual_softmax"
    with pytest.raises(ValueError, match="labels"):
        loss(y + 4, log_probs)
    with pytest.raises(ValueError, match="y_pred"):
        loss(y, log_probs[:, :1])


def _train(epochs):
    (x, y), (xt, yt) = km.data.digits_classification()
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(32)]
    )
    head = km.layers.VirtualSoftmaxHead(10)
    model = keras.Sequential([backbone, head])
    model.compile(
        keras.optimizers.Adam(3e-3), loss=km.losses.VirtualSoftmax(), metrics=["accuracy"], jit_compile=True
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model.evaluate(xt, yt, verbose=0, return_dict=True)


# README, feature table: "digits >= 97 %" (seed 0, 20 epochs; measured 97.3 %, 98.0 % with seed 1).
@pytest.mark.slow
def test_digits_accuracy_at_least_97_percent_under_xla():
    assert _train(20)["accuracy"] >= 0.97
