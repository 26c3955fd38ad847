"""km.miners: every miner equals the NumPy reference masks of ``tests/references.py`` and
trains under jit_compile=True."""

import keras
import numpy as np
import pytest
import references as ref

import keras_margins as km


def all_pairs_masks(labels, sim):
    return ref.pair_masks(labels)


CASES = [
    (km.miners.AllPairsMiner, all_pairs_masks),
    (km.miners.BatchHardMiner, ref.batch_hard_masks),
    (km.miners.SemiHardMiner, ref.semi_hard_masks),
    (km.miners.MultiSimilarityMiner, ref.multi_similarity_masks),
]


def _batch(seed, n=16, classes=4, dim=6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    labels[0] = 99  # an anchor without positives
    return labels, rng.normal(size=(n, dim)).astype("float32")


@pytest.mark.parametrize("miner_cls,reference", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miner_matches_reference(miner_cls, reference, seed):
    labels, emb = _batch(seed)
    pos, neg = miner_cls()(labels, emb)
    # compare on the float32 similarities the miner saw (avoid ties flipping by rounding),
    # themselves checked against the NumPy cosines
    sim = np.asarray(km.ops.pairwise_cosine(emb)).astype("float64")
    np.testing.assert_allclose(sim, ref.pairwise_cosine(emb), atol=1e-6)
    want_pos, want_neg = reference(labels, sim)
    assert pos.shape == (16, 16) and neg.shape == (16, 16)
    assert keras.backend.standardize_dtype(pos.dtype) == "bool"
    np.testing.assert_array_equal(np.asarray(pos), want_pos)
    np.testing.assert_array_equal(np.asarray(neg), want_neg)
    # mined pairs are subsets of the label pairs; anchor 0 has no positive
    label_pos, label_neg = ref.pair_masks(labels)
    assert not np.any(np.asarray(pos) & ~label_pos) and not np.any(np.asarray(neg) & ~label_neg)
    assert not np.asarray(pos)[0].any()


def test_miners_select_something_nontrivial():
    labels, emb = _batch(5, n=32, classes=4)
    for miner_cls, _ in CASES[1:]:
        pos, neg = miner_cls()(labels, emb)
        all_pos, all_neg = ref.pair_masks(labels)
        assert 0 < np.asarray(neg).sum() < all_neg.sum(), miner_cls


def test_hand_made_batch_hard_and_multi_similarity():
    labels = np.array([0, 0, 0, 1])
    # anchor 0 = e0; positives at cos 0.9 and 0.1, negative at cos 0.5
    emb = np.array(
        [[1, 0, 0], [0.9, np.sqrt(1 - 0.81), 0], [0.1, 0, np.sqrt(0.99)], [0.5, -np.sqrt(0.75), 0]],
        "float32",
    )
    pos, neg = km.miners.BatchHardMiner()(labels, emb)
    assert np.asarray(pos)[0].tolist() == [False, False, True, False]
    assert np.asarray(neg)[0].tolist() == [False, False, False, True]
    pos, neg = km.miners.MultiSimilarityMiner(epsilon=0.1)(labels, emb)
    # positive 0.9 is not < 0.5 + 0.1 (easy), positive 0.1 is; negative 0.5 + 0.1 > min pos 0.1
    assert np.asarray(pos)[0].tolist() == [False, False, True, False]
    assert np.asarray(neg)[0].tolist() == [False, False, False, True]


@pytest.mark.parametrize("miner_cls", [c for c, _ in CASES])
def test_config_roundtrip(miner_cls):
    clone = km.testing.config_roundtrip(miner_cls())
    assert isinstance(clone, miner_cls)


def test_bad_arguments():
    with pytest.raises(ValueError, match="margin"):
        km.miners.SemiHardMiner(margin=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        km.miners.MultiSimilarityMiner(epsilon=-1.0)
    with pytest.raises(ValueError, match="embeddings"):
        km.miners.BatchHardMiner()([0, 1], np.ones(2))


@pytest.mark.parametrize("miner_cls", [c for c, _ in CASES])
def test_fit_with_jit_compile(miner_cls):
    (x, y), _ = km.data.digits_zero_shot()
    ds = km.data.pk_batches((x, y), p=4, k=4, seed=0, steps_per_epoch=4)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16)])
    model.compile(
        keras.optimizers.Adam(1e-3),
        loss=km.losses.PairCircleLoss(miner=miner_cls()),
        jit_compile=True,
    )
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][0] > 0
