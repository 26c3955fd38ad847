"""Which TF Addons distance ``TripletMarginLoss(miner=SemiHardMiner())`` reproduces.

TF Addons' ``triplet_semihard_loss`` takes ``distance_metric``; since TF Addons 0.11 its
default "L2" is the plain Euclidean distance and "squared-L2" the squared one (0.10 and
earlier called the squared distance "L2" / "L_2"). The library's semi-hard mode squares by
default, so it equals ``distance_metric="squared-L2"``, not TF Addons' current default; with
``squared=False`` it equals "L2". Both definitions are written out here as NumPy loops
(TF Addons' pairwise distances: squared distances floored at 0, zero diagonal; semi-hard
negative = the smallest d_an > d_ap, else the largest d_an, 0 without negatives; sum of the
hinges over all ordered positive pairs divided by their number).
"""

import numpy as np
import pytest
import references as ref

import keras_margins as km


def _batch(seed, n=16, dim=8, classes=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # TF Addons asks for L2-normalised rows
    return labels, x.astype("float32")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margin", [1.0, 0.2])
def test_semi_hard_default_is_tf_addons_squared_l2_not_its_l2_default(seed, margin):
    labels, x = _batch(seed)
    squared = ref.tfa_semi_hard(labels, x, margin, "squared-L2")
    euclidean = ref.tfa_semi_hard(labels, x, margin, "L2")
    got = float(km.losses.TripletMarginLoss(margin, miner=km.miners.SemiHardMiner())(labels, x))
    np.testing.assert_allclose(got, squared, rtol=2e-5, atol=1e-6)
    # the two TF Addons definitions differ on these batches by far more than the tolerance
    assert abs(squared - euclidean) > 0.01, (squared, euclidean)
    assert abs(got - euclidean) > 0.01


@pytest.mark.parametrize("seed", range(3))
def test_squared_false_is_tf_addons_l2(seed):
    labels, x = _batch(seed)
    loss = km.losses.TripletMarginLoss(1.0, miner=km.miners.SemiHardMiner(), squared=False)
    np.testing.assert_allclose(float(loss(labels, x)), ref.tfa_semi_hard(labels, x, 1.0, "L2"),
                               rtol=2e-5, atol=1e-6)


def test_hand_made_batch_where_the_two_metrics_part():
    # unit vectors at 0°, 60° (class 0) and 100°, 180° (class 1); margin 1; d² = 2 − 2 cos Δ.
    angles = np.deg2rad([0.0, 60.0, 100.0, 180.0])
    x = np.stack([np.cos(angles), np.sin(angles)], 1)
    labels = np.array([0, 0, 1, 1])
    sq = 2.0 - 2.0 * np.cos(angles[:, None] - angles[None, :])
    # (anchor, positive) -> the smallest negative distance beyond d_ap (sqrt keeps the order,
    # so both metrics choose the same negative): (0, 1): d² 1 -> 2.35 (100°), not 4 (180°);
    # (1, 0): d² 1 -> 3 (180°), 0.47 (100°) is nearer than the positive; (2, 3): d² 1.65 ->
    # 2.35 (0°); (3, 2): d² 1.65 -> 3 (60°), not 4 (0°).
    chosen = {(0, 1): 2, (1, 0): 3, (2, 3): 0, (3, 2): 1}

    def want(d):
        return sum(max(1.0 + d[a, p] - d[a, n], 0.0) for (a, p), n in chosen.items()) / 4

    want_sq, want_l2 = want(sq), want(np.sqrt(sq))
    np.testing.assert_allclose(want_sq, 0.3054 / 4, atol=1e-4)    # one hinge active: (2, 3)
    np.testing.assert_allclose(want_l2, 2.0429 / 4, atol=1e-4)    # all four active
    np.testing.assert_allclose(ref.tfa_semi_hard(labels, x, 1.0, "squared-L2"), want_sq, rtol=1e-12)
    np.testing.assert_allclose(ref.tfa_semi_hard(labels, x, 1.0, "L2"), want_l2, rtol=1e-12)
    x32 = x.astype("float32")
    semi_hard = km.miners.SemiHardMiner()
    np.testing.assert_allclose(float(km.losses.TripletMarginLoss(1.0, miner=semi_hard)(labels, x32)),
                               want_sq, rtol=1e-5)
    euclidean = km.losses.TripletMarginLoss(1.0, miner=km.miners.SemiHardMiner(), squared=False)
    np.testing.assert_allclose(float(euclidean(labels, x32)), want_l2, rtol=1e-5)
