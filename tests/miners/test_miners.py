"""km.miners: every miner equals a NumPy reference mask and trains under jit_compile=True."""

import keras
import numpy as np
import pytest

import keras_margins as km


def ref_sim(emb):
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def ref_label_masks(labels):
    n = len(labels)
    pos = np.zeros((n, n), bool)
    neg = np.zeros((n, n), bool)
    for i in range(n):
        for j in range(n):
            pos[i, j] = i != j and labels[i] == labels[j]
            neg[i, j] = labels[i] != labels[j]
    return pos, neg


def ref_all_pairs(labels, sim):
    return ref_label_masks(labels)


def ref_batch_hard(labels, sim):
    pos, neg = ref_label_masks(labels)
    out_p, out_n = np.zeros_like(pos), np.zeros_like(neg)
    for a in range(len(labels)):
        ps = [j for j in range(len(labels)) if pos[a, j]]
        ns = [j for j in range(len(labels)) if neg[a, j]]
        if ps and ns:
            out_p[a, min(ps, key=lambda j: (sim[a, j], j))] = True
            out_n[a, max(ns, key=lambda j: (sim[a, j], -j))] = True
    return out_p, out_n


def ref_semi_hard(labels, sim, margin=0.2):
    pos, neg = ref_label_masks(labels)
    out_p, out_n = np.zeros_like(pos), np.zeros_like(neg)
    n = len(labels)
    for a in range(n):
        for p in range(n):
            for q in range(n):
                if pos[a, p] and neg[a, q] and sim[a, p] - margin < sim[a, q] < sim[a, p]:
                    out_p[a, p] = out_n[a, q] = True
    return out_p, out_n


def ref_multi_similarity(labels, sim, eps=0.1):
    pos, neg = ref_label_masks(labels)
    out_p, out_n = np.zeros_like(pos), np.zeros_like(neg)
    n = len(labels)
    for a in range(n):
        ps = [sim[a, j] for j in range(n) if pos[a, j]]
        ns = [sim[a, j] for j in range(n) if neg[a, j]]
        for j in range(n):
            out_n[a, j] = neg[a, j] and bool(ps) and sim[a, j] + eps > min(ps)
            out_p[a, j] = pos[a, j] and bool(ns) and sim[a, j] - eps < max(ns)
    return out_p, out_n


CASES = [
    (km.miners.AllPairsMiner, ref_all_pairs),
    (km.miners.BatchHardMiner, ref_batch_hard),
    (km.miners.SemiHardMiner, ref_semi_hard),
    (km.miners.MultiSimilarityMiner, ref_multi_similarity),
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
    # compare on the float32 similarities the miner saw (avoid ties flipping by rounding)
    sim = np.asarray(km.ops.pairwise_cosine(emb)).astype("float64")
    want_pos, want_neg = reference(labels, sim)
    assert pos.shape == (16, 16) and neg.shape == (16, 16)
    assert keras.backend.standardize_dtype(pos.dtype) == "bool"
    np.testing.assert_array_equal(np.asarray(pos), want_pos)
    np.testing.assert_array_equal(np.asarray(neg), want_neg)
    # mined pairs are subsets of the label pairs; anchor 0 has no positive
    label_pos, label_neg = ref_label_masks(labels)
    assert not np.any(np.asarray(pos) & ~label_pos) and not np.any(np.asarray(neg) & ~label_neg)
    assert not np.asarray(pos)[0].any()


def test_miners_select_something_nontrivial():
    labels, emb = _batch(5, n=32, classes=4)
    for miner_cls, _ in CASES[1:]:
        pos, neg = miner_cls()(labels, emb)
        all_pos, all_neg = ref_label_masks(labels)
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
