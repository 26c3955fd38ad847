import numpy as np
import pytest

import keras_margins as km


def reference_scores(emb, labels, q_emb=None, q_labels=None, ks=(1, 5, 10)):
    """Slow, obvious Musgrave et al. 2020 definitions with explicit loops.

    Ranking: cosine similarity (float32, as the library), ties broken pessimistically
    (different class before same class at equal similarity).
    """
    loo = q_emb is None
    if loo:
        q_emb, q_labels = emb, labels
    emb = np.asarray(emb, "float32")
    q_emb = np.asarray(q_emb, "float32")
    out = {"precision_at_1": [], "r_precision": [], "map_at_r": []}
    out.update({f"recall_at_{k}": [] for k in ks})
    for i in range(len(q_emb)):
        q = q_emb[i] / max(np.linalg.norm(q_emb[i]), 1e-12)
        items = []
        for j in range(len(emb)):
            if loo and j == i:
                continue
            r = emb[j] / max(np.linalg.norm(emb[j]), 1e-12)
            sim = float(np.float32(np.dot(q.astype("float64"), r.astype("float64"))))
            same = int(labels[j] == q_labels[i])
            items.append((-sim, same))
        items.sort()  # by similarity desc, then different-class (0) before same-class (1)
        rel = [s for _, s in items]
        big_r = sum(rel)
        if big_r == 0:
            continue
        out["precision_at_1"].append(rel[0])
        for k in ks:
            out[f"recall_at_{k}"].append(1.0 if any(rel[:k]) else 0.0)
        out["r_precision"].append(sum(rel[:big_r]) / big_r)
        ap, hits = 0.0, 0
        for pos in range(big_r):
            if rel[pos]:
                hits += 1
                ap += hits / (pos + 1)
        out["map_at_r"].append(ap / big_r)
    return {name: float(np.mean(v)) for name, v in out.items()}


def _random_set(seed, n=120, d=8, c=6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, size=n)
    centres = rng.normal(size=(c, d))
    emb = centres[labels] * 0.8 + rng.normal(size=(n, d))
    return emb.astype("float32"), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leave_one_out_matches_numpy_reference(seed):
    emb, labels = _random_set(seed)
    got = km.metrics.retrieval_scores(emb, labels, k=(1, 5, 10))
    want = reference_scores(emb, labels, ks=(1, 5, 10))
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)
    assert 0.0 < got["map_at_r"] < 1.0  # a non-trivial case


def test_separate_query_set_matches_reference_and_skips_lone_queries():
    emb, labels = _random_set(3, n=90)
    q_emb, q_labels = _random_set(4, n=40, c=7)  # class 6 has no reference: left out
    assert np.any(q_labels == 6)
    got = km.metrics.retrieval_scores(emb, labels, q_emb, q_labels, k=(1, 3))
    want = reference_scores(emb, labels, q_emb, q_labels, ks=(1, 3))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-6, err_msg=name)


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_chunked_equals_unchunked(chunk_size):
    emb, labels = _random_set(5, n=150)
    full = km.metrics.retrieval_scores(emb, labels, chunk_size=None)
    chunked = km.metrics.retrieval_scores(emb, labels, chunk_size=chunk_size)
    assert full == pytest.approx(chunked, abs=1e-12)


def test_perfect_clustering_scores_one():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 8)
    directions = np.eye(5, 6)
    emb = directions[labels] + 0.01 * rng.normal(size=(40, 6))
    got = km.metrics.retrieval_scores(emb, labels, k=(1, 2, 4))
    assert all(v == pytest.approx(1.0) for v in got.values()), got


def test_hand_made_ranking():
    # Query 0 (class 0) at angle 0. Ranking by cosine: id1 (class 1), id2 (class 0),
    # id3 (class 1), id4 (class 0). R = 2 (items 2 and 4).
    angles = np.deg2rad([0, 10, 20, 30, 40])
    emb = np.stack([np.cos(angles), np.sin(angles)], 1)
    labels = np.array([0, 1, 0, 1, 0])
    q = km.metrics.retrieval_scores(emb[1:], labels[1:], emb[:1], labels[:1], k=(1, 2, 3))
    assert q["precision_at_1"] == 0.0
    assert q["recall_at_1"] == 0.0 and q["recall_at_2"] == 1.0 and q["recall_at_3"] == 1.0
    assert q["r_precision"] == pytest.approx(0.5)  # one of the top 2 is relevant
    assert q["map_at_r"] == pytest.approx((1 / 2) / 2)  # P(2)·rel(2) / R


def test_ties_are_pessimistic_and_order_independent():
    # The query is equally similar to a same-class and a different-class reference.
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1, 0])
    query, q_label = np.array([[1.0, 0.0]]), np.array([0])
    a = km.metrics.retrieval_scores(emb, labels, query, q_label, k=(1, 2))
    b = km.metrics.retrieval_scores(emb[[1, 0, 2]], labels[[1, 0, 2]], query, q_label, k=(1, 2))
    assert a == b
    assert a["precision_at_1"] == 0.0 and a["recall_at_2"] == 1.0
    # R = 2: ranked [diff, same, same] -> MAP@R = (1/2)/2, R-precision = 1/2.
    assert a["map_at_r"] == pytest.approx(0.25) and a["r_precision"] == pytest.approx(0.5)


def test_leave_one_out_never_retrieves_self_and_euclidean_metric():
    emb = np.array([[0.0], [0.1], [5.0], [5.2]], "float32")
    labels = np.array([0, 1, 0, 1])
    # Euclidean: the nearest other item is always of the other class and R = 1, so
    # P@1 = MAP@R = 0 (self, at distance 0, would have given 1); recall@3 sees everything.
    got = km.metrics.retrieval_scores(emb, labels, k=(1, 3), metric="euclidean")
    assert got["precision_at_1"] == 0.0 and got["map_at_r"] == 0.0
    assert got["recall_at_3"] == 1.0


def test_recall_k_larger_than_reference_set_is_capped():
    emb, labels = _random_set(6, n=12, c=2)
    got = km.metrics.retrieval_scores(emb, labels, k=(100,))
    assert got["recall_at_100"] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(embeddings=np.zeros((4,))), "embeddings"),
        (dict(labels=np.zeros((3,))), "labels"),
        (dict(k=0), "`k`"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(metric="dot"), "metric"),
        (dict(query_embeddings=np.zeros((2, 3))), "query_labels"),
        (dict(query_embeddings=np.zeros((2, 5)), query_labels=[0, 1]), "D="),
        (dict(embeddings=np.full((4, 3), np.nan)), "NaN"),
        (dict(labels=[0, 1, 2, 3]), "No query"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    args = dict(embeddings=np.ones((4, 3)), labels=[0, 0, 1, 1])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        km.metrics.retrieval_scores(**args)


def test_memory_is_bounded_by_chunk(monkeypatch):
    """No block of scores larger than chunk_size × M is ever built."""
    from keras_margins.metrics import retrieval

    shapes = []
    original = retrieval.pairwise_scores

    def spy(q, r, metric):
        shapes.append((len(q), len(r)))
        return original(q, r, metric)

    monkeypatch.setattr(retrieval, "pairwise_scores", spy)
    emb, labels = _random_set(7, n=300)
    retrieval.retrieval_scores(emb, labels, chunk_size=32)
    assert max(s[0] for s in shapes) == 32 and len(shapes) == 10
