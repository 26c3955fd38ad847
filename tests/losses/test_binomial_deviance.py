"""km.losses.BinomialDevianceLoss against the NumPy loop reference of tests/references.py
(Yi et al. 2014, per-anchor normalisation of the ensemble-of-losses authors' BinomialLoss)."""

import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import config_roundtrip, jit, value_and_grad


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha, beta, cost", [(2.0, 0.5, 25.0), (2.0, 0.5, 12.5), (1.0, -0.2, 3.0)])
def test_matches_reference(seed, alpha, beta, cost):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 10)
    emb = rng.normal(size=(10, 5)).astype("float32")
    got = float(km.losses.BinomialDevianceLoss(alpha, beta, cost)(labels, emb))
    want = np.mean(ref.binomial_deviance(labels, emb.astype("float64"), alpha, beta, cost))
    np.testing.assert_allclose(got, want, rtol=2e-5)


def test_hand_made_pair():
    # two samples of one class at 90°: s = 0 -> softplus(-2 * (0 - 0.5)) = softplus(1) each
    emb = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    loss = km.losses.BinomialDevianceLoss()
    np.testing.assert_allclose(float(loss([3, 3], emb)), np.log1p(np.e), rtol=1e-6)
    # other classes: negative term softplus(2 * 25 * (0 - 0.5)) = softplus(-25)
    np.testing.assert_allclose(float(loss([3, -4], emb)), np.log1p(np.exp(-25.0)), rtol=1e-5)


def test_xla_gradients_and_config():
    rng = np.random.default_rng(0)
    labels, emb = rng.integers(0, 2, 8), rng.normal(size=(8, 4)).astype("float32")
    loss = km.losses.BinomialDevianceLoss(cost=12.5)
    compiled = jit(lambda y, e: loss(y, e))
    np.testing.assert_allclose(float(compiled(labels, emb)), float(loss(labels, emb)), rtol=1e-5)
    value, (grad,) = value_and_grad(lambda e: loss(labels, e), np.zeros((8, 4), "float32"))
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    clone = config_roundtrip(loss)
    assert (clone.alpha, clone.beta, clone.cost) == (2.0, 0.5, 12.5)
    assert km.losses.BinomialDevianceLoss.needs == "embedding"
