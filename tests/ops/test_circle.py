"""km.ops.circle_class_level / circle_pairwise against the NumPy loop references of
tests/references.py (Sun et al. 2020, Eq. 6)."""

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import jit, value_and_grad


def _cosines(rng, n, c):
    x = ref.unit_rows(rng.normal(size=(n, 8)))
    w = ref.unit_rows(rng.normal(size=(c, 8)))
    return x, w, x @ w.T


@pytest.mark.parametrize("gamma", [1.0, 80.0, 256.0])
@pytest.mark.parametrize("margin", [0.0, 0.25, 0.4])
def test_class_level_matches_reference(gamma, margin):
    rng = np.random.default_rng(int(gamma) + int(100 * margin))
    labels = rng.integers(0, 6, size=12)
    _, _, cos = _cosines(rng, 12, 6)
    got = km.ops.circle_class_level(labels, cos.astype("float32"), margin, gamma)
    want = ref.circle_class_level(labels, cos.astype("float32").astype("float64"), margin, gamma)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(got))


def test_class_level_hand_made():
    # cos_y = 1, cos_other = -1: both alphas vanish -> softplus(0 + 0)... value log 2.
    cos = np.array([[1.0, -1.0], [-0.25, 1.0]], "float32")
    got = np.asarray(km.ops.circle_class_level([0, 0], cos, margin=0.25, gamma=256.0))
    # row 0: alpha_p = 0.25, alpha_n = [-1 + 0.25]_+ = 0 -> softplus(-256*0.25*0.25 + 0)
    np.testing.assert_allclose(got[0], ref.softplus(-16.0), rtol=1e-5)
    # row 1: s_p = -0.25: alpha_p = 1.5, term_p = -256*1.5*(-1) = 384; s_n = 1: alpha_n = 1.25,
    # term_n = 256*1.25*0.75 = 240 -> softplus(624) = 624 (no overflow at gamma=256)
    np.testing.assert_allclose(got[1], 624.0, rtol=1e-6)


def test_class_level_equals_pairwise_against_class_weights():
    """Class-level Circle == pair-wise Circle of features vs the class weights as references."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=10)
    x = rng.normal(size=(10, 8)).astype("float32")
    w = rng.normal(size=(8, 5)).astype("float32")
    class_level = km.ops.circle_class_level(labels, km.ops.cosine_similarity(x, w), 0.25, 256.0)
    sim = km.ops.pairwise_cosine(x, w.T)
    pos, neg = km.ops.pair_masks(labels, np.arange(5))
    pairwise, valid = km.ops.circle_from_similarity(sim, pos, neg, 0.25, 256.0)
    np.testing.assert_allclose(np.asarray(class_level), np.asarray(pairwise), rtol=1e-6)
    assert np.all(np.asarray(valid))
    # and both equal the per-anchor NumPy reference on (features, proxies)
    unit_x, unit_w = ref.unit_rows(x.astype("float64")), ref.unit_rows(w.T.astype("float64"))
    want = [
        ref.circle_anchor(
            [unit_x[i] @ unit_w[labels[i]]],
            [unit_x[i] @ unit_w[j] for j in range(5) if j != labels[i]],
            0.25,
            256.0,
        )
        for i in range(10)
    ]
    np.testing.assert_allclose(np.asarray(class_level), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("gamma", [1.0, 80.0, 256.0])
def test_pairwise_matches_reference(gamma):
    rng = np.random.default_rng(int(gamma))
    labels = rng.integers(0, 4, size=16)
    labels[0] = 9  # an anchor without positives -> 0
    emb = rng.normal(size=(16, 8)).astype("float32")
    got = np.asarray(km.ops.circle_pairwise(labels, emb, 0.4, gamma))
    want, valid = ref.circle_pairwise(labels, emb.astype("float64"), 0.4, gamma)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert got[0] == 0.0 and not valid[0]
    _, got_valid = km.ops.circle_pairwise(labels, emb, 0.4, gamma, return_valid=True)
    np.testing.assert_array_equal(np.asarray(got_valid), valid)


def test_pairwise_with_masks_matches_reference():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=12)
    emb = rng.normal(size=(12, 6)).astype("float32")
    pos_mask = rng.random((12, 12)) < 0.6
    neg_mask = rng.random((12, 12)) < 0.6
    got = km.ops.circle_pairwise(labels, emb, pos_mask=pos_mask, neg_mask=neg_mask)
    want, _ = ref.circle_pairwise(labels, emb.astype("float64"), 0.4, 80.0, pos_mask, neg_mask)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)


def test_no_positive_gives_zero_and_finite_gradients():
    emb = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    labels = np.array([0, 1, 2, 3])
    for gamma in (80.0, 256.0):
        loss, (grad,) = value_and_grad(
            lambda e: keras.ops.mean(km.ops.circle_pairwise(labels, e, 0.4, gamma)), emb
        )
        assert loss == 0.0
        assert np.all(np.isfinite(grad))


def test_gradients_are_finite_and_alphas_stop_gradient():
    """Gradient equals the analytic one with alphas held constant (stop-gradient, docs/papers.md §4.1)."""
    rng = np.random.default_rng(1)
    c = rng.uniform(-0.9, 0.9, size=(3, 4)).astype("float64")
    labels = np.array([0, 1, 3])
    m, gamma = 0.25, 4.0
    _, (grad,) = value_and_grad(lambda v: keras.ops.sum(km.ops.circle_class_level(labels, v, m, gamma)), c)
    want = np.zeros_like(c)
    for i, y in enumerate(labels):
        a_p = max(1 + m - c[i, y], 0)
        t_p = -gamma * a_p * (c[i, y] - (1 - m))
        negs = [j for j in range(4) if j != y]
        t_n = np.array([gamma * max(c[i, j] + m, 0) * (c[i, j] - m) for j in negs])
        total = t_p + ref.logsumexp(t_n)
        sig = 1 / (1 + np.exp(-total))
        want[i, y] = sig * (-gamma * a_p)
        soft = np.exp(t_n - ref.logsumexp(t_n))
        for w, j in zip(soft, negs):
            want[i, j] = sig * w * gamma * max(c[i, j] + m, 0)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)


def test_zero_embeddings_and_one_class_batch_are_safe():
    emb = np.zeros((4, 3), "float32")
    assert np.all(np.isfinite(km.ops.circle_pairwise([0, 0, 1, 1], emb)))
    assert np.all(np.asarray(km.ops.circle_pairwise([2, 2, 2, 2], np.eye(4, 3))) == 0.0)


def test_works_under_xla():
    fn = jit(lambda y, e: km.ops.circle_pairwise(y, e, miner=km.miners.BatchHardMiner()))
    rng = np.random.default_rng(0)
    y, e = rng.integers(0, 3, size=8), rng.normal(size=(8, 4)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(fn(y, e)),
        np.asarray(km.ops.circle_pairwise(y, e, miner=km.miners.BatchHardMiner())),
        rtol=1e-5,
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="gamma"):
        km.ops.circle_class_level([0], np.zeros((1, 3)), gamma=0.0)
    with pytest.raises(ValueError, match="margin"):
        km.ops.circle_pairwise([0, 1], np.eye(2), margin=1.5)
    with pytest.raises(ValueError, match="embeddings"):
        km.ops.circle_pairwise([0, 1], np.ones(2))
    with pytest.raises(ValueError, match="labels"):
        km.ops.circle_pairwise([0, 1, 2], np.eye(2))
    with pytest.raises(ValueError, match="labels"):
        km.ops.circle_class_level([0, 5], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        km.ops.circle_pairwise([0, 1], np.array([[np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="miner"):
        km.ops.circle_pairwise(
            [0, 1], np.eye(2), pos_mask=np.ones((2, 2), bool), miner=km.miners.AllPairsMiner()
        )


def test_pair_masks_reference():
    labels = np.array([0, 1, 0, 2, 1])
    pos, neg = km.ops.pair_masks(labels)
    want_pos = np.array([[i != j and labels[i] == labels[j] for j in range(5)] for i in range(5)])
    np.testing.assert_array_equal(np.asarray(pos), want_pos)
    np.testing.assert_array_equal(np.asarray(neg), labels[:, None] != labels[None, :])
    assert keras.backend.standardize_dtype(pos.dtype) == "bool"
