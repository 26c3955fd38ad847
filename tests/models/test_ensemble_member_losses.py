"""The ensemble authors' member losses (SmoothedCrossEntropy, SemiHardTripletHingeLoss), in
the manner of Keras' losses_test.py: values against explicit loops (random and hand-made
batches), the three reductions, sample weights with zeros, float64 honoured, configuration and
.keras round trips, bad arguments, invalid labels under XLA, gradients against finite
differences."""

import math

import keras
import numpy as np
import pytest

from keras_margins.models.ensemble_member_losses import SemiHardTripletHingeLoss, SmoothedCrossEntropy
from keras_margins.testing import config_roundtrip, finite_difference_grad, jit, value_and_grad

N, C, D = 8, 5, 4


# -------------------------------------------------------------------------- references
def smoothed_ce_reference(labels, logits, eps):
    """Per-sample −Σ_j q_j log softmax(z)_j, q_y = 1 − ε, q_j = ε/(C − 1), written out."""
    out = []
    for i in range(len(labels)):
        z = np.asarray(logits[i], "float64")
        log_z = [z[j] - math.log(sum(math.exp(v) for v in z)) for j in range(len(z))]
        q = [1 - eps if j == labels[i] else eps / (len(z) - 1) for j in range(len(z))]
        out.append(-sum(q[j] * log_z[j] for j in range(len(z))))
    return np.array(out)


def triplet_reference(labels, emb, margin, window):
    """Per-anchor values of the window triplet hinge whose mean is the triplet mean, by a
    triple loop over (a, p, n) on Euclidean distances of the unit rows."""
    unit = [np.asarray(e, "float64") / np.linalg.norm(e) for e in emb]
    n = len(labels)
    dist = [[float(np.sqrt(np.sum((unit[a] - unit[b]) ** 2))) for b in range(n)] for a in range(n)]
    per_anchor, count = np.zeros(n), 0
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            for q in range(n):
                if labels[q] == labels[a]:
                    continue
                gap = dist[a][q] - dist[a][p]
                if 0 < gap <= window:
                    per_anchor[a] += max(margin - gap, 0.0)
                    count += 1
    return per_anchor * n / max(count, 1)


def ce_batch(seed):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(N) % C), rng.normal(scale=2.0, size=(N, C))


def embedding_batch(seed):
    """A P×K batch (P = 3, K = 2) plus two anchors without a positive; embeddings close enough
    that many triplets fall in a 0.3 window."""
    rng = np.random.default_rng(seed)
    labels = np.array([4, 4, -2, -2, 9, 9, 7, 30])[rng.permutation(N)]
    centre = rng.normal(size=D)
    return labels, centre + 0.4 * rng.normal(size=(N, D))


CASES = {
    "smoothed_ce": (lambda **kw: SmoothedCrossEntropy(0.15, **kw), ce_batch,
                    lambda y, x: smoothed_ce_reference(y, x, 0.15)),
    "smoothed_ce_none": (lambda **kw: SmoothedCrossEntropy(0.0, **kw), ce_batch,
                         lambda y, x: smoothed_ce_reference(y, x, 0.0)),
    "triplet_hinge": (lambda **kw: SemiHardTripletHingeLoss(1.0, 0.3, **kw), embedding_batch,
                      lambda y, x: triplet_reference(y, x, 1.0, 0.3)),
    "triplet_hinge_small_margin": (lambda **kw: SemiHardTripletHingeLoss(0.1, 0.3, **kw),
                                   embedding_batch, lambda y, x: triplet_reference(y, x, 0.1, 0.3)),
}


# ------------------------------------------------------------------------------ values
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("case", sorted(CASES))
def test_value_equals_the_loop_reference(case, seed):
    make, batch, reference = CASES[case]
    y, x = batch(seed)
    want = reference(y, x)
    if case.startswith("triplet"):
        assert np.count_nonzero(want) >= 2  # the batch holds triplets in the window
    got = float(make()(y, x.astype("float32")))
    np.testing.assert_allclose(got, want.mean(), rtol=2e-5, atol=1e-6)


def test_hand_computed_values():
    # logits (2, 0, 0, 0), label 0, ε = 0.15: 0.85·(log(e²+3) − 2) + 0.15·log(e²+3)
    lse = math.log(math.exp(2.0) + 3.0)
    want = 0.85 * (lse - 2.0) + 0.15 * lse
    got = float(SmoothedCrossEntropy(0.15)([0], np.array([[2.0, 0.0, 0.0, 0.0]], "float32")))
    assert got == pytest.approx(want, rel=1e-6)
    # Unit vectors at angles 0, 40° (same class) and 45°, 180° (other classes): from anchor 0,
    # d_ap = 2 sin 20°, d_an = 2 sin 22.5° (gap 0.0814, in the 0.1 window) and 2 (outside it);
    # from anchor 1, d_an = 2 sin 2.5° < d_ap and 2 sin 70° (gap 1.195): outside. One triplet.
    angles = np.radians([0.0, 40.0, 45.0, 180.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype("float32")
    gap = 2 * math.sin(math.radians(22.5)) - 2 * math.sin(math.radians(20.0))
    got = float(SemiHardTripletHingeLoss(1.0, 0.1)([0, 0, 1, 2], emb))
    assert got == pytest.approx(1.0 - gap, rel=1e-5)
    # A window of 1.5 also takes (0, 1, 3) (gap 2 − 2 sin 20°) and (1, 0, 3) (gap 1.195).
    gaps = [gap, 2.0 - 2.0 * math.sin(math.radians(20.0)),
            2.0 * math.sin(math.radians(70.0)) - 2.0 * math.sin(math.radians(20.0))]
    got = float(SemiHardTripletHingeLoss(2.0, 1.5)([0, 0, 1, 2], emb))
    assert got == pytest.approx(np.mean([2.0 - g for g in gaps]), rel=1e-5)


def test_no_triplet_in_the_window_gives_zero_with_a_zero_gradient():
    labels = np.array([0, 0, 1, 1])
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [-0.9, -0.1]], "float32")  # far apart
    value, (grad,) = value_and_grad(lambda e: SemiHardTripletHingeLoss(1.0, 0.1)(labels, e), emb)
    assert value == 0.0 and np.all(grad == 0.0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_reductions_and_sample_weights(case):
    make, batch, reference = CASES[case]
    y, x = batch(1)
    per_sample = reference(y, x)
    x = x.astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(make(reduction=None)(y, x)), per_sample,
                               rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(float(make(reduction="sum")(y, x)), per_sample.sum(), rtol=2e-5,
                               atol=1e-5)
    weights = np.array([0.0, 1.0, 2.0, 0.0, 0.5, 1.0, 3.0, 1.0])
    got = float(make()(y, x, sample_weight=weights))
    np.testing.assert_allclose(got, np.sum(per_sample * weights) / N, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float64_is_honoured(case):
    make, batch, reference = CASES[case]
    y, x = batch(2)
    value = make(dtype="float64")(y, x)
    assert keras.backend.standardize_dtype(value.dtype) == "float64"
    np.testing.assert_allclose(float(value), reference(y, x).mean(), rtol=1e-12, atol=1e-12)


def test_gradients_match_finite_differences():
    y, x = embedding_batch(0)
    loss = SemiHardTripletHingeLoss(1.0, 0.3, dtype="float64")
    _, (grad,) = value_and_grad(lambda e: loss(y, e), x)
    want = finite_difference_grad(lambda e: triplet_reference(y, e, 1.0, 0.3).mean(), x)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
    y, z = ce_batch(0)
    loss = SmoothedCrossEntropy(0.15, dtype="float64")
    _, (grad,) = value_and_grad(lambda v: loss(y, v), z)
    want = finite_difference_grad(lambda v: smoothed_ce_reference(y, v, 0.15).mean(), z)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-8)


# --------------------------------------------------------------------- configuration
@pytest.mark.parametrize("case", sorted(CASES))
def test_config_and_keras_file_round_trip(case, tmp_path):
    make, batch, _ = CASES[case]
    loss = make(reduction="sum", name="member")
    clone = config_roundtrip(loss)
    y, x = batch(0)
    assert float(clone(y, x.astype("float32"))) == pytest.approx(float(loss(y, x.astype("float32"))))
    width = C if case.startswith("smoothed") else D
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(width)])
    model.compile("adam", loss=loss)
    model.optimizer.build(model.trainable_variables)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert type(reloaded.loss) is type(loss) and reloaded.loss.get_config() == loss.get_config()


def test_config_holds_the_constructor_arguments():
    assert SmoothedCrossEntropy(0.2).get_config()["label_smoothing"] == 0.2
    config = SemiHardTripletHingeLoss(0.5, 0.2).get_config()
    assert (config["margin"], config["window"]) == (0.5, 0.2)


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: SmoothedCrossEntropy(-0.1), "label_smoothing"),
        (lambda: SmoothedCrossEntropy(1.0), "label_smoothing"),
        (lambda: SemiHardTripletHingeLoss(margin=-1.0), "margin"),
        (lambda: SemiHardTripletHingeLoss(window=0.0), "window"),
    ],
)
def test_bad_arguments(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


def test_unknown_keyword_arguments_are_refused():
    with pytest.raises(TypeError, match="'label_smothing'.*Did you mean 'label_smoothing'"):
        SmoothedCrossEntropy(label_smothing=0.1)
    with pytest.raises(TypeError, match="windw"):
        SemiHardTripletHingeLoss(windw=0.1)


# ------------------------------------------------------------------------ bad inputs
def test_invalid_labels_raise_eagerly_and_give_nan_under_xla():
    logits = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    loss = SmoothedCrossEntropy(0.15)
    with pytest.raises(ValueError, match="labels"):
        loss(np.array([0, 1, 3, 2]), logits)
    compiled = jit(lambda y, z: loss(y, z))
    assert np.isnan(float(compiled(np.array([0, 1, 3, 2], "int32"), logits)))
    assert np.isnan(float(compiled(np.array([0, -1, 2, 2], "int32"), logits)))
    valid = float(compiled(np.array([0, 1, 2, 2], "int32"), logits))
    assert valid == pytest.approx(smoothed_ce_reference([0, 1, 2, 2], logits, 0.15).mean(), rel=1e-5)


def test_wrong_shapes_name_the_argument():
    with pytest.raises(ValueError, match="logits"):
        SmoothedCrossEntropy()(np.array([0, 1]), np.zeros((2,), "float32"))
    with pytest.raises(ValueError, match="embeddings"):
        SemiHardTripletHingeLoss()(np.array([0, 1]), np.zeros((2,), "float32"))
    with pytest.raises(ValueError, match="labels"):
        SemiHardTripletHingeLoss()(np.array([0, 1, 1]), np.zeros((2, 3), "float32"))
