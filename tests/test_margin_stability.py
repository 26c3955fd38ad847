"""The stability contract of the margin losses: finite values AND finite gradients, with
respect to the embeddings and the class vectors, for every loss on a cosine head (old and
new: each class of ``km.losses`` that declares ``score_kind = "cosine"``), at s = 64 and
margins up to 0.8, on random batches that include cosines of exactly +1 and −1, targets
with θ + m > π, zero-norm embeddings, zero class vectors and feature norms from 1e-3 to
1e4, with embeddings and class vectors in float32, float16 and bfloat16 (the losses compute
in float32; the gradients come back in the input dtype, where an overflow would show; a
float16 embedding's norm is at least 0.1 or exactly 0, see ``batches``), on
the backend the suite runs (``scripts/test.sh`` runs TensorFlow and JAX).

The slow test draws 10 000 batches of 8 per loss, setting and dtype. The losses are
per-sample given their state (CurricularFace's t, AdaFace's μ and σ, UniFace's bias,
ElasticFace's margins — drawn at random per call), so 500 batches run as one call of 4 000
rows; ElasticFace+ ranks its margins over the call's rows. The default run checks 20
batches per case.

The state-carrying losses are exercised through their ``km.ops`` functions with random
states (their classes add the state plumbing, checked in ``tests/losses/test_new_margins.py``).
"""

import inspect

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins import protocols
from keras_margins.testing import value_and_grad

B, C, D, K = 8, 8, 8, 3  # batch rows, classes, features, sub-centres
DTYPES = ("float32", "float16", "bfloat16")


def scores_loss(loss):
    """A scores loss on the cosines of (x, W)."""
    return lambda y, x, w, rng: loss(y, km.ops.cosine_similarity(x, w))


def subcenter_loss(loss):
    """A loss on the max over K sub-centres: W holds C·K columns."""
    return lambda y, x, w, rng: loss(y, km.ops.subcenter_max(km.ops.cosine_similarity(x, w), K))


def curricular(margin):
    def fn(y, x, w, rng):
        t = float(rng.uniform(-1.0, 1.0))
        return km.ops.curricular_face(y, km.ops.cosine_similarity(x, w), t, 64.0, margin)
    return fn


def magface(easy, upper_margin):
    def fn(y, x, w, rng):
        return km.ops.magface(y, km.ops.cosine_similarity(x, w), km.ops.feature_norm(x), 64.0,
                              upper_margin=upper_margin, easy_margin=easy)
    return fn


def adaface(margin):
    def fn(y, x, w, rng):
        mean, std = float(rng.uniform(0.0, 100.0)), float(rng.choice([0.0, 1e-3, 5.0, 100.0]))
        return km.ops.adaface(y, km.ops.cosine_similarity(x, w), km.ops.feature_norm(x), mean, std,
                              64.0, margin)
    return fn


def elastic(kind, plus, margin):
    def fn(y, x, w, rng):
        cos = km.ops.cosine_similarity(x, w)
        cos_y = None
        if plus:
            cos_y = keras.ops.take_along_axis(cos, keras.ops.reshape(y, (-1, 1)), axis=1)[:, 0]
        margins = km.ops.elastic_margins(x.shape[0], int(rng.integers(2**31)), margin, 0.3, cos_y)
        return km.ops.elastic_face(y, cos, margins, 64.0, kind)
    return fn


def uniface(margin):
    def fn(y, x, w, rng):
        bias = float(rng.uniform(-10.0, 30.0))
        return km.ops.uniface(y, km.ops.cosine_similarity(x, w), bias, 64.0, margin)
    return fn


NONE = {"reduction": "none"}
#: loss class -> {case name: per-sample function (labels, x, W, rng) -> (rows,)}
CASES = {
    km.losses.ArcFace: {f"arcface_m{m}": scores_loss(km.losses.ArcFace(64.0, m, **NONE))
                        for m in (0.5, 0.8)},
    km.losses.CosFace: {f"cosface_m{m}": scores_loss(km.losses.CosFace(64.0, m, **NONE))
                        for m in (0.35, 0.8)},
    km.losses.SphereFace: {f"sphereface_m{m}": scores_loss(km.losses.SphereFace(64.0, m, **NONE))
                           for m in (1.5, 4.0)},
    km.losses.NormFace: {"normface": scores_loss(km.losses.NormFace(64.0, **NONE))},
    km.losses.MarginSoftmax: {
        "combined_m2_0.8_m3_0.8": scores_loss(km.losses.MarginSoftmax(64.0, m2=0.8, m3=0.8, **NONE)),
        "combined_m1_2_m2_0.5_smw": scores_loss(
            km.losses.MarginSoftmax(64.0, m1=2.0, m2=0.5, m3=0.2, sample_margin_weight=1.0, **NONE)),
    },
    km.losses.LargestMarginSoftmax: {
        "lmsoftmax_s64": scores_loss(km.losses.LMSoftmax(64.0, sample_margin_weight=1.0, **NONE))},
    km.losses.CircleLoss: {f"circle_m{m}_g{g}": scores_loss(km.losses.CircleLoss(m, g, **NONE))
                           for m in (0.25, 0.8) for g in (64.0, 256.0)},
    km.losses.ProxyNCALoss: {"proxy_nca_s64": scores_loss(km.losses.ProxyNCALoss(64.0, **NONE))},
    km.losses.SubCenterArcFace: {
        f"subcenter_m{m}": subcenter_loss(km.losses.SubCenterArcFace(64.0, m, **NONE))
        for m in (0.5, 0.8)},
    km.losses.CurricularFace: {f"curricular_m{m}": curricular(m) for m in (0.5, 0.8)},
    km.losses.MagFace: {f"magface_easy{e}_um{u}": magface(e, u) for e in (False, True)
                        for u in (0.8, 1.5)},
    km.losses.AdaFace: {f"adaface_m{m}": adaface(m) for m in (0.4, 0.8)},
    km.losses.ElasticFace: {f"elastic_{k}{'+' if p else ''}_m{m}": elastic(k, p, m)
                            for k in ("arc", "cos") for p in (False, True) for m in (0.5, 0.8)},
    km.losses.UniFace: {f"uniface_m{m}": uniface(m) for m in (0.4, 0.8)},
}
ALL = {name: fn for group in CASES.values() for name, fn in group.items()}


def test_every_cosine_loss_of_the_library_is_in_the_contract():
    declared = {cls for cls in vars(km.losses).values()
                if inspect.isclass(cls) and issubclass(cls, keras.losses.Loss)
                and protocols.loss_score_kind(cls) == "cosine"}
    # LMSoftmax is LargestMarginSoftmax under another name
    assert declared == set(CASES), declared ^ set(CASES)


def batches(rng, count, dtype, sub_centers=1):
    """``count`` batches of B rows as one (count·B, D) call: (labels, x, W)."""
    columns = C * sub_centers
    rows = count * B
    w = rng.normal(size=(D, columns))
    w[:, : D] = np.eye(D) * rng.uniform(0.5, 3.0, size=D)  # basis columns: exact ±1 cosines
    w[:, -1] = 0.0                                          # a zero class vector
    classes = C - 1 if sub_centers == 1 else C              # keep labels off the zero column
    y = rng.integers(0, classes, size=rows)
    # d(x/‖x‖)/dx is of order 1/‖x‖: below a norm of about s/65504 the exact gradient of a
    # float16 embedding is beyond float16's range, so float16 draws norms from 0.1 up
    # (exact zeros included below); float32 and bfloat16 from 1e-3.
    lowest = -1 if dtype == "float16" else -3
    x = rng.normal(size=(rows, D)) * 10.0 ** rng.uniform(lowest, 4, size=(rows, 1))
    kind = rng.integers(0, 8, size=rows)
    basis = np.minimum(y * sub_centers, D - 1)              # a basis column of the target class
    y = np.where(kind < 4, basis // sub_centers, y)
    exact = np.eye(D)[basis] * rng.uniform(0.1, 5.0, size=(rows, 1))
    x = np.where((kind == 0)[:, None], exact, x)                        # cos_y = +1
    x = np.where((kind == 1)[:, None], -exact, x)                       # cos_y = −1
    near = -exact + 0.05 * rng.normal(size=(rows, D))
    x = np.where((kind == 2)[:, None], near, x)                         # θ + m > π
    x = np.where((kind == 3)[:, None], 0.0, x)                          # zero-norm embedding
    return (y.astype("int32"), keras.ops.convert_to_tensor(x.astype("float32"), dtype),
            keras.ops.convert_to_tensor(w.astype("float32"), dtype))


def check(name, dtype, count, calls, seed):
    fn = ALL[name]
    sub_centers = K if name.startswith("subcenter") else 1
    rng = np.random.default_rng(seed)
    for _ in range(calls):
        y, x, w = batches(rng, count, dtype, sub_centers)
        values = keras.ops.convert_to_numpy(fn(y, x, w, rng))
        assert np.all(np.isfinite(values)), (name, dtype, "value")
        _, (gx, gw) = value_and_grad(lambda a, b: keras.ops.sum(fn(y, a, b, rng)), x, w)
        assert gx.dtype == keras.backend.standardize_dtype(dtype) or dtype == "bfloat16"
        gx, gw = np.asarray(gx, "float32"), np.asarray(gw, "float32")
        assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gw)), (name, dtype, "gradient")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ALL))
def test_finite_values_and_gradients_fast_subset(name, dtype):
    check(name, dtype, count=20, calls=1, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ALL))
def test_finite_values_and_gradients_10000_batches(name, dtype):
    check(name, dtype, count=500, calls=20, seed=1)
