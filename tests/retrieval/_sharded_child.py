"""Child process of test_sharded.py: 8 simulated CPU devices, JAX backend.

Prints one line ``RESULT <json>``: an EmbeddingIndex built under
``km.retrieval.gallery_parallel()`` (8 shards), its search compared with a NumPy brute force,
where each device's piece of the gallery lives, and the collectives of the compiled search.
"""

import json
import os
import re

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_margins as km  # noqa: E402

G, D, Q, K = 1000, 16, 9, 12
rng = np.random.default_rng(0)
gallery = rng.normal(size=(G, D)).astype("float32")
ids = rng.permutation(10**6)[:G]
queries = rng.normal(size=(Q, D)).astype("float32")


def brute_force(keep):
    g = gallery[keep] / np.linalg.norm(gallery[keep], axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = q.astype("float64") @ g.T.astype("float64")
    order = np.argsort(-s, axis=1)[:, :K]
    return ids[keep][order], np.take_along_axis(s, order, 1)


with km.retrieval.gallery_parallel().scope():
    index = km.retrieval.EmbeddingIndex(D, chunk_size=32)
    index.add(gallery[:300], ids[:300])
    index.add(gallery[300:], ids[300:])  # grows inside the scope: new variables sharded too
    found, scores = index.search(queries, K)
    ref_ids, ref_scores = brute_force(np.ones(G, bool))
    shards = [list(s.data.shape) for s in index.index_embeddings.value.addressable_shards]
    devices = sorted(str(s.device) for s in index.index_embeddings.value.addressable_shards)
    id_shards = [list(s.data.shape) for s in index.index_ids.value.addressable_shards]
    # Collectives of the compiled search: only the k candidates per shard may move.
    key, fn, args = index.search_function(K)
    q = keras.ops.convert_to_tensor(np.zeros((16, D), "float32"))
    hlo = jax.jit(fn).lower(q, *args).compile().as_text()
    moved = []
    for line in hlo.splitlines():
        if re.search(r"\b(all-gather|all-to-all|collective-permute|all-reduce)\(", line):
            dims = re.findall(r"\[([0-9,]*)\]", line.split("=")[1] if "=" in line else line)
            sizes = [int(np.prod([int(v) for v in d.split(",") if v])) if d else 1 for d in dims]
            moved.append(max(sizes) if sizes else 0)
    gone = ids[::5]
    index.remove(gone)
    keep = ~np.isin(ids, gone)
    after_ids, after_scores = index.search(queries, K)
    ref_after = brute_force(keep)

result = {
    "devices": len(jax.devices()),
    "shards": index.shards,
    "capacity": index.capacity,
    "embedding_shards": shards,
    "id_shards": id_shards,
    "shard_devices": devices,
    "ids_equal": float(np.mean(found == ref_ids)),
    "score_err": float(np.max(np.abs(scores - ref_scores))),
    "after_ids_equal": float(np.mean(after_ids == ref_after[0])),
    "after_score_err": float(np.max(np.abs(after_scores - ref_after[1]))),
    "largest_collective": max(moved) if moved else 0,
    "collectives": len(moved),
}
print("RESULT " + json.dumps(result))
