"""km.retrieval.EmbeddingIndex: exact search against a NumPy brute force written here, gallery
edits, bad input (ValueError naming the argument, gallery unchanged), .keras round trips."""

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.retrieval import kernels

RNG = np.random.default_rng(0)


def brute_force(queries, gallery, ids, k, metric="cosine"):
    """Top-k by a plain loop: (ids, scores) in float64, best first."""
    q = np.asarray(queries, "float64")
    g = np.asarray(gallery, "float64")
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    out_ids, out_scores = [], []
    for row in q:
        scores = [float(np.dot(row, item)) for item in g]
        order = sorted(range(len(scores)), key=lambda j: -scores[j])[:k]
        out_ids.append([int(ids[j]) for j in order])
        out_scores.append([scores[j] for j in order])
    return np.array(out_ids), np.array(out_scores)


def assert_same_top_k(found, scores, ref_ids, ref_scores, atol=1e-5):
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=atol)
    # Ids agree except where the reference itself has a near-tie.
    gaps = np.abs(np.diff(ref_scores, axis=1))
    tied = np.zeros(ref_scores.shape, bool)
    tied[:, 1:] |= gaps < 1e-5
    tied[:, :-1] |= gaps < 1e-5
    assert np.all((found == ref_ids) | tied)


def gallery(n=300, d=12, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.permutation(10**6)[:n]


@pytest.mark.parametrize("metric", ["cosine", "inner_product"])
@pytest.mark.parametrize("shards,chunk", [(1, 128), (1, 1024), (3, 128)])
def test_search_equals_brute_force(metric, shards, chunk):
    g, ids = gallery()
    index = km.retrieval.EmbeddingIndex(12, metric=metric, chunk_size=chunk, shards=shards)
    index.add(g[:100], ids[:100])
    index.add(g[100:], ids[100:])  # two adds: the second one grows the storage for chunk 128
    queries = RNG.normal(size=(19, 12)).astype("float32")
    for k in (7, 300):
        found, scores = index.search(queries, k)
        assert found.shape == scores.shape == (19, k)
        assert_same_top_k(found, scores, *brute_force(queries, g, ids, k, metric))


def test_k_larger_than_a_chunk_and_block_maxima_path():
    g, ids = gallery(n=700, d=6)
    index = km.retrieval.EmbeddingIndex(6, chunk_size=256)  # 2 blocks of 128 per chunk
    index.add(g, ids)
    queries = RNG.normal(size=(5, 6)).astype("float32")
    for k in (2, 3, 700):  # k <= 2 takes the block-maximum path, k = 3 plain top-k
        assert_same_top_k(*index.search(queries, k), *brute_force(queries, g, ids, k))


def test_block_maximum_top_k_equals_top_k():
    scores = RNG.normal(size=(4, 3, 1024)).astype("float32")
    for k in (1, 5, 7):
        values, rows = kernels.chunk_top_k(keras.ops.convert_to_tensor(scores), k)
        ref_rows = np.argsort(-scores, axis=-1)[..., :k]
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(rows), ref_rows)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(values),
                                   np.take_along_axis(scores, ref_rows, -1), rtol=0, atol=0)


def test_hand_made_gallery():
    index = km.retrieval.EmbeddingIndex(2, chunk_size=8)
    index.add([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], ids=[7, 8, 9], names=["x", "y", "z"])
    found, scores = index.search([[3.0, 4.0]], k=3)
    assert found.tolist() == [[8, 7, 9]]
    np.testing.assert_allclose(scores, [[0.8, 0.6, -7 / (5 * np.sqrt(2))]], atol=1e-6)
    assert index.name_of(found[0]) == ["y", "x", "z"]
    ip = km.retrieval.EmbeddingIndex(2, metric="inner_product", chunk_size=8)
    ip.add([[1.0, 0.0], [0.0, 2.0]], ids=[1, 2])
    found, scores = ip.search([[3.0, 4.0]], k=2)
    assert found.tolist() == [[2, 1]] and scores.tolist() == [[8.0, 3.0]]


def test_remove_then_search_and_add_again():
    g, ids = gallery(n=200)
    index = km.retrieval.EmbeddingIndex(12, chunk_size=64, shards=2)
    index.add(g, ids)
    gone = ids[[0, 5, 199, 100, 101, 150]]
    assert index.remove(gone) == 194
    keep = ~np.isin(ids, gone)
    assert sorted(index.ids().tolist()) == sorted(ids[keep].tolist())
    queries = RNG.normal(size=(7, 12)).astype("float32")
    assert_same_top_k(*index.search(queries, 20), *brute_force(queries, g[keep], ids[keep], 20))
    index.add(g[:1], ids[:1])
    assert sorted(index.ids().tolist()) == sorted(ids[keep].tolist() + [int(ids[0])])


def _state(index):
    return (index.size, index.ids().tolist(), index.capacity, dict(index.names))


BAD = {
    "wrong_dim": (lambda i: i.add(np.ones((2, 5)), [100, 101]), "embeddings"),
    "rank3": (lambda i: i.add(np.ones((2, 4, 1)), [100, 101]), "embeddings"),
    "nan": (lambda i: i.add(np.array([[1.0, np.nan, 0, 0]]), [100]), "embeddings"),
    "zero_row_cosine": (lambda i: i.add(np.zeros((1, 4)), [100]), "embeddings"),
    "duplicate_ids": (lambda i: i.add(np.ones((2, 4)), [100, 100]), "ids"),
    "existing_id": (lambda i: i.add(np.ones((1, 4)), [3]), "ids"),
    "negative_id": (lambda i: i.add(np.ones((1, 4)), [-1]), "ids"),
    "ids_length": (lambda i: i.add(np.ones((2, 4)), [100]), "ids"),
    "float_id": (lambda i: i.add(np.ones((1, 4)), [1.5]), "ids"),
    "names_length": (lambda i: i.add(np.ones((2, 4)), [100, 101], names=["a"]), "names"),
    "remove_unknown": (lambda i: i.remove([3, 12345]), "ids"),
    "remove_twice": (lambda i: i.remove([3, 3]), "ids"),
    "k_zero": (lambda i: i.search(np.ones((1, 4)), k=0), "k"),
    "k_too_large": (lambda i: i.search(np.ones((1, 4)), k=11), "k"),
    "k_float": (lambda i: i.search(np.ones((1, 4)), k=2.0), "k"),
    "query_nan": (lambda i: i.search(np.array([[np.nan, 0, 0, 1.0]]), k=1), "queries"),
    "query_dim": (lambda i: i.search(np.ones((1, 3)), k=1), "queries"),
    "match_uncalibrated": (lambda i: i.match(np.ones((1, 4))), "threshold"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_the_argument_and_leaves_the_gallery(case):
    index = km.retrieval.EmbeddingIndex(4, chunk_size=8)
    index.add(RNG.normal(size=(10, 4)), np.arange(10), names=[str(i) for i in range(10)])
    before = _state(index)
    call, argument = BAD[case]
    with pytest.raises(ValueError, match=f"`{argument}`"):
        call(index)
    assert _state(index) == before


def test_constructor_checks():
    with pytest.raises(TypeError, match="chunk_size"):
        km.retrieval.EmbeddingIndex(4, chunk_sise=8)
    for kwargs, name in (({"dim": 0}, "dim"), ({"dim": 4, "metric": "l2"}, "metric"),
                         ({"dim": 4, "k": 0}, "k"), ({"dim": 4, "chunk_size": 0}, "chunk_size"),
                         ({"dim": 4, "shards": 0}, "shards"), ({"dim": 4, "capacity": -1}, "capacity")):
        with pytest.raises(ValueError, match=f"`{name}`"):
            km.retrieval.EmbeddingIndex(**kwargs)


def test_round_trip_in_a_model_and_alone(tmp_path):
    g, ids = gallery(n=150, d=8)
    index = km.retrieval.EmbeddingIndex(8, k=4, chunk_size=64, shards=2)
    index.add(g, ids, names=[f"item{i}" for i in ids])
    index.remove(ids[:3])
    index.threshold = 0.25
    inputs = keras.Input((8,))
    model = keras.Model(inputs, index(inputs))
    queries = RNG.normal(size=(6, 8)).astype("float32")
    expected = index.search(queries, 4)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    again = loaded.layers[-1]
    assert isinstance(again, km.retrieval.EmbeddingIndex)
    assert again.size == 147 and again.threshold == 0.25 and again.shards == 2
    assert again.names == index.names
    found, scores = again.search(queries, 4)
    np.testing.assert_array_equal(found, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=0, atol=0)
    # The layer inside the model (compiled predict) gives the same results.
    out_ids, out_scores = loaded.predict(queries, verbose=0)
    np.testing.assert_array_equal(out_ids, expected[0])
    np.testing.assert_allclose(out_scores, expected[1], rtol=0, atol=1e-6)
    keras.saving.save_model(index, tmp_path / "alone.keras")
    alone = keras.saving.load_model(tmp_path / "alone.keras", safe_mode=True)
    np.testing.assert_array_equal(alone.search(queries, 4)[0], expected[0])
