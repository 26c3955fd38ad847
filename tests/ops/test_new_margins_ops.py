"""km.ops of sub-center ArcFace, CurricularFace, MagFace, AdaFace, ElasticFace and UniFace
against the plain NumPy loop references of tests/references.py, written from the papers
(listed there; random and hand-made cases, the edges cos = ±1 and θ + m > π), the relations the
papers state between them and ArcFace / CosFace, finite gradients, and NaN for invalid labels
under XLA.
"""

import math

import keras
import numpy as np
import pytest
from references import adaface as ref_adaface  # (tests/ is on sys.path)
from references import adaface_stats as ref_adaface_stats
from references import curricular as ref_curricular
from references import curricular_t as ref_curricular_t
from references import elastic as ref_elastic
from references import elastic_plus_assignment as ref_plus_assignment
from references import magface as ref_magface
from references import subcenter_max as ref_subcenter_max
from references import uniface as ref_uniface

import keras_margins as km
from keras_margins.testing import finite_difference_grad, jit, value_and_grad

# ------------------------------------------------------------------------------- inputs
N, C = 12, 6
RNG = np.random.default_rng(7)
LABELS = RNG.integers(0, C, size=N)


def random_cos(seed, n=N, c=C):
    rng = np.random.default_rng(seed)
    return np.clip(rng.uniform(-1, 1, size=(n, c)), -1, 1)


def edge_cos():
    """Hand-made rows: target cosines +1, −1, −0.95 (θ + 0.5 > π), 0, and negatives at ±1."""
    cos = random_cos(3)
    targets = [1.0, -1.0, -0.95, 0.0, 0.999999, -0.5]
    for i, value in enumerate(targets):
        cos[i, LABELS[i]] = value
    cos[6] = 1.0
    cos[7] = -1.0
    return cos


CASES = [random_cos(1), random_cos(2), edge_cos()]
NORMS = np.array([0.0, 1e-6, 5.0, 10.0, 20.0, 35.5, 60.0, 99.0, 110.0, 150.0, 1e3, 17.0])


def as_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), "float64")


# ---------------------------------------------------------------------------- sub-centres
def test_subcenter_max_matches_reference_with_and_without_mask():
    cos = random_cos(4, c=12)
    keep = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 1, 0]])
    np.testing.assert_allclose(as_np(km.ops.subcenter_max(cos, 3)), ref_subcenter_max(cos, 3), atol=1e-6)
    np.testing.assert_allclose(as_np(km.ops.subcenter_max(cos, 3, keep)),
                               ref_subcenter_max(cos, 3, keep), atol=1e-6)
    np.testing.assert_allclose(as_np(km.ops.subcenter_max(cos, 1)), cos, atol=1e-6)
    with pytest.raises(ValueError, match="sub_centers"):
        km.ops.subcenter_max(cos, 5)
    with pytest.raises(ValueError, match="sub_centers"):
        km.ops.subcenter_max(cos, 0)


# ---------------------------------------------------------------------------- CurricularFace
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("t", [0.0, 0.3, -0.7, 1.0])
def test_curricular_face_matches_reference(case, t):
    cos = CASES[case]
    got = as_np(km.ops.curricular_face(LABELS, cos, t, scale=16.0, margin=0.5))
    np.testing.assert_allclose(got, ref_curricular(LABELS, cos, t, 16.0, 0.5), rtol=1e-5, atol=1e-4)


def test_curricular_face_without_hard_negatives_is_arcface():
    cos = np.full((3, 4), -0.9)
    cos[np.arange(3), [0, 1, 2]] = [0.9, 0.8, 0.95]   # every negative far below ψ
    curricular = as_np(km.ops.curricular_face([0, 1, 2], cos, 0.8, scale=30.0, margin=0.3))
    arcface = as_np(km.ops.margin_softmax([0, 1, 2], cos, 30.0, m2=0.3))
    np.testing.assert_allclose(curricular, arcface, rtol=1e-6)


def test_curricular_t_is_the_moving_average_and_ignores_a_nan_batch():
    assert float(km.ops.curricular_t(0.2, np.array([0.5, 0.1]))) == pytest.approx(
        ref_curricular_t(0.2, [0.5, 0.1]), abs=1e-7)
    assert float(km.ops.curricular_t(0.2, np.array([0.5, 0.1]), momentum=0.5)) == pytest.approx(0.25)
    assert float(km.ops.curricular_t(0.2, np.array([np.nan, 0.1]))) == pytest.approx(0.2)


# ---------------------------------------------------------------------------------- MagFace
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("easy", [False, True])
def test_magface_matches_reference(case, easy):
    cos = CASES[case]
    if easy:  # the reference's arccos needs |cos| <= 1 exactly
        cos = np.clip(cos, -1, 1)
    got = as_np(km.ops.magface(LABELS, cos, NORMS, scale=64.0, easy_margin=easy))
    np.testing.assert_allclose(got, ref_magface(LABELS, cos, NORMS, easy=easy), rtol=1e-5, atol=1e-3)


def test_magface_margin_and_regulariser_hand_values():
    margins = as_np(km.ops.magface_margin(np.array([0.0, 10.0, 60.0, 110.0, 500.0])))
    np.testing.assert_allclose(margins, [0.45, 0.45, 0.625, 0.8, 0.8], atol=1e-7)
    g = as_np(km.ops.magface_regularizer(np.array([10.0, 110.0])))
    np.testing.assert_allclose(g, [1 / 10 + 10 / 110**2, 1 / 110 + 1 / 110], rtol=1e-6)
    # s·k·u_a²·l_a²/(u_a² − l_a²) with the defaults
    expected = 64 * (0.35 / 100) * 110**2 * 10**2 / (110**2 - 10**2)
    assert km.ops.magface_min_regularizer_weight() == pytest.approx(expected)


def test_magface_at_the_lower_norm_without_regulariser_is_arcface():
    cos = CASES[0]
    mag = as_np(km.ops.magface(LABELS, cos, np.full(N, 3.0), scale=32.0, regularizer_weight=0.0))
    arc = as_np(km.ops.margin_softmax(LABELS, cos, 32.0, m2=0.45))
    np.testing.assert_allclose(mag, arc, rtol=1e-5, atol=1e-5)


@pytest.mark.float64
def test_magface_gradient_reaches_the_norm():
    """The margin keeps its gradient with respect to ‖x‖ (finite differences of the reference)."""
    cos = CASES[0][:4]
    labels = LABELS[:4]
    norms = np.array([15.0, 40.0, 80.0, 105.0])

    def total(c, n):
        return keras.ops.sum(km.ops.magface(labels, c, n, scale=16.0))

    _, (_, grad_n) = value_and_grad(total, cos.astype("float64"), norms.astype("float64"))
    numeric = finite_difference_grad(lambda n: ref_magface(labels, cos, n, s=16.0).sum(), norms)
    np.testing.assert_allclose(grad_n, numeric, rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------------- AdaFace
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("stats", [(20.0, 100.0), (30.0, 5.0), (50.0, 0.0)])
def test_adaface_matches_reference(case, stats):
    cos = CASES[case]
    mean, std = stats
    got = as_np(km.ops.adaface(LABELS, cos, NORMS, mean, std, scale=64.0, margin=0.4, h=0.333))
    np.testing.assert_allclose(got, ref_adaface(LABELS, cos, NORMS, mean, std), rtol=1e-5, atol=2e-3)


def test_adaface_scaler_ends_are_arcface_and_cosface():
    """ẑ = −1: ArcFace's cos(θ + m); ẑ = 0: CosFace's cos θ − m (the paper's two ends)."""
    cos = random_cos(5) * 0.9
    low = as_np(km.ops.adaface(LABELS, cos, np.full(N, 1.0), 50.0, 1.0, scale=16.0, margin=0.4))
    np.testing.assert_allclose(low, as_np(km.ops.margin_softmax(LABELS, cos, 16.0, m2=0.4)),
                               rtol=1e-5, atol=1e-5)
    mid = as_np(km.ops.adaface(LABELS, cos, np.full(N, 50.0), 50.0, 1.0, scale=16.0, margin=0.4))
    np.testing.assert_allclose(mid, as_np(km.ops.margin_softmax(LABELS, cos, 16.0, m3=0.4)),
                               rtol=1e-5, atol=1e-5)


def test_adaface_stats_hand_values_and_nan_batch():
    mean, std = km.ops.adaface_norm_stats(np.array([10.0, 30.0, 500.0]), 20.0, 100.0)
    ref = ref_adaface_stats([10.0, 30.0, 500.0], 20.0, 100.0)
    np.testing.assert_allclose([float(mean), float(std)], ref, rtol=1e-6)
    # one sample: std 0 (not NaN)
    mean, std = km.ops.adaface_norm_stats(np.array([10.0]), 20.0, 100.0, momentum=0.0)
    assert (float(mean), float(std)) == (10.0, 0.0)
    mean, std = km.ops.adaface_norm_stats(np.array([np.nan, 1.0]), 20.0, 100.0)
    assert (float(mean), float(std)) == (20.0, 100.0)


# ------------------------------------------------------------------------------- ElasticFace
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("kind", ["arc", "cos"])
def test_elastic_face_matches_reference(case, kind):
    cos = CASES[case]
    margins = np.random.default_rng(case).normal(0.5, 0.3, size=N)
    margins[0] = -0.1                       # clipped to 0 in the arc variant
    got = as_np(km.ops.elastic_face(LABELS, cos, margins, scale=64.0, kind=kind))
    np.testing.assert_allclose(got, ref_elastic(LABELS, cos, margins, kind=kind), rtol=1e-5, atol=2e-3)


def test_elastic_face_with_fixed_margins_is_arcface_or_cosface():
    cos = CASES[0]
    arc = as_np(km.ops.elastic_face(LABELS, cos, np.full(N, 0.5), scale=16.0, kind="arc"))
    np.testing.assert_allclose(arc, as_np(km.ops.margin_softmax(LABELS, cos, 16.0, m2=0.5)), atol=1e-5)
    cos_ = as_np(km.ops.elastic_face(LABELS, cos, np.full(N, 0.35), scale=16.0, kind="cos"))
    np.testing.assert_allclose(cos_, as_np(km.ops.margin_softmax(LABELS, cos, 16.0, m3=0.35)), atol=1e-5)


def test_elastic_margins_plus_assigns_by_rank():
    cos_y = np.array([0.3, 0.9, -0.2, 0.5, 0.1, 0.95, -0.8])
    draws = as_np(km.ops.elastic_margins(7, 11, 0.5, 0.1))
    plus = as_np(km.ops.elastic_margins(7, 11, 0.5, 0.1, cos_y=cos_y))
    np.testing.assert_allclose(plus, ref_plus_assignment(draws, cos_y), rtol=1e-7)
    assert plus[np.argmin(cos_y)] == draws.max() and plus[np.argmax(cos_y)] == draws.min()


def _np_hash(x):
    x = np.asarray(x, dtype=np.int64) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return x


def test_stateless_normal_is_box_muller_on_hashed_counters():
    """The draws are a pure function of the seed (same bits on every backend): the integer
    hash and the uniforms are checked exactly against NumPy, the normals to float32."""
    seed, count = 12345, 10
    key = _np_hash((_np_hash(seed) + 0x9E3779B9) & 0xFFFFFFFF)
    idx = np.arange(count) * 2
    u1 = (((_np_hash((idx + key) & 0xFFFFFFFF) >> 8) & 0xFFFFFF) + 0.5) / 2**24
    u2 = (((_np_hash((idx + 1 + key) & 0xFFFFFFFF) >> 8) & 0xFFFFFF) + 0.5) / 2**24
    expected = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
    np.testing.assert_allclose(as_np(km.ops.stateless_normal(count, seed)), expected, rtol=2e-5,
                               atol=2e-6)
    compiled = jit(lambda s: km.ops.stateless_normal(count, s))(keras.ops.convert_to_tensor(seed, "int32"))
    np.testing.assert_allclose(as_np(compiled), as_np(km.ops.stateless_normal(count, seed)),
                               rtol=1e-6, atol=1e-7)
    many = as_np(km.ops.stateless_normal(200_000, 3, mean=0.5, stddev=0.05))
    assert abs(many.mean() - 0.5) < 4 * 0.05 / math.sqrt(200_000)
    assert abs(many.std() - 0.05) < 0.05 * 0.01
    assert not np.allclose(as_np(km.ops.stateless_normal(8, 1)), as_np(km.ops.stateless_normal(8, 2)))


# ----------------------------------------------------------------------------------- UniFace
@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("bias, lam", [(9.2, 1.0), (0.0, 0.7), (-3.0, 2.0)])
def test_uniface_matches_reference(case, bias, lam):
    cos = CASES[case]
    got = as_np(km.ops.uniface(LABELS, cos, bias, scale=64.0, margin=0.4, negative_weight=lam))
    np.testing.assert_allclose(got, ref_uniface(LABELS, cos, bias, lam=lam), rtol=1e-5, atol=1e-4)


def test_uniface_hand_value_and_initial_bias():
    # s = 1, m = 0, b̃ = 0, cos = 0 everywhere: log 2 for the positive and for each negative.
    got = as_np(km.ops.uniface([0], np.zeros((1, 3)), 0.0, scale=1.0, margin=0.0))
    np.testing.assert_allclose(got, [3 * math.log(2)], rtol=1e-6)
    assert km.ops.uniface_initial_bias(1000, r=2.0) == pytest.approx(math.log(20000))


# ------------------------------------------------------------------ gradients, XLA, errors
OPS = {
    "curricular": lambda y, c: km.ops.curricular_face(y, c, 0.5, scale=64.0, margin=0.8),
    "magface": lambda y, c: km.ops.magface(y, c, keras.ops.ones((c.shape[0],)) * 50.0),
    "adaface": lambda y, c: km.ops.adaface(y, c, keras.ops.ones((c.shape[0],)) * 30.0, 20.0, 5.0,
                                           margin=0.8),
    "elastic_arc": lambda y, c: km.ops.elastic_face(y, c, keras.ops.ones((c.shape[0],)) * 0.8),
    "elastic_cos": lambda y, c: km.ops.elastic_face(y, c, keras.ops.ones((c.shape[0],)) * 0.8,
                                                    kind="cos"),
    "uniface": lambda y, c: km.ops.uniface(y, c, 9.0, margin=0.8),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_values_and_gradients_finite_at_the_edges(name):
    cos = edge_cos().astype("float32")
    value, (grad,) = value_and_grad(lambda c: keras.ops.sum(OPS[name](LABELS, c)), cos)
    assert np.isfinite(value) and np.all(np.isfinite(grad)), name


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("bad", [-1, C, 100])
def test_invalid_labels_give_nan_under_xla(name, bad):
    cos = random_cos(9).astype("float32")
    fn = jit(lambda y, c: OPS[name](y, c))
    good = as_np(fn(keras.ops.convert_to_tensor(LABELS, "int32"), cos))
    assert np.all(np.isfinite(good))
    labels = LABELS.copy()
    labels[2] = bad
    out = as_np(fn(keras.ops.convert_to_tensor(labels, "int32"), cos))
    assert np.isnan(out[2]), (name, out)


@pytest.mark.parametrize("call, argument", [
    (lambda: km.ops.curricular_face([0], np.zeros((1, 2)), 0.0, margin=4.0), "margin"),
    (lambda: km.ops.curricular_face([0], np.zeros((1, 2)), 0.0, scale=0.0), "scale"),
    (lambda: km.ops.magface([0], np.zeros((1, 2)), [1.0], upper_norm=5.0), "upper_norm"),
    (lambda: km.ops.magface([0], np.zeros((1, 2)), [1.0], lower_margin=0.9), "lower_margin"),
    (lambda: km.ops.adaface([0], np.zeros((1, 2)), [1.0], 1.0, 1.0, h=0.0), "h"),
    (lambda: km.ops.adaface([0], np.zeros((1, 2)), [1.0], 1.0, 1.0, margin=2.0), "margin"),
    (lambda: km.ops.elastic_face([0], np.zeros((1, 2)), [0.5], kind="sphere"), "kind"),
    (lambda: km.ops.uniface([0], np.zeros((1, 2)), 0.0, margin=-0.1), "margin"),
    (lambda: km.ops.uniface([3], np.zeros((1, 2)), 0.0), "labels"),
])
def test_bad_arguments_raise_value_errors_naming_them(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
