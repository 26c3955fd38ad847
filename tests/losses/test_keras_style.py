"""Keras-style test cases of every loss class called as ``loss(y_true, y_pred)`` (in the manner
of Keras' own ``losses_test.py``): the value against an explicit loop (``tests/references.py``,
never ``km.ops``), the three reductions, sample weights including zeros, float64 honoured
(``dtype="float64"`` computes in float64, checked at 1e-12 against float64 NumPy), float32
under mixed precision, and the configuration round trip (``get_config``/``from_config`` and a
``.keras`` file loaded with ``safe_mode=True``).

The class-level inputs always hold target cosines past the ArcFace fallback point
(θ_y + m > π for m = 0.5, i.e. cos θ_y < −cos 0.5 ≈ −0.878), so a wrong fallback changes a
value here, not only in ``tests/ops``. Losses that need the model (POD, LossEnsemble,
SampleMarginRegularizer, PartialFC) are in ``test_keras_style_model_losses.py``.
"""

import inspect
import math
import os

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import config_roundtrip

N, C, D = 8, 5, 6
SPHERE_CLIP = 1.0 - 1e-6  # the library keeps arccos away from ±1 for SphereFace (margin_target)


# ------------------------------------------------------------------------------- inputs
def cosine_batch(seed):
    """(labels, cosines (N, C)) with targets past the ArcFace fallback point and near +1."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(N) % C)
    cos = rng.uniform(-0.9, 0.9, (N, C))
    cos[0, labels[0]] = -0.97  # θ + 0.5 > π: fallback cos θ − m sin m
    cos[1, labels[1]] = -0.9  # just past the fallback point (−0.8776)
    cos[2, labels[2]] = 0.98
    cos[3, labels[3]] = -0.5  # θ + 0.5 < π: the plain cos(θ + m)
    return labels, cos


def embedding_batch(seed):
    """(labels, embeddings (N, D)) of a P×K batch (P = 3, K = 2) plus two single samples
    (anchors without a positive: the pair losses must leave them out)."""
    rng = np.random.default_rng(seed)
    labels = np.array([4, 4, -2, -2, 9, 9, 7, 30])[rng.permutation(N)]
    return labels, rng.normal(size=(N, D))


def feature_batch(seed):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(N) % C), rng.normal(size=(N, D))


VIRTUAL_KERNEL = np.random.default_rng(99).normal(size=(D, C))


def _virtual_kernel():
    """The (D, C) kernel of the VirtualSoftmaxHead cases (whatever the head's storage)."""
    return keras.initializers.Constant(VIRTUAL_KERNEL)


class Case:
    """One loss configuration: how to build it, its inputs and its per-sample reference."""

    def __init__(self, name, make, reference, inputs, kind="scores", scale=1.0):
        self.name, self.make, self.reference, self.inputs = name, make, reference, inputs
        self.kind = kind  # "scores" (cosines), "embedding", or "virtual" (VirtualSoftmaxHead)
        self.scale = scale  # size of the logits: absolute tolerances grow with it

    def __repr__(self):
        return self.name

    def batch(self, seed=0):
        return self.inputs(seed)

    def y_pred(self, x, dtype="float32"):
        """What the loss is called on: the inputs themselves, or a VirtualSoftmaxHead's
        training output (log-probabilities carrying the virtual-class terms)."""
        if self.kind != "virtual":
            return np.asarray(x, dtype)
        head = km.layers.VirtualSoftmaxHead(C, dtype=dtype, kernel_initializer=_virtual_kernel())
        return head(np.asarray(x, dtype), training=True)

    def expected(self, labels, x):
        """(per-sample values (N,), valid rows (N,) or None) in float64."""
        out = self.reference(labels, np.asarray(x, "float64"))
        return out if isinstance(out, tuple) else (out, None)


def _margin(s, m1=1.0, m2=0.0, m3=0.0, smw=0.0, clip=None):
    def reference(y, c):
        return ref.margin_softmax(y, c, s, m1, m2, m3, clip) - smw * ref.sample_margin(y, c)
    return reference


def _lm(s, smw=0.0, divide=False):
    def reference(y, c):
        return ref.lm_softmax(y, c, s) / (s if divide else 1.0) - smw * ref.sample_margin(y, c)
    return reference


CASES = [
    Case("MarginSoftmax", lambda **kw: km.losses.MarginSoftmax(
        32.0, m1=1.0, m2=0.3, m3=0.2, sample_margin_weight=0.5, **kw),
        _margin(32.0, 1.0, 0.3, 0.2, 0.5), cosine_batch, scale=32.0),
    Case("MarginSoftmax_m1", lambda **kw: km.losses.MarginSoftmax(20.0, m1=1.35, m2=0.1, m3=0.05, **kw),
         _margin(20.0, 1.35, 0.1, 0.05, clip=SPHERE_CLIP), cosine_batch, scale=20.0),
    Case("NormFace", lambda **kw: km.losses.NormFace(16.0, **kw), _margin(16.0), cosine_batch, scale=16.0),
    Case("SphereFace", lambda **kw: km.losses.SphereFace(30.0, 1.5, **kw),
         _margin(30.0, m1=1.5, clip=SPHERE_CLIP), cosine_batch, scale=30.0),
    Case("CosFace", lambda **kw: km.losses.CosFace(64.0, 0.35, **kw), _margin(64.0, m3=0.35),
         cosine_batch, scale=64.0),
    Case("ArcFace", lambda **kw: km.losses.ArcFace(64.0, 0.5, **kw), _margin(64.0, m2=0.5),
         cosine_batch, scale=64.0),
    Case("ArcFace_rsm", lambda **kw: km.losses.ArcFace(30.0, 0.3, sample_margin_weight=2.0, **kw),
         _margin(30.0, m2=0.3, smw=2.0), cosine_batch, scale=30.0),
    Case("LargestMarginSoftmax", lambda **kw: km.losses.LargestMarginSoftmax(5.0, **kw), _lm(5.0),
         cosine_batch, scale=5.0),
    Case("LargestMarginSoftmax_rsm", lambda **kw: km.losses.LargestMarginSoftmax(
        8.0, sample_margin_weight=0.5, divide_by_scale=True, **kw), _lm(8.0, 0.5, True), cosine_batch),
    Case("CircleLoss", lambda **kw: km.losses.CircleLoss(0.25, 256.0, **kw),
         lambda y, c: ref.circle_class_level(y, c, 0.25, 256.0), cosine_batch, scale=256.0),
    Case("CircleLoss_m04", lambda **kw: km.losses.CircleLoss(0.4, 32.0, **kw),
         lambda y, c: ref.circle_class_level(y, c, 0.4, 32.0), cosine_batch, scale=32.0),
    Case("ProxyNCALoss", lambda **kw: km.losses.ProxyNCALoss(**kw),
         lambda y, c: ref.proxy_nca_from_cos(y, c), cosine_batch),
    Case("ProxyNCALoss_smoothed", lambda **kw: km.losses.ProxyNCALoss(
        softmax_scale=2.0, proxy_scale=3.0, label_smoothing=0.1, **kw),
        lambda y, c: ref.proxy_nca_from_cos(y, c, t=2.0, b=3.0, eps=0.1), cosine_batch, scale=12.0),
    Case("ProxyNCALoss_exclude", lambda **kw: km.losses.ProxyNCALoss(
        embedding_scale=2.0, exclude_positive=True, **kw),
        lambda y, c: ref.proxy_nca_from_cos(y, c, a=2.0, exclude=True), cosine_batch, scale=4.0),
    Case("VirtualSoftmax", lambda **kw: km.losses.VirtualSoftmax(**kw),
         lambda y, x: ref.virtual_softmax(y, x, VIRTUAL_KERNEL), feature_batch, kind="virtual"),
    Case("PairCircleLoss", lambda **kw: km.losses.PairCircleLoss(0.4, 80.0, **kw),
         lambda y, e: ref.circle_pairwise(y, e, 0.4, 80.0), embedding_batch, "embedding", scale=80.0),
    Case("TripletMarginLoss", lambda **kw: km.losses.TripletMarginLoss(0.2, **kw),
         lambda y, e: ref.triplet_all(y, e, 0.2, per_anchor=True), embedding_batch, "embedding"),
    Case("TripletMarginLoss_squared", lambda **kw: km.losses.TripletMarginLoss(0.3, squared=True, **kw),
         lambda y, e: ref.triplet_all(y, e, 0.3, squared=True, per_anchor=True), embedding_batch,
         "embedding"),
    Case("TripletMarginLoss_semi_hard", lambda **kw: km.losses.TripletMarginLoss(
        1.0, miner=km.miners.SemiHardMiner(), **kw),
        lambda y, e: ref.triplet_semi_hard(y, e, 1.0, per_anchor=True), embedding_batch, "embedding"),
    Case("BinomialDevianceLoss", lambda **kw: km.losses.BinomialDevianceLoss(2.0, 0.5, 25.0, **kw),
         lambda y, e: ref.binomial_deviance(y, e, 2.0, 0.5, 25.0), embedding_batch, "embedding",
         scale=25.0),
    Case("BinomialDevianceLoss_low_cost", lambda **kw: km.losses.BinomialDevianceLoss(
        1.0, -0.2, 3.0, **kw), lambda y, e: ref.binomial_deviance(y, e, 1.0, -0.2, 3.0), embedding_batch,
        "embedding"),
]
IDS = [case.name for case in CASES]


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float64")


#: Keras' JAX backend computes ops.arccos / ops.cos / ops.floor of a float64 tensor in float32
#: (keras/src/backend/common/dtypes.py: BIT64_TO_BIT32_DTYPE), so SphereFace's angle (m1 > 1)
#: is float32-accurate there; everything else stays within 1e-12.
FLOAT32_ANGLE_ON_JAX = {"MarginSoftmax_m1", "SphereFace"}


def _tolerance(case, dtype):
    if dtype == "float64":
        if keras.backend.backend() == "jax" and case.name in FLOAT32_ANGLE_ON_JAX:
            return {"rtol": 1e-7, "atol": 1e-7 * max(1.0, case.scale)}
        return {"rtol": 1e-12, "atol": 1e-12 * max(1.0, case.scale)}
    return {"rtol": 1e-5, "atol": 1e-5 * max(1.0, case.scale)}


# ---------------------------------------------------------------------- every loss class
#: Loss classes whose Keras-style cases live in another file of this folder.
ELSEWHERE = {
    "POD": "test_keras_style_model_losses.py",
    "SampleMarginRegularizer": "test_keras_style_model_losses.py",
    "PartialFC": "test_keras_style_model_losses.py",
    "LossEnsemble": "test_ensemble.py",
    "AdaFace": "test_new_margins.py",
    "CurricularFace": "test_new_margins.py",
    "ElasticFace": "test_new_margins.py",
    "MagFace": "test_new_margins.py",
    "SubCenterArcFace": "test_new_margins.py",
    "UniFace": "test_new_margins.py",
}


def test_every_public_loss_class_has_a_case():
    """A loss class without a Keras-style case here (or in the file ELSEWHERE names) fails."""
    covered = {type(case.make()).__name__ for case in CASES}
    public = {getattr(km.losses, name).__name__ for name in dir(km.losses)
              if isinstance(getattr(km.losses, name), type)
              and issubclass(getattr(km.losses, name), keras.losses.Loss)
              and name not in ("MarginLoss", "ModelLoss")}
    missing = public - covered - set(ELSEWHERE)
    assert missing == set(), missing
    here = os.path.dirname(os.path.abspath(__file__))
    for name in public - covered:
        with open(os.path.join(here, ELSEWHERE[name]), encoding="utf-8") as f:
            assert f"km.losses.{name}(" in f.read(), (name, ELSEWHERE[name])


# ------------------------------------------------------------------------------- values
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_equals_the_loop_reference(case):
    labels, x = case.batch(0)
    x32 = np.asarray(x, "float32")
    per_sample, valid = case.expected(labels, x32)
    loss = case.make()
    want = ref.keras_reduce(per_sample, valid=valid)
    got = loss(labels, case.y_pred(x32))
    np.testing.assert_allclose(float(got), want, **_tolerance(case, "float32"))
    # (N, 1) labels, as Keras' sparse losses accept
    np.testing.assert_allclose(float(loss(labels[:, None], case.y_pred(x32))), want,
                               **_tolerance(case, "float32"))
    assert keras.backend.standardize_dtype(got.dtype) == "float32"


def test_hand_computed_values():
    """A few values worked out by hand (no loop, no library)."""
    # CosFace, s = 2, m = 0.5: row 0 target 2·(1 − 0.5) = 1 vs other 2·(−1) -> log(1 + e^{−3}).
    cos = np.array([[1.0, -1.0], [0.0, 0.0]], "float32")
    want = (math.log1p(math.exp(-3.0)) + math.log1p(math.exp(1.0))) / 2
    assert float(km.losses.CosFace(2.0, 0.5)([0, 1], cos)) == pytest.approx(want, rel=1e-6)
    # ArcFace, s = 1, m = 0.5 at θ = 60°: target cos(60° + 0.5 rad) vs other 0.
    t = math.cos(math.pi / 3 + 0.5)
    cos = np.array([[0.5, 0.0]], "float32")
    assert float(km.losses.ArcFace(1.0, 0.5)([0], cos)) == pytest.approx(
        math.log(math.exp(t) + 1.0) - t, rel=1e-6)
    # ArcFace past π (θ = 170°): the fallback target cos θ − m·sin m.
    c = math.cos(math.radians(170.0))
    t = c - 0.5 * math.sin(0.5)
    cos = np.array([[c, 0.1]], "float32")
    assert float(km.losses.ArcFace(1.0, 0.5)([0], cos)) == pytest.approx(
        math.log(math.exp(t) + math.exp(0.1)) - t, rel=1e-6)
    # SphereFace m = 2 at θ = 60°: t = 120°, k = 0 -> cos 120° = −0.5.
    cos = np.array([[0.5, 0.0]], "float32")
    assert float(km.losses.SphereFace(1.0, 2.0)([0], cos)) == pytest.approx(
        math.log(math.exp(-0.5) + 1.0) + 0.5, rel=1e-5)
    # LM-Softmax with two classes: s·(cos θ_j − cos θ_y).
    cos = np.array([[0.9, -0.3]], "float32")
    assert float(km.losses.LMSoftmax(10.0)([0], cos)) == pytest.approx(-12.0, rel=1e-6)
    # Class-level Circle, m = 0.25, γ = 1, s_p = 1, s_n = 0: α_p = 0.25, α_n = 0.25
    # -> softplus(−0.25·0.25 + 0.25·(−0.25)) = softplus(−0.125).
    cos = np.array([[1.0, 0.0]], "float32")
    assert float(km.losses.CircleLoss(0.25, 1.0)([0], cos)) == pytest.approx(
        math.log1p(math.exp(-0.125)), rel=1e-6)
    # ProxyNCA (t = a = b = 1): z_j = −(2 − 2 cos θ_j); cos = (1, 0) -> log(1 + e^{−2}).
    assert float(km.losses.ProxyNCALoss()([0], cos)) == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)
    # Triplet on the unit circle: a = 0°, p = 90°, n = 180°: d_ap = √2, d_an = 2; margin 1
    # -> every valid triplet (a, p, n) of the batch below, written out.
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], "float32")
    # triplets: (0, 1, 2): √2 − 2 + 1 = 0.414; (1, 0, 2): √2 − √2 + 1 = 1 -> mean 0.707
    assert float(km.losses.TripletMarginLoss(1.0)([0, 0, 1], emb)) == pytest.approx(
        (math.sqrt(2) - 1 + 1.0) / 2, rel=1e-5)


# --------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("reduction", [None, "none", "sum", "sum_over_batch_size", "mean"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reductions(case, reduction):
    labels, x = case.batch(1)
    x32 = np.asarray(x, "float32")
    per_sample, valid = case.expected(labels, x32)
    got = _np(case.make(reduction=reduction)(labels, case.y_pred(x32)))
    want = ref.keras_reduce(per_sample, reduction=reduction, valid=valid)
    if reduction in (None, "none"):
        assert got.shape == (N,)
    np.testing.assert_allclose(got, want, **_tolerance(case, "float32"))


# ------------------------------------------------------------------------ sample weights
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_sample_weight_with_zeros(case):
    labels, x = case.batch(2)
    x32 = np.asarray(x, "float32")
    per_sample, valid = case.expected(labels, x32)
    weights = np.random.default_rng(3).uniform(0.5, 2.0, N)
    weights[[1, 4]] = 0.0
    loss = case.make()
    y_pred = case.y_pred(x32)
    for w in (weights, np.zeros(N)):
        got = float(loss(labels, y_pred, sample_weight=w.astype("float32")))
        np.testing.assert_allclose(got, ref.keras_reduce(per_sample, w, valid=valid),
                                   **_tolerance(case, "float32"))
    assert float(loss(labels, y_pred, sample_weight=np.zeros(N, "float32"))) == 0.0
    summed = case.make(reduction="sum")(labels, y_pred, sample_weight=weights.astype("float32"))
    np.testing.assert_allclose(float(summed), ref.keras_reduce(per_sample, weights, "sum", valid),
                               **_tolerance(case, "float32"))
    if case.kind == "embedding":
        return  # pair losses: every row is also another anchor's positive or negative
    # a row with weight 0 does not count, whatever its input
    changed = x32.copy()
    changed[1] = changed[1][::-1]
    np.testing.assert_allclose(float(loss(labels, case.y_pred(changed), sample_weight=weights)),
                               float(loss(labels, y_pred, sample_weight=weights)), rtol=1e-6)


# ------------------------------------------------------------------------------ dtypes
@pytest.mark.float64
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_is_honoured(case):
    """dtype="float64": computed in float64 (1e-12 of the float64 reference); the default
    float32 loss on the same float64 inputs is float32 and not that close."""
    labels, x = case.batch(4)
    per_sample, valid = case.expected(labels, x)
    want = ref.keras_reduce(per_sample, valid=valid)
    loss = case.make(dtype="float64")
    got = loss(labels, case.y_pred(x, "float64"))
    assert keras.backend.standardize_dtype(got.dtype) == "float64"
    np.testing.assert_allclose(float(got), want, **_tolerance(case, "float64"))
    per_row = _np(case.make(dtype="float64", reduction=None)(labels, case.y_pred(x, "float64")))
    want_rows = ref.keras_reduce(per_sample, reduction=None, valid=valid)
    np.testing.assert_allclose(per_row, want_rows, **_tolerance(case, "float64"))
    assert keras.backend.standardize_dtype(case.make()(labels, case.y_pred(x)).dtype) == "float32"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_under_mixed_precision(case):
    keras.mixed_precision.set_global_policy("mixed_float16")
    labels, x = case.batch(5)
    x16 = np.asarray(x, "float16")
    per_sample, valid = case.expected(labels, x16.astype("float32"))
    loss = case.make()
    got = loss(labels, case.y_pred(x16, "float16") if case.kind == "virtual" else x16)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    assert np.isfinite(float(got))
    if case.kind != "virtual":  # the head's float16 output rounds its own terms
        np.testing.assert_allclose(float(got), ref.keras_reduce(per_sample, valid=valid),
                                   **_tolerance(case, "float32"))


# --------------------------------------------------------------------- configuration
def _constructor_arguments(loss):
    return [name for name in inspect.signature(type(loss).__init__).parameters
            if name not in ("self", "args", "kwargs")]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_config_round_trip(case):
    loss = case.make(name="my_loss", reduction="sum")
    config = loss.get_config()
    for argument in _constructor_arguments(loss):
        assert argument in config, (argument, config)
    assert config["name"] == "my_loss" and config["reduction"] == "sum"
    clone = config_roundtrip(loss)
    assert type(clone).from_config(config).get_config() == config
    labels, x = case.batch(6)
    y_pred = case.y_pred(x)
    np.testing.assert_allclose(float(clone(labels, y_pred)), float(loss(labels, y_pred)), rtol=1e-7)


def _model_for(case):
    if case.kind == "virtual":
        return keras.Sequential([keras.Input((D,)), km.layers.VirtualSoftmaxHead(
            C, kernel_initializer=_virtual_kernel())])
    width = D if case.kind == "embedding" else C
    return keras.Sequential([keras.Input((width,)), keras.layers.Identity()])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_keras_file_round_trip(case, tmp_path):
    loss = case.make(name="custom_name", reduction="sum")
    model = _model_for(case)
    model.compile("sgd", loss=loss)
    labels, x = case.batch(7)
    x32 = np.asarray(x, "float32")
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert type(reloaded.loss) is type(loss) and reloaded.loss is not loss
    assert reloaded.loss.get_config() == loss.get_config()
    y_pred = case.y_pred(x32)
    np.testing.assert_allclose(float(reloaded.loss(labels, y_pred)), float(loss(labels, y_pred)), rtol=1e-7)
    before = model.evaluate(x32, labels, batch_size=N, verbose=0)
    after = reloaded.evaluate(x32, labels, batch_size=N, verbose=0)
    assert np.isfinite(before) and after == pytest.approx(before, rel=1e-6)
