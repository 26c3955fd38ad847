"""km.ops.virtual_softmax / virtual_log_probs against the NumPy loop reference of
tests/references.py (Chen et al. 2018)."""

import math

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import finite_difference_grad, jit, value_and_grad


def _case(seed, n=9, d=5, c=4, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, c, n), rng.normal(size=(n, d)) * scale, rng.normal(size=(d, c))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_random(seed):
    labels, x, w = _case(seed)
    np.testing.assert_allclose(km.ops.virtual_softmax(labels, x, w), ref.virtual_softmax(labels, x, w),
                               atol=1e-5)


def test_float32_and_large_logits_without_clipping():
    labels, x, w = _case(3, scale=300.0)
    got = km.ops.virtual_softmax(labels, x.astype("float32"), w.astype("float32"))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref.virtual_softmax(labels, x, w), rtol=1e-5, atol=1e-3)


def test_hand_made_cases():
    # x = 0: all C + 1 logits are 0 -> log(C + 1)
    np.testing.assert_allclose(
        km.ops.virtual_softmax([0, 2], np.zeros((2, 3)), np.ones((3, 5))), [math.log(6)] * 2, atol=1e-6
    )
    # x parallel to W_y: z_virt = z_y, loss = softmax CE + log-term of one more copy of e^{z_y}
    w = np.array([[2.0, 0.0], [0.0, 1.0]])
    x = np.array([[3.0, 0.0]])
    expected = -math.log(math.exp(6) / (math.exp(6) + math.exp(0) + math.exp(6)))
    np.testing.assert_allclose(km.ops.virtual_softmax([0], x, w), [expected], atol=1e-6)


def test_loss_is_at_least_softmax_and_log_probs_are_consistent():
    labels, x, w = _case(4, n=12)
    loss = np.asarray(km.ops.virtual_softmax(labels, x, w))
    logits = x @ w
    softmax_ce = np.log(np.exp(logits).sum(1)) - logits[np.arange(12), labels]
    assert np.all(loss >= softmax_ce - 1e-9)
    u = np.asarray(km.ops.virtual_log_probs(x, w))
    for j in range(w.shape[1]):  # u[:, j] is minus the loss had the label been j
        np.testing.assert_allclose(-u[:, j], ref.virtual_softmax(np.full(12, j), x, w), atol=1e-5)


def test_virtual_clip_matches_reference():
    labels, x, w = _case(5, scale=10.0)
    np.testing.assert_allclose(
        km.ops.virtual_softmax(labels, x, w, virtual_clip=15.0), ref.virtual_softmax(labels, x, w, clip=15.0),
        atol=1e-5,
    )


def test_gradients_match_finite_differences():
    labels, x, w = _case(6, n=3, d=3, c=3)
    _, (gx, gw) = value_and_grad(lambda a, b: keras.ops.sum(km.ops.virtual_softmax(labels, a, b)), x, w)
    np.testing.assert_allclose(
        gx, finite_difference_grad(lambda a: ref.virtual_softmax(labels, a, w).sum(), x), atol=1e-5
    )
    np.testing.assert_allclose(
        gw, finite_difference_grad(lambda b: ref.virtual_softmax(labels, x, b).sum(), w), atol=1e-5
    )
    _, (g_zero,) = value_and_grad(
        lambda a: keras.ops.sum(km.ops.virtual_softmax([0, 1], a, w)), np.zeros((2, 3))
    )
    assert np.all(np.isfinite(g_zero))


def test_runs_under_xla():
    labels, x, w = _case(7)
    fn = jit(lambda a, b, c: km.ops.virtual_softmax(a, b, c))
    np.testing.assert_allclose(fn(labels, x, w), ref.virtual_softmax(labels, x, w), atol=1e-5)


def test_bad_input():
    labels, x, w = _case(8)
    with pytest.raises(ValueError, match="kernel"):
        km.ops.virtual_softmax(labels, x, w[:4])
    with pytest.raises(ValueError, match="features"):
        km.ops.virtual_softmax(labels, x[0], w)
    with pytest.raises(ValueError, match="labels"):
        km.ops.virtual_softmax(labels + 4, x, w)
    with pytest.raises(ValueError, match="features"):
        km.ops.virtual_softmax(labels, np.full_like(x, np.nan), w)
    with pytest.raises(ValueError, match="virtual_clip"):
        km.ops.virtual_softmax(labels, x, w, virtual_clip=0.0)
