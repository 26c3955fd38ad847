"""Property-based tests (hypothesis) of the functional core ``km.ops``.

Over drawn shapes (N, C, D, P×K batches), scales, margins and values (cosines include the
edges ±1 and 0, embeddings include zero rows), every op must

* equal the plain NumPy loop references of ``tests/references.py``;
* give finite values and finite gradients;
* be invariant to rescaling the features / class weights where the method is scale-free
  (cosine heads, pair losses on normalised embeddings);
* be permutation-equivariant per sample (permuting the batch permutes the per-sample loss);
* for pair losses, be invariant to renaming the classes (labels only compared for equality).

Margins are drawn from the presets of the generalised margin softmax (NormFace, ArcFace,
CosFace, SphereFace, combined), each also given as an explicit example, with explicit examples
past ArcFace's fallback point (θ_y + m > π). Pair batches have P >= 2 classes of K >= 2
samples, so every anchor has a positive and a negative.

Cost is bounded by the hypothesis profile registered in ``tests/conftest.py`` (``ci``: 25
examples per test on TensorFlow, 10 on JAX, no deadline, derandomised) and by drawing sizes
from short lists; ``HYPOTHESIS_PROFILE=thorough`` runs 300 examples per test.
"""

import math

import keras
import numpy as np
import pytest
import references as ref
from hypothesis import assume, event, example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import keras_margins as km
from keras_margins.testing import value_and_grad

ACOS_CLIP = 1.0 - 1e-6  # the library's arccos clip for SphereFace (documented in margin_target)


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


# ------------------------------------------------------------------------------ strategies
unit_floats = st.floats(-1.0, 1.0, allow_nan=False, width=64)
feature_floats = st.floats(-10.0, 10.0, allow_nan=False, allow_subnormal=False, width=64)
scales = st.floats(1.0, 64.0)


# Sizes come from short lists (edge sizes 1 and 2 included): every distinct shape costs a
# compilation per op on JAX, so a bounded set of shapes keeps the file within its budget.
BATCH_SIZES = (1, 2, 5)
CLASS_COUNTS = (2, 5)
DIMS = (2, 4)


def _sizes(min_n):
    return st.sampled_from([n for n in BATCH_SIZES if n >= min_n])


@st.composite
def cos_batch(draw, min_n=1):
    """(labels (N,), cosines (N, C)) with C >= 2; cosines anywhere in [-1, 1]."""
    n = draw(_sizes(min_n))
    c = draw(st.sampled_from(CLASS_COUNTS))
    cos = draw(hnp.arrays(np.float64, (n, c), elements=unit_floats))
    labels = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), "int32")
    return labels, cos


@st.composite
def feature_batch(draw, min_n=1):
    """(labels, features (N, D), kernel (D, C))."""
    n = draw(_sizes(min_n))
    c = draw(st.sampled_from(CLASS_COUNTS))
    d = draw(st.sampled_from(DIMS))
    x = draw(hnp.arrays(np.float64, (n, d), elements=feature_floats))
    w = draw(hnp.arrays(np.float64, (d, c), elements=feature_floats))
    labels = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), "int32")
    return labels, x, w


@st.composite
def pk_batch(draw):
    """P >= 2 classes × K >= 2 samples: labels (arbitrary distinct ints) and embeddings
    (P·K, D); every anchor has a positive and a negative."""
    p = draw(st.sampled_from((2, 3)))
    k = draw(st.sampled_from((2, 3)))
    d = draw(st.sampled_from(DIMS))
    ids = draw(st.lists(st.integers(-1000, 1000), min_size=p, max_size=p, unique=True))
    labels = np.repeat(np.array(ids, "int64"), k)
    emb = draw(hnp.arrays(np.float64, (p * k, d), elements=feature_floats))
    return labels, emb


#: The presets of the generalised margin softmax ψ(θ) = cos(m1·θ + m2) − m3 (Zhou et al. 2022).
MARGIN_FAMILIES = {
    "normface": lambda draw: (1.0, 0.0, 0.0),
    "arcface": lambda draw: (1.0, draw(st.floats(0.05, 1.2)), 0.0),
    "cosface": lambda draw: (1.0, 0.0, draw(st.floats(0.05, 0.5))),
    "sphereface": lambda draw: (draw(st.floats(1.1, 4.0)), 0.0, 0.0),
    "combined": lambda draw: (1.0, draw(st.floats(0.05, 0.8)), draw(st.floats(0.05, 0.4))),
}


@st.composite
def margin_family(draw):
    """(m1, m2, m3) of one preset family, drawn uniformly over the families."""
    family = draw(st.sampled_from(sorted(MARGIN_FAMILIES)))
    event(f"family={family}")
    return MARGIN_FAMILIES[family](draw)


#: A (5, 5) batch (a shape the strategies draw too: no extra compilation on JAX).
_COS = np.random.default_rng(0).uniform(-0.9, 0.9, (5, 5))
_LABELS = np.array([0, 1, 2, 3, 4], "int32")


def _past_fallback(m2, m3=0.0):
    """A batch whose first target lies past ArcFace's fallback point (θ_y + m2 > π), the second
    just before it, the third at cos θ = −1: (labels, cos), with the margins."""
    edge = -math.cos(m2)  # θ + m2 = π
    cos = _COS.copy()
    cos[0, 0], cos[1, 1], cos[2, 2] = max(edge - 0.05, -1.0), min(edge + 0.05, 1.0), -1.0
    return (_LABELS, cos), (1.0, m2, m3)


#: Explicit examples: every family once, and ArcFace / combined past the fallback point.
_BATCH = (_LABELS, _COS)
MARGIN_EXAMPLES = [
    (_BATCH, (1.0, 0.0, 0.0)),
    (_BATCH, (1.0, 0.5, 0.0)),
    (_BATCH, (1.0, 0.0, 0.35)),
    (_BATCH, (1.5, 0.0, 0.0)),
    (_BATCH, (1.0, 0.3, 0.2)),
    _past_fallback(0.5),
    _past_fallback(1.0),
    _past_fallback(0.3, 0.2),
]


def with_margin_examples(test):
    """Adds MARGIN_EXAMPLES (at scale 30) to a test given (batch, s, margins)."""
    for batch, margins in reversed(MARGIN_EXAMPLES):
        test = example(batch=batch, s=30.0, margins=margins)(test)
    return test


# ------------------------------------------------------------------------ NumPy references
# The loop references of tests/references.py, with the library's documented conventions: the
# arccos clip of SphereFace, norms floored at 1e-12 (zero vectors give cosine 0) and POD's
# sqrt(||x||² + δ²) floored at 1e-12 (x = 0 stays finite).


def ref_margin_softmax(labels, cos, s, m1, m2, m3):
    return ref.margin_softmax(labels, cos, s, m1, m2, m3, acos_clip=ACOS_CLIP)


def ref_pod_terms(labels, x, centroids, delta):
    return ref.pod_terms(labels, x, centroids, delta, norm_floor=1e-12)


def close(got, want, scale=1.0):
    np.testing.assert_allclose(np_(got), want, rtol=1e-5, atol=1e-5 * max(1.0, scale))


def finite_grads(fn, *arrays):
    value, grads = value_and_grad(fn, *arrays)
    assert np.isfinite(value), value
    for g in grads:
        assert np.all(np.isfinite(g)), g
    return value, grads


# ---------------------------------------------------------------- equal to the references
@given(batch=cos_batch(), s=scales, margins=margin_family())
@with_margin_examples
def test_margin_softmax_matches_reference(batch, s, margins):
    labels, cos = batch
    m1, m2, m3 = margins
    got = km.ops.margin_softmax(labels, cos, s, m1=m1, m2=m2, m3=m3)
    # at cos = ±1 the op floors sin θ at 1e-6 (finite gradient): allow that much per logit
    close(got, ref_margin_softmax(labels, cos, s, m1, m2, m3), scale=10 * s)


@given(cos_batch(), scales)
def test_largest_margin_softmax_matches_reference(batch, s):
    labels, cos = batch
    close(km.ops.largest_margin_softmax(labels, cos, s), ref.lm_softmax(labels, cos, s), scale=s)


@given(cos_batch(), st.floats(0.0, 0.9), st.floats(1.0, 256.0))
def test_circle_class_level_matches_reference(batch, m, gamma):
    labels, cos = batch
    got = km.ops.circle_class_level(labels, cos, margin=m, gamma=gamma)
    close(got, ref.circle_class_level(labels, cos, m, gamma), scale=gamma)


@given(pk_batch(), st.floats(0.0, 0.9), st.floats(1.0, 128.0))
def test_circle_pairwise_matches_reference(batch, m, gamma):
    labels, emb = batch
    got = km.ops.circle_pairwise(labels, emb, margin=m, gamma=gamma)
    close(got, ref.circle_pairwise(labels, emb, m, gamma)[0], scale=gamma)


@given(cos_batch())
def test_sample_margin_matches_reference(batch):
    labels, cos = batch
    close(km.ops.sample_margin(labels, cos), ref.sample_margin(labels, cos))


@given(feature_batch())
def test_cosine_similarity_matches_reference(batch):
    _, x, w = batch
    close(km.ops.cosine_similarity(x, w), ref.cosine(x, w))


@given(feature_batch())
def test_virtual_softmax_matches_reference(batch):
    labels, x, w = batch
    got = km.ops.virtual_softmax(labels, x, w)
    want = ref.virtual_softmax(labels, x, w)
    close(got, want, scale=np.abs(want).max())


@given(feature_batch(min_n=2), st.floats(0.0, 1.0))
def test_pod_terms_match_reference(batch, delta):
    labels, x, w = batch
    assume(np.all(np.linalg.norm(w, axis=0) > 1e-3))  # centroids are unit columns in use
    nac, dec = km.ops.pod_terms(labels, x, w, delta=delta)
    want_nac, want_dec = ref_pod_terms(labels, x, w, delta)
    close(nac, want_nac)
    close(dec, want_dec, scale=abs(want_dec))


# ------------------------------------------------------------ finite values and gradients
@given(batch=cos_batch(), s=scales, margins=margin_family())
@with_margin_examples
def test_margin_softmax_finite_gradient(batch, s, margins):
    labels, cos = batch
    m1, m2, m3 = margins
    finite_grads(lambda c: keras.ops.sum(km.ops.margin_softmax(labels, c, s, m1, m2, m3)), cos)


@given(feature_batch(), scales, st.floats(0.0, 0.9))
def test_cosine_losses_finite_gradient_through_the_head(batch, s, m):
    """Zero rows and zero columns included: the cosine head keeps every gradient finite."""
    labels, x, w = batch

    def loss(xx, ww):
        cos = km.ops.cosine_similarity(xx, ww)
        terms = (km.ops.margin_softmax(labels, cos, s, m2=m),
                 km.ops.largest_margin_softmax(labels, cos, s),
                 km.ops.circle_class_level(labels, cos, margin=m, gamma=s))
        return sum(keras.ops.sum(keras.ops.cast(t, "float64")) for t in terms)

    finite_grads(loss, x, w)


@given(pk_batch(), st.floats(0.0, 0.9), st.floats(1.0, 128.0))
def test_circle_pairwise_finite_gradient(batch, m, gamma):
    labels, emb = batch
    finite_grads(lambda e: keras.ops.sum(km.ops.circle_pairwise(labels, e, m, gamma)), emb)


@given(feature_batch(min_n=2), st.floats(0.0, 1.0))
def test_virtual_softmax_and_pod_finite_gradient(batch, delta):
    labels, x, w = batch
    assume(np.all(np.abs(x).sum(axis=1) > 1e-3))  # POD's x/||x|| is singular at x = 0
    finite_grads(lambda xx, ww: keras.ops.sum(km.ops.virtual_softmax(labels, xx, ww)), x, w)
    finite_grads(lambda xx: km.ops.pod_loss(labels, xx, w, delta=delta), x)


# -------------------------------------------------------------------- scale invariance
@given(feature_batch(), st.floats(0.01, 100.0), st.floats(0.01, 100.0), scales,
       st.floats(0.0, 0.9))
def test_cosine_heads_are_invariant_to_feature_and_weight_scale(batch, a, b, s, m):
    labels, x, w = batch
    # scale-free above the normalisation floor ||v|| >= 1e-12 (zero vectors stay zero)
    for v in (x, w.T):
        norms = np.linalg.norm(v, axis=1)
        assume(np.all((norms == 0) | (norms * min(a, b, 1.0) > 1e-9)))
    cos = km.ops.cosine_similarity(x, w)
    cos_scaled = km.ops.cosine_similarity(a * x, b * w)
    np.testing.assert_allclose(np_(cos_scaled), np_(cos), atol=1e-6)
    for fn in (
        lambda c: km.ops.margin_softmax(labels, c, s, m2=m),
        lambda c: km.ops.largest_margin_softmax(labels, c, s),
        lambda c: km.ops.circle_class_level(labels, c, margin=m),
    ):
        np.testing.assert_allclose(np_(fn(cos_scaled)), np_(fn(cos)), rtol=1e-5,
                                   atol=1e-5 * max(s, 256.0))


@given(pk_batch(), st.lists(st.floats(0.01, 100.0), min_size=12, max_size=12))
def test_pair_loss_is_invariant_to_per_row_embedding_scale(batch, factors):
    labels, emb = batch
    norms = np.linalg.norm(emb, axis=1)
    assume(np.all((norms == 0) | (norms > 1e-9)))  # scale-free above the 1e-12 floor
    scaled = emb * np.array(factors[: len(labels)])[:, None]
    np.testing.assert_allclose(
        np_(km.ops.circle_pairwise(labels, scaled)), np_(km.ops.circle_pairwise(labels, emb)),
        rtol=1e-5, atol=1e-3,
    )


# ------------------------------------------------------------ permutation equivariance
PER_SAMPLE = {
    "margin_softmax": lambda y, c, x, w: km.ops.margin_softmax(y, c, 30.0, m2=0.4, m3=0.1),
    "sphereface": lambda y, c, x, w: km.ops.margin_softmax(y, c, 16.0, m1=1.7),
    "largest_margin_softmax": lambda y, c, x, w: km.ops.largest_margin_softmax(y, c, 5.0),
    "circle_class_level": lambda y, c, x, w: km.ops.circle_class_level(y, c),
    "sample_margin": lambda y, c, x, w: km.ops.sample_margin(y, c),
    "virtual_softmax": lambda y, c, x, w: km.ops.virtual_softmax(y, x, w),
    "pod_nac": lambda y, c, x, w: km.ops.pod_terms(y, x, w)[0],
}


@pytest.mark.parametrize("name", sorted(PER_SAMPLE))
@given(batch=feature_batch(min_n=2), data=st.data())
def test_per_sample_losses_are_permutation_equivariant(name, batch, data):
    labels, x, w = batch
    cos = np_(km.ops.cosine_similarity(x, w))
    perm = np.array(data.draw(st.permutations(range(len(labels)))))
    fn = PER_SAMPLE[name]
    base = np_(fn(labels, cos, x, w))
    permuted = np_(fn(labels[perm], cos[perm], x[perm], w))
    np.testing.assert_allclose(permuted, base[perm], rtol=1e-6, atol=1e-6)


@given(batch=pk_batch(), data=st.data())
def test_pair_loss_is_permutation_equivariant(batch, data):
    labels, emb = batch
    perm = np.array(data.draw(st.permutations(range(len(labels)))))
    base = np_(km.ops.circle_pairwise(labels, emb))
    np.testing.assert_allclose(np_(km.ops.circle_pairwise(labels[perm], emb[perm])), base[perm],
                               rtol=1e-6, atol=1e-6)


# -------------------------------------------------------- pair losses: relabelling classes
@given(batch=pk_batch(), data=st.data())
def test_pair_losses_and_masks_are_invariant_to_relabelling(batch, data):
    labels, emb = batch
    classes = sorted(set(labels.tolist()))
    new_ids = data.draw(st.lists(st.integers(-10**6, 10**6), min_size=len(classes),
                                 max_size=len(classes), unique=True))
    mapping = dict(zip(classes, new_ids))
    relabelled = np.array([mapping[v] for v in labels.tolist()], "int64")
    np.testing.assert_allclose(np_(km.ops.circle_pairwise(relabelled, emb)),
                               np_(km.ops.circle_pairwise(labels, emb)), rtol=1e-6, atol=1e-6)
    for a, b in zip(km.ops.pair_masks(relabelled), km.ops.pair_masks(labels)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    for miner in (km.miners.BatchHardMiner(), km.miners.MultiSimilarityMiner(),
                  km.miners.SemiHardMiner()):
        for got, want in zip(miner(relabelled, emb), miner(labels, emb)):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(got),
                                          keras.ops.convert_to_numpy(want))
