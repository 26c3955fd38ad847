"""km.ops margin-softmax family vs the plain NumPy loop references of tests/references.py."""

import math

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import value_and_grad


def random_case(seed, n=16, c=7):
    rng = np.random.default_rng(seed)
    cos = rng.uniform(-1, 1, size=(n, c))
    labels = rng.integers(0, c, size=n)
    labels[0], labels[-1] = 0, c - 1  # labels 0 and C-1 always present
    return labels, cos


MARGINS = [
    (1.0, 0.0, 0.0),  # NormFace
    (1.0, 0.5, 0.0),  # ArcFace
    (1.0, 0.0, 0.35),  # CosFace
    (1.5, 0.0, 0.0),  # SphereFace
    (1.35, 0.0, 0.0),  # SphereFace, non-integer
    (1.0, 0.3, 0.2),  # combined
    (2.0, 0.2, 0.1),  # all three
]


@pytest.mark.parametrize("m1,m2,m3", MARGINS)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scale", [1.0, 16.0, 64.0])
def test_margin_softmax_matches_reference(m1, m2, m3, seed, scale):
    labels, cos = random_case(seed)
    got = km.ops.margin_softmax(labels, cos.astype("float32"), scale, m1, m2, m3)
    want = ref.margin_softmax(labels, cos.astype("float32").astype("float64"), scale, m1, m2, m3)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.float64
def test_margin_softmax_float64_tight():
    labels, cos = random_case(3)
    got = km.ops.margin_softmax(labels, cos, 30.0, 1.0, 0.5, 0.1)
    np.testing.assert_allclose(
        np.asarray(got), ref.margin_softmax(labels, cos, 30.0, 1, 0.5, 0.1), rtol=1e-10
    )


def test_no_margin_equals_normface_and_sparse_ce():
    labels, cos = random_case(4)
    cos = cos.astype("float32")
    got = km.ops.margin_softmax(labels, cos, 16.0)
    ce = keras.losses.sparse_categorical_crossentropy(labels, 16.0 * cos, from_logits=True)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ce), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(km.losses.NormFace(16.0).call(labels, cos)), np.asarray(got), rtol=1e-6
    )


@pytest.mark.float64
def test_arcface_fallback_past_pi():
    # θ = 170° so θ + 0.5 rad > π: the fallback cos θ − m sin m is used.
    c = math.cos(math.radians(170))
    cos = np.array([[c, 0.2, -0.1]], dtype="float64")
    psi = km.ops.margin_target(np.array([c]), 1.0, 0.5, 0.0)
    assert np.asarray(psi)[0] == pytest.approx(c - 0.5 * math.sin(0.5), abs=1e-12)
    # θ = 60°: the plain cos(θ + m)
    psi = km.ops.margin_target(np.array([0.5]), 1.0, 0.5, 0.0)
    assert np.asarray(psi)[0] == pytest.approx(math.cos(math.pi / 3 + 0.5), abs=1e-12)
    got = km.ops.margin_softmax([0], cos, 64.0, m2=0.5)
    np.testing.assert_allclose(np.asarray(got), ref.margin_softmax([0], cos, 64.0, 1, 0.5, 0), rtol=1e-10)


def test_sphereface_target_is_monotone_decreasing():
    theta = np.linspace(0, math.pi, 721)
    psi = np.asarray(km.ops.margin_target(np.cos(theta), 1.5, 0.0, 0.0))
    assert np.all(np.diff(psi) <= 1e-9)
    assert psi[0] == pytest.approx(1.0, abs=1e-5) and psi[-1] < -1.0


@pytest.mark.float64
def test_two_classes_and_hand_case():
    cos = np.array([[1.0, -1.0], [0.0, 0.0]])
    got = np.asarray(km.ops.margin_softmax([0, 1], cos, 2.0, m3=0.5))
    # row 0: target s(1 − 0.5) = 1, other −2 → log(1 + e^{−3}); row 1: target −1, other 0
    np.testing.assert_allclose(got, [math.log1p(math.exp(-3)), math.log1p(math.exp(1))], rtol=1e-12)


@pytest.mark.float64
@pytest.mark.parametrize("seed", [0, 5])
def test_largest_margin_softmax_matches_reference(seed):
    labels, cos = random_case(seed, c=5)
    got = km.ops.largest_margin_softmax(labels, cos.astype("float32"), 5.0)
    np.testing.assert_allclose(
        np.asarray(got),
        ref.lm_softmax(labels, cos.astype("float32").astype("float64"), 5.0),
        rtol=1e-5,
        atol=1e-6,
    )
    # CE = softplus(LM) (Zhou et al. 2022, LM-Softmax)
    ce = km.ops.margin_softmax(labels, cos, 5.0)
    np.testing.assert_allclose(
        np.logaddexp(0, np.asarray(km.ops.largest_margin_softmax(labels, cos, 5.0))),
        np.asarray(ce),
        rtol=1e-10,
    )


def test_largest_margin_softmax_two_classes_is_difference():
    cos = np.array([[0.9, -0.3], [0.1, 0.4]])
    got = np.asarray(km.ops.largest_margin_softmax([0, 0], cos, 10.0))
    np.testing.assert_allclose(got, [10 * (-0.3 - 0.9), 10 * (0.4 - 0.1)], rtol=1e-12)
    assert got[0] < 0  # negative values are kept, never clipped


@pytest.mark.float64
def test_largest_margin_softmax_lower_bounds():
    """Bounded below on unit cosines (docs/papers.md §1.3): log(C−1) − 2s per sample, reached
    when every other prototype sits at −x; log(C−1) − s·C/(C−1) for the class average with
    features on their prototypes summing to zero, reached by the regular simplex."""
    s, c = 5.0, 4
    collapsed = np.array([[1.0, -1.0, -1.0, -1.0]])
    got = np.asarray(km.ops.largest_margin_softmax([0], collapsed, s))
    np.testing.assert_allclose(got, [math.log(c - 1) - 2 * s], rtol=1e-12)
    labels, cos = random_case(3, c=c)
    assert np.all(np.asarray(km.ops.largest_margin_softmax(labels, cos, s)) >= math.log(c - 1) - 2 * s)
    # Regular simplex: Gram matrix 1 on the diagonal, −1/(C−1) elsewhere (NumPy, exact).
    gram = np.full((c, c), -1.0 / (c - 1)) + np.eye(c) * (1.0 + 1.0 / (c - 1))
    simplex = np.asarray(km.ops.largest_margin_softmax(np.arange(c), gram, s))
    np.testing.assert_allclose(simplex, math.log(c - 1) - s * c / (c - 1), rtol=1e-12)
    # Another zero-sum arrangement with features on their prototypes (a square in 2-D) stays
    # strictly above the simplex bound.
    square = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0],
                       [-1.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 1.0]])
    got = np.asarray(km.ops.largest_margin_softmax(np.arange(c), square, s))
    np.testing.assert_allclose(got, math.log(2.0 + math.exp(-s)) - s, rtol=1e-12)
    assert got.mean() > math.log(c - 1) - s * c / (c - 1) + 1.0


def _grads(fn, cos, labels):
    loss, (grad,) = value_and_grad(lambda c: keras.ops.sum(fn(labels, c)), np.asarray(cos, "float32"))
    return loss, grad


@pytest.mark.parametrize(
    "fn",
    [
        lambda y, c: km.ops.margin_softmax(y, c, 64.0, m2=0.5),
        lambda y, c: km.ops.margin_softmax(y, c, 30.0, m1=1.5),
        lambda y, c: km.ops.margin_softmax(y, c, 64.0, m1=1.0, m2=0.3, m3=0.2),
        lambda y, c: km.ops.largest_margin_softmax(y, c, 5.0),
        lambda y, c: km.ops.sample_margin(y, c),
    ],
)
def test_finite_at_cos_plus_minus_one(fn):
    cos = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [1.0, 1.0, -1.0]])
    loss, grad = _grads(fn, cos, np.array([0, 0, 2]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


def test_bad_inputs_raise_value_error():
    cos = np.zeros((3, 4), "float32")
    with pytest.raises(ValueError, match="labels"):
        km.ops.margin_softmax([0, 1, 4], cos, 10.0)
    with pytest.raises(ValueError, match="labels"):
        km.ops.largest_margin_softmax([0, -1, 2], cos, 10.0)
    with pytest.raises(ValueError, match="labels"):
        km.ops.margin_softmax([0, 1], cos, 10.0)  # N mismatch
    with pytest.raises(ValueError, match="cos"):
        km.ops.margin_softmax([0], np.zeros((4,)), 10.0)
    with pytest.raises(ValueError, match="cos"):
        km.ops.margin_softmax([0, 0, 0], np.zeros((3, 1)), 10.0)
    with pytest.raises(ValueError, match="scale"):
        km.ops.margin_softmax([0, 0, 0], cos, 0.0)
    with pytest.raises(ValueError, match="m2"):
        km.ops.margin_softmax([0, 0, 0], cos, 1.0, m2=4.0)
    with pytest.raises(ValueError, match="cos"):
        km.ops.margin_softmax([0, 0, 0], np.full((3, 4), np.nan), 10.0)
    with pytest.raises(ValueError, match="labels"):
        km.ops.margin_softmax([0.5, 0, 0], cos, 10.0)
