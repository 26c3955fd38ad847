"""km.losses.TripletMarginLoss against the NumPy loop references of tests/references.py:
pytorch-metric-learning's TripletMarginLoss (all triplets, AvgNonZeroReducer) and TF Addons'
TripletSemiHardLoss (distance_metric="squared-L2")."""

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km
from keras_margins.testing import config_roundtrip, jit, value_and_grad


def _batch(seed, n=12, dim=6, classes=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    return labels, rng.normal(size=(n, dim)).astype("float32")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("margin, squared", [(0.05, False), (0.5, False), (0.2, True)])
def test_all_triplets_match_pml_reference(seed, margin, squared):
    labels, emb = _batch(seed)
    got = float(km.losses.TripletMarginLoss(margin, squared=squared)(labels, emb))
    np.testing.assert_allclose(got, ref.triplet_all(labels, emb, margin, squared), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margin", [1.0, 0.2])
def test_semi_hard_matches_tf_addons_reference(seed, margin):
    labels, emb = _batch(seed, n=16, dim=5, classes=4)
    emb = ref.unit_rows(emb).astype("float32")  # TF Addons expects L2-normalised embeddings
    loss = km.losses.TripletMarginLoss(margin, miner=km.miners.SemiHardMiner())
    want = ref.tfa_semi_hard(labels, emb, margin)
    np.testing.assert_allclose(float(loss(labels, emb)), want, rtol=2e-5, atol=1e-6)


def test_semi_hard_hand_made_case():
    # 1-D positions on the unit circle: anchor 0, positive at 60°, negatives at 90° and 30°.
    angles = np.deg2rad([0.0, 60.0, 90.0, 30.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], 1).astype("float32")
    labels = np.array([0, 0, 1, 2])
    d = 2 - 2 * np.cos(angles[:, None] - angles[None, :])
    # anchor 0 / positive 1: d_ap = 1; negatives 2 (d = 2) farther -> chosen; 3 (d≈0.27) not.
    # anchor 1 / positive 0: d_ap = 1; negatives: d(1,2)≈0.27, d(1,3)≈0.27 -> none farther -> max.
    want = (max(1.0 + d[0, 1] - d[0, 2], 0) + max(1.0 + d[1, 0] - max(d[1, 2], d[1, 3]), 0)) / 2
    got = float(km.losses.TripletMarginLoss(1.0, miner=km.miners.SemiHardMiner())(labels, emb))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got, ref.tfa_semi_hard(labels, emb, 1.0), rtol=1e-5)


@pytest.mark.parametrize("miner", [km.miners.BatchHardMiner(), km.miners.MultiSimilarityMiner()])
def test_pair_miner_restricts_triplets(miner):
    labels, emb = _batch(3, n=12)
    pos, neg = (np.asarray(keras.ops.convert_to_numpy(m)) for m in miner(labels, emb))
    got = float(km.losses.TripletMarginLoss(0.3, miner=miner)(labels, emb))
    want = ref.triplet_all(labels, emb, 0.3, pos_mask=pos, neg_mask=neg)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    assert want != ref.triplet_all(labels, emb, 0.3)  # the miner changed something


def test_degenerate_batches_give_zero_and_any_integer_label_is_valid():
    emb = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    for miner in (None, km.miners.SemiHardMiner()):
        loss = km.losses.TripletMarginLoss(0.2, miner=miner)
        assert float(loss([0, 1, 2, 3], emb)) == 0.0  # no positive pair
        # labels are compared for equality only: shifting them changes nothing
        labels = np.array([5, 5, -7, -7])
        np.testing.assert_allclose(float(loss(labels, emb)), float(loss(labels - 100, emb)), rtol=0)
        np.testing.assert_allclose(float(loss(labels, emb)), float(loss(np.array([0, 0, 1, 1]), emb)), rtol=0)


def test_sample_weight_and_xla():
    labels, emb = _batch(1)
    loss = km.losses.TripletMarginLoss(0.3)
    eager = float(loss(labels, emb))
    compiled = jit(lambda y, e: loss(y, e))
    np.testing.assert_allclose(float(compiled(labels, emb)), eager, rtol=1e-5)
    semi = km.losses.TripletMarginLoss(1.0, miner=km.miners.SemiHardMiner())
    compiled_semi = jit(lambda y, e: semi(y, e))
    np.testing.assert_allclose(float(compiled_semi(labels, emb)), float(semi(labels, emb)), rtol=1e-5)
    # per-anchor values: weights of 2 double the loss
    np.testing.assert_allclose(float(loss(labels, emb, sample_weight=np.full(12, 2.0))), 2 * eager, rtol=1e-5)


def test_gradient_finite_with_duplicate_embeddings():
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], "float32")
    labels = np.array([0, 0, 1, 1])
    semi = km.losses.TripletMarginLoss(0.5, miner=km.miners.SemiHardMiner())
    for loss in (km.losses.TripletMarginLoss(0.5), semi):
        value, (grad,) = value_and_grad(lambda e: loss(labels, e), emb)
        assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_config_roundtrip_and_defaults():
    loss = km.losses.TripletMarginLoss()
    assert loss.margin == 0.05 and loss.miner is None and loss.squared is None
    loss = km.losses.TripletMarginLoss(1.0, miner=km.miners.SemiHardMiner(0.3), squared=False)
    clone = config_roundtrip(loss)
    assert isinstance(clone.miner, km.miners.SemiHardMiner) and clone.miner.margin == 0.3
    assert clone.squared is False


def test_trains_embedding_under_xla():
    (x, y), _ = km.data.digits_zero_shot()
    order = np.argsort(y, kind="stable")
    x, y = x[order][::6][:96], y[order][::6][:96]
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16)])
    model.compile(keras.optimizers.Adam(1e-2), loss=km.losses.TripletMarginLoss(0.2), jit_compile=True)
    before = float(model.evaluate(x, y, batch_size=96, verbose=0))
    model.fit(x, y, batch_size=96, epochs=15, verbose=0)
    after = float(model.evaluate(x, y, batch_size=96, verbose=0))
    assert np.isfinite(after) and after < before
