"""km.ops.pod_loss / pod_terms against the NumPy loop reference of tests/references.py
(Zhu & Zu, POD loss)."""

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import finite_difference_grad, jit, value_and_grad


def _case(seed, n=10, d=6, c=4):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, c, n),
        rng.normal(size=(n, d)) * 2.0,
        km.ops.pedcc_centroids(c, d, seed=seed).astype("float64"),
    )


@pytest.mark.parametrize("seed,delta,weight", [(0, 0.05, 1.0), (1, 0.5, 0.3), (2, 0.0, 2.0)])
def test_matches_reference_random(seed, delta, weight):
    labels, x, c = _case(seed)
    got = km.ops.pod_loss(labels, x, c, delta=delta, decorrelation_weight=weight)
    np.testing.assert_allclose(got, ref.pod(labels, x, c, delta, weight), atol=1e-5)


def test_non_unit_centroids_are_normalised():
    labels, x, _ = _case(3)
    c = np.random.default_rng(3).normal(size=(6, 4)) * 5
    np.testing.assert_allclose(km.ops.pod_loss(labels, x, c), ref.pod(labels, x, c), atol=1e-5)


def test_hand_made_cases():
    c = km.ops.pedcc_centroids(3, 2)
    labels = np.array([0, 1, 2])
    # features exactly on their (unit) centroids, δ = 0: NaC = 0, residuals 0 -> loss 0
    assert float(km.ops.pod_loss(labels, c.T * 4.0, c, delta=0.0)) == pytest.approx(0.0, abs=1e-6)
    # x = 0: NaC = 1 per sample (δ > 0), the decorrelation term of residuals −c_y, all finite
    zero = np.zeros((3, 2))
    nac, decorrelation = km.ops.pod_terms(labels, zero, c)
    np.testing.assert_allclose(nac, [1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(float(km.ops.pod_loss(labels, zero, c)), ref.pod(labels, zero, c), atol=1e-5)
    assert np.isfinite(float(decorrelation))


def test_gradients_match_finite_differences_and_are_finite_at_zero():
    labels, x, c = _case(4, n=4, d=3, c=3)
    _, (grad,) = value_and_grad(lambda a: km.ops.pod_loss(labels, a, c, delta=0.1), x)
    np.testing.assert_allclose(
        grad, finite_difference_grad(lambda a: ref.pod(labels, a, c, 0.1), x), atol=1e-5
    )
    loss, (grad,) = value_and_grad(lambda a: km.ops.pod_loss(labels, a, c, delta=0.1), np.zeros((4, 3)))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


def test_delta_as_variable_and_xla():
    labels, x, c = _case(5)
    delta = keras.Variable(0.3, dtype="float64")
    fn = jit(lambda a, b: km.ops.pod_loss(a, b, c, delta=delta))
    np.testing.assert_allclose(fn(labels, x), ref.pod(labels, x, c, 0.3), atol=1e-5)


def test_bad_input():
    labels, x, c = _case(6)
    with pytest.raises(ValueError, match="features"):
        km.ops.pod_loss(labels[:1], x[:1], c)
    with pytest.raises(ValueError, match="kernel"):
        km.ops.pod_loss(labels, x, c[:5])
    with pytest.raises(ValueError, match="labels"):
        km.ops.pod_loss(labels + 4, x, c)
    with pytest.raises(ValueError, match="delta"):
        km.ops.pod_loss(labels, x, c, delta=-1.0)
    with pytest.raises(ValueError, match="features"):
        km.ops.pod_loss(labels, np.full_like(x, np.nan), c)
