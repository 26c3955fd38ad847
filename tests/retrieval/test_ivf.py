"""km.retrieval.IVFIndex against NumPy references written here: an inverted-file search over
the index's own centroids, one Lloyd step, full probing = exact search."""

import keras
import numpy as np
import pytest

import keras_margins as km
from keras_margins.retrieval import kernels

D, L = 8, 12


def clustered(n, seed=0, clusters=30):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, D))
    x = centers[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, D))
    return x.astype("float32"), rng.permutation(10**6)[:n]


def unit(x):
    x = np.asarray(x, "float64")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ivf_reference(queries, gallery, ids, centroids, nprobe, k):
    """Loop reference: rows go to the centroid of largest inner product; a query scores the
    rows of its nprobe best centroids and keeps the k best (ids, scores)."""
    g, q, c = unit(gallery), unit(queries), np.asarray(centroids, "float64")
    owner = [int(np.argmax([np.dot(row, cent) for cent in c])) for row in g]
    out_ids, out_scores = [], []
    for row in q:
        probed = np.argsort(-(c @ row))[:nprobe]
        candidates = [j for j in range(len(g)) if owner[j] in probed]
        scored = sorted(((float(np.dot(row, g[j])), int(ids[j])) for j in candidates), reverse=True)
        scored = scored[:k] + [(-np.inf, -1)] * max(0, k - len(scored))
        out_scores.append([s for s, _ in scored])
        out_ids.append([i for _, i in scored])
    return np.array(out_ids), np.array(out_scores)


@pytest.fixture(scope="module")
def data():
    x, ids = clustered(900)
    queries = clustered(25, seed=5)[0]
    return x, ids, queries


@pytest.mark.parametrize("nprobe", [1, 3, L])
def test_search_equals_the_inverted_file_reference(data, nprobe):
    x, ids, queries = data
    # Every probed row is scanned: by default on TensorFlow (each chunk of queries scans what
    # it needs), with a budget as large as the nprobe largest lists under XLA (JAX).
    budget = {} if keras.backend.backend() == "tensorflow" else {"max_scan_blocks": 10**6}
    index = km.retrieval.IVFIndex(D, num_lists=L, nprobe=nprobe, block_size=8, **budget)
    index.add(x[:400], ids[:400])   # trains on these 400, then grows its block store
    index.add(x[400:], ids[400:])
    centroids = keras.ops.convert_to_numpy(index.ivf_centroids.value)
    found, scores = index.search(queries, 10)
    ref_ids, ref_scores = ivf_reference(queries, x, ids, centroids, nprobe, 10)
    finite = np.isfinite(ref_scores)
    np.testing.assert_allclose(scores[finite], ref_scores[finite], rtol=0, atol=1e-5)
    assert np.all(found[~finite] == -1) and np.all(np.isneginf(scores[~finite]))
    assert np.mean(found == ref_ids) > 0.99  # ties aside
    if nprobe == L:  # every list probed: the exact answer
        exact = km.retrieval.EmbeddingIndex(D, chunk_size=256)
        exact.add(x, ids)
        np.testing.assert_allclose(scores, exact.search(queries, 10)[1], rtol=0, atol=1e-5)


def test_lists_partition_the_gallery_and_survive_removal(data):
    x, ids, queries = data
    index = km.retrieval.IVFIndex(D, num_lists=L, nprobe=L, block_size=8)
    index.add(x, ids)
    sizes = index.list_sizes()
    assert sizes.sum() == len(x) == index.size
    assert index.scan_blocks() == int(np.sum(-(-sizes // 8)))  # every block of every list
    gone = ids[::7]
    index.remove(gone)
    keep = ~np.isin(ids, gone)
    assert sorted(index.ids().tolist()) == sorted(ids[keep].tolist())
    assert index.list_sizes().sum() == keep.sum()
    exact = km.retrieval.EmbeddingIndex(D, chunk_size=256)
    exact.add(x[keep], ids[keep])
    np.testing.assert_allclose(index.search(queries, 5)[1], exact.search(queries, 5)[1],
                               rtol=0, atol=1e-5)


def test_one_lloyd_step_matches_numpy():
    rng = np.random.default_rng(1)
    sample = rng.normal(size=(64, D)).astype("float32")
    cents = rng.normal(size=(5, D)).astype("float32")
    sums, counts, total = kernels.assign_sums(keras.ops.convert_to_tensor(sample),
                                              keras.ops.convert_to_tensor(cents), 16)
    ref_sums, ref_counts, ref_total = np.zeros((5, D)), np.zeros(5), 0.0
    for row in sample.astype("float64"):
        scores = [float(np.dot(row, c)) for c in cents]
        j = int(np.argmax(scores))
        ref_sums[j] += row
        ref_counts[j] += 1
        ref_total += scores[j]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sums), ref_sums, atol=1e-5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(counts), ref_counts)
    assert abs(float(keras.ops.convert_to_numpy(total)) - ref_total) < 1e-3


def test_training_reduces_the_quantization_error_and_is_seeded(data):
    x = unit(data[0]).astype("float32")
    a = km.retrieval.IVFIndex(D, num_lists=L).train(x, iterations=1, seed=3)
    b = km.retrieval.IVFIndex(D, num_lists=L).train(x, iterations=10, seed=3)
    again = km.retrieval.IVFIndex(D, num_lists=L).train(x, iterations=10, seed=3)
    np.testing.assert_array_equal(b, again)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)  # spherical
    assert (x @ b.T).max(axis=1).mean() > (x @ a.T).max(axis=1).mean()


def test_default_budget_covers_every_gallery_row_as_a_query(data):
    x, ids, _ = data  # 900 rows: the budget's sample is the whole gallery
    index = km.retrieval.IVFIndex(D, num_lists=L, nprobe=3, block_size=8)
    index.add(x, ids)
    centroids = keras.ops.convert_to_numpy(index.ivf_centroids.value)
    blocks = -(-index.list_sizes() // 8)
    need = [sum(blocks[j] for j in np.argsort(-(centroids @ row))[:3]) for row in unit(x)]
    assert index.scan_blocks() == max(need) <= np.sort(blocks)[::-1][:3].sum()
    index.nprobe = 5  # the budget follows nprobe
    need = [sum(blocks[j] for j in np.argsort(-(centroids @ row))[:5]) for row in unit(x)]
    assert index.scan_blocks() == max(need)


def test_scan_budget_bounds_the_rows_scored(data):
    x, ids, queries = data
    index = km.retrieval.IVFIndex(D, num_lists=L, nprobe=4, block_size=8, max_scan_blocks=2)
    index.add(x, ids)
    found, scores = index.search(queries, 16)  # 2 blocks of 8 rows: exactly 16 candidates
    full = km.retrieval.IVFIndex(D, num_lists=L, nprobe=4, block_size=8)
    full.add(x, ids)
    # The capped search returns scores no better than the uncapped one, rank by rank.
    assert np.all(scores <= full.search(queries, 16)[1] + 1e-6)


def test_bad_input_and_round_trip(tmp_path, data):
    x, ids, queries = data
    with pytest.raises(ValueError, match="`nprobe`"):
        km.retrieval.IVFIndex(D, num_lists=4, nprobe=5)
    with pytest.raises(TypeError, match="nprobe"):
        km.retrieval.IVFIndex(D, nprobes=5)
    index = km.retrieval.IVFIndex(D, num_lists=L, nprobe=3, block_size=8)
    with pytest.raises(ValueError, match="`queries`"):
        index.search(queries, 1)  # not trained
    with pytest.raises(ValueError, match="`embeddings`"):
        index.add(x[:5], ids[:5])  # too few rows to train 12 lists
    index.add(x, ids)
    before = (index.size, index.ids().tolist())
    for call, name in ((lambda: index.add(x[:1], ids[:1]), "ids"),
                       (lambda: index.remove([-5]), "ids"),
                       (lambda: index.search(queries, 0), "k"),
                       (lambda: index.add(x[:1, :3], [1]), "embeddings"),
                       (lambda: index.train(x), "sample")):
        with pytest.raises(ValueError, match=f"`{name}`"):
            call()
    assert (index.size, index.ids().tolist()) == before
    expected = index.search(queries, 5)
    keras.saving.save_model(index, tmp_path / "ivf.keras")
    loaded = keras.saving.load_model(tmp_path / "ivf.keras", safe_mode=True)
    assert isinstance(loaded, km.retrieval.IVFIndex) and loaded.nprobe == 3
    np.testing.assert_array_equal(loaded.search(queries, 5)[0], expected[0])
    np.testing.assert_allclose(loaded.search(queries, 5)[1], expected[1], rtol=0, atol=0)
