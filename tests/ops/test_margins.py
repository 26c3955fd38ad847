"""cosine_similarity, sample_margin, class_margin, zero_centroid vs the NumPy loop references
of tests/references.py."""

import math

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import value_and_grad


@pytest.mark.float64
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cosine_similarity_random(seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=(9, 6)), rng.normal(size=(6, 4))
    np.testing.assert_allclose(
        np.asarray(km.ops.cosine_similarity(x.astype("float32"), w.astype("float32"))),
        ref.cosine(x, w),
        atol=1e-6,
    )
    np.testing.assert_allclose(np.asarray(km.ops.cosine_similarity(x, w)), ref.cosine(x, w), atol=1e-12)


def test_cosine_zero_rows_are_zero_with_finite_gradient():
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], "float32")
    w = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], "float32")
    cos = km.ops.cosine_similarity(x, w)
    loss, (gx, gw) = value_and_grad(
        lambda a, b: keras.ops.sum(
            km.ops.margin_softmax([0, 1], km.ops.cosine_similarity(a, b), 64.0, m2=0.5)
        ),
        x,
        w,
    )
    np.testing.assert_allclose(np.asarray(cos)[0], [0.0, 0.0])
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gw))
    assert np.isfinite(loss)


def test_cosine_mismatched_dims():
    with pytest.raises(ValueError, match="kernel"):
        km.ops.cosine_similarity(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="features"):
        km.ops.cosine_similarity(np.ones((2, 3, 1)), np.ones((3, 5)))


@pytest.mark.float64
@pytest.mark.parametrize("seed", [0, 1])
def test_sample_margin_random(seed):
    rng = np.random.default_rng(seed)
    cos = rng.uniform(-1, 1, size=(12, 5))
    labels = rng.integers(0, 5, size=12)
    labels[:2] = [0, 4]
    np.testing.assert_allclose(
        np.asarray(km.ops.sample_margin(labels, cos)), ref.sample_margin(labels, cos), atol=1e-12
    )


def test_sample_margin_hand_case():
    got = np.asarray(km.ops.sample_margin([0, 1], np.array([[0.9, 0.1, -0.2], [0.5, -0.5, 0.4]])))
    np.testing.assert_allclose(got, [0.8, -1.0], atol=1e-12)
    got = np.asarray(km.ops.sample_margin(np.array([[1]]), np.array([[-1.0, 1.0]])))  # (N,1) labels
    np.testing.assert_allclose(got, [2.0])


@pytest.mark.float64
@pytest.mark.parametrize("seed", [0, 1])
def test_class_margin_and_zero_centroid_random(seed):
    w = np.random.default_rng(seed).normal(size=(5, 7))
    assert float(km.ops.zero_centroid(w)) == pytest.approx(ref.zero_centroid(w), rel=1e-10)
    got = km.ops.class_margin(w)
    if keras.backend.standardize_dtype(got.dtype) != "float64":
        # Keras' dtype promotion maps float64 to float32 off TensorFlow (BIT64_TO_BIT32_DTYPE in
        # keras/src/backend/common/dtypes.py), so keras.ops.arccos is float32 on JAX even with x64.
        assert float(got) == pytest.approx(ref.class_margin(w), abs=1e-6)
        pytest.xfail("keras.ops.arccos computes float64 input in float32 on this backend")
    assert float(got) == pytest.approx(ref.class_margin(w), abs=1e-9)


@pytest.mark.float64
def test_simplex_has_maximal_class_margin_and_zero_centroid():
    c = 4
    simplex = np.eye(c) - 1.0 / c  # columns: centred one-hots, a regular simplex
    assert float(km.ops.class_margin(simplex)) == pytest.approx(math.acos(-1 / (c - 1)), abs=1e-7)
    assert float(km.ops.zero_centroid(simplex)) == pytest.approx(0.0, abs=1e-12)
    assert float(km.ops.class_margin(np.eye(3))) == pytest.approx(math.pi / 2)
    assert float(km.ops.zero_centroid(np.eye(2))) == pytest.approx(2.0)


def test_kernel_validation():
    with pytest.raises(ValueError, match="kernel"):
        km.ops.class_margin(np.ones((3, 1)))
    with pytest.raises(ValueError, match="kernel"):
        km.ops.zero_centroid(np.ones((3,)))


def test_cosine_similarity_gradient_matches_finite_differences():
    """The hand-written backward of the fused cosine op equals the true gradient.

    (1e-6: on JAX Keras promotes part of this float64 computation to float32.)"""
    rng = np.random.default_rng(7)
    x, w = rng.normal(size=(5, 4)), rng.normal(size=(4, 3))
    weights = rng.normal(size=(5, 3))

    def numpy_loss(xv, wv):
        return float(np.sum(weights * np.sin(3 * ref.cosine(xv, wv))))

    _, (gx, gw) = km.testing.value_and_grad(
        lambda a, b: keras.ops.sum(weights * keras.ops.sin(3 * km.ops.cosine_similarity(a, b))), x, w
    )
    np.testing.assert_allclose(
        gx, km.testing.finite_difference_grad(lambda v: numpy_loss(v, w), x), atol=1e-6
    )
    np.testing.assert_allclose(
        gw, km.testing.finite_difference_grad(lambda v: numpy_loss(x, v), w), atol=1e-6
    )
    # pair-wise similarities share the op: gradient through both sides of x·xᵀ
    _, (gp,) = km.testing.value_and_grad(
        lambda a: keras.ops.sum(keras.ops.sin(3 * km.ops.pairwise_cosine(a))), x
    )
    fd = km.testing.finite_difference_grad(lambda v: float(np.sum(np.sin(3 * ref.cosine(v, v.T)))), x)
    np.testing.assert_allclose(gp, fd, atol=1e-6)
