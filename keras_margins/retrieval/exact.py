"""``EmbeddingIndex``: exact search of a gallery held as non-trainable Keras state."""

import math

import keras
import numpy as np
from keras import ops

from keras_margins.retrieval import kernels, sharding
from keras_margins.retrieval.gallery import GalleryIndex, check_positive_int


@keras.saving.register_keras_serializable(package="keras_margins")
class EmbeddingIndex(GalleryIndex):
    """Exact cosine / inner-product search of a gallery of embeddings with integer ids.

    The gallery — embeddings (G, D), int32 ids, its size and a match threshold — is the
    layer's non-trainable state: it is saved in ``.keras`` files (``safe_mode=True`` loads
    it), exported with the model by ``km.retrieval.export_search_model`` and split over
    devices under ``km.retrieval.gallery_parallel()``. ``add`` / ``remove`` edit it on the
    host; ``search`` runs compiled with XLA (TensorFlow or JAX) and equals a brute-force
    top-k (ties aside) while holding at most a (queries × ``chunk_size``) block of scores:
    the gallery is scanned ``chunk_size`` rows at a time, the best ``k`` kept so far being
    merged with each chunk's best (a top-k of top-ks is the top-k), and within a chunk the
    best ``k`` are found among the ``k`` blocks of 128 scores with the largest maxima.

    Calling the layer on queries (N, D) returns ``(ids, scores)`` of the ``k`` best items
    (for use inside a model); ``calibrate`` picks a threshold for a target false-accept rate
    and ``match`` decides id-or-(-1) per query (see ``GalleryIndex``).

    Args:
        dim: embedding size D.
        metric: ``"cosine"`` (default: rows and queries are L2-normalised) or
            ``"inner_product"``.
        k: results per query of ``call`` and the default of ``search`` (default 1).
        capacity: rows to allocate up front (default None: one chunk per shard); the
            storage grows by half when ``add`` needs more (on TensorFlow, a model already
            compiled for ``predict`` must then re-trace: ``make_predict_function(force=True)``).
        chunk_size: gallery rows of each shard scored at once (default 8192).
        shards: S shards of the gallery (default None: the devices on the ``"gallery"``
            axis of the active ``km.retrieval.gallery_parallel()`` distribution, else 1).
        names: optional dict id -> name (``add(..., names=...)`` fills it).
        **kwargs: ``keras.layers.Layer`` arguments (``name``); unknown ones raise
            ``TypeError``.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> index = km.retrieval.EmbeddingIndex(dim=3, chunk_size=128)
    >>> index.add(np.eye(3), ids=[10, 11, 12], names=["a", "b", "c"])
    3
    >>> found, scores = index.search(np.array([[1.0, 0.2, 0.0]]), k=2)
    >>> found.tolist(), np.round(scores.astype(float), 3).tolist(), index.name_of(found[0])
    ([[10, 11]], [[0.981, 0.196]], ['a', 'b'])
    """

    def __init__(self, dim, metric="cosine", k=1, capacity=None, chunk_size=8192, shards=None,
                 names=None, **kwargs):
        super().__init__(dim, metric=metric, k=k, names=names, **kwargs)
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.shards = sharding.active_shards() if shards is None else check_positive_int(shards, "shards")
        if capacity is not None:
            check_positive_int(capacity, "capacity")
        self.rows_per_shard = self.round_rows(math.ceil((capacity or 1) / self.shards))
        self.allocate()
        self.built = True

    # ------------------------------------------------------------------ storage
    @property
    def capacity(self):
        """Rows allocated (shards × rows per shard)."""
        return self.shards * self.rows_per_shard

    def round_rows(self, rows):
        return kernels.round_up(max(rows, 1), self.chunk_size)

    def allocate(self):
        self.replace_variables({
            "index_embeddings": ((self.capacity, self.dim), "float32", 0.0),
            "index_ids": ((self.capacity,), "int32", -1),
        })

    def slots(self, items, rows_per_shard=None):
        """Storage rows of gallery items ``items`` (item n -> shard n % S, row n // S)."""
        items = np.asarray(items, dtype="int64")
        per = self.rows_per_shard if rows_per_shard is None else rows_per_shard
        return (items % self.shards) * per + items // self.shards

    def all_ids(self):
        ids = np.asarray(ops.convert_to_numpy(self.index_ids.value))
        return ids[self.slots(np.arange(self.size))]

    def grow(self, needed_items):
        """Re-allocate so that ``needed_items`` fit (rows per shard x1.5 at least)."""
        per = self.round_rows(max(math.ceil(needed_items / self.shards),
                                  math.ceil(1.5 * self.rows_per_shard)))
        size = self.size
        old = self.slots(np.arange(size))
        embeddings = np.asarray(ops.convert_to_numpy(self.index_embeddings.value))[old]
        ids = np.asarray(ops.convert_to_numpy(self.index_ids.value))[old]
        self.rows_per_shard = per
        self.allocate()
        if size:
            self.write(np.arange(size), embeddings, ids)

    def write(self, items, rows, ids):
        """Store ``rows`` / ``ids`` at gallery items ``items`` (no size change)."""
        where = ops.convert_to_tensor(self.slots(items)[:, None].astype("int32"))
        self.index_embeddings.assign(ops.scatter_update(self.index_embeddings.value, where, rows))
        self.index_ids.assign(ops.scatter_update(self.index_ids.value, where, ids.astype("int32")))

    def insert(self, rows, ids):
        size = self.size
        if math.ceil((size + len(ids)) / self.shards) > self.rows_per_shard:
            self.grow(size + len(ids))
        self.write(np.arange(size, size + len(ids)), rows, ids)
        self.index_size.assign(size + len(ids))

    def delete(self, ids):
        """Fill the holes below the new size with the last items (swap-remove), clear the tail."""
        size = self.size
        current = self.all_ids()
        removed = np.flatnonzero(np.isin(current, ids))
        new_size = size - len(removed)
        holes = removed[removed < new_size]
        tail = np.setdiff1d(np.arange(new_size, size), removed)
        if holes.size:
            embeddings = ops.take(self.index_embeddings.value,
                                  ops.convert_to_tensor(self.slots(tail).astype("int32")), axis=0)
            self.write(holes, embeddings, current[tail])
        cleared = np.arange(new_size, size)
        self.write(cleared, np.zeros((len(cleared), self.dim), "float32"),
                   np.full(len(cleared), -1, "int32"))
        self.index_size.assign(new_size)

    # ------------------------------------------------------------------ search
    def graph_search(self, queries, k):
        return kernels.exact_search(
            queries, self.index_embeddings.value, self.index_ids.value, self.index_size.value,
            k, self.chunk_size, self.shards, sharding.shard_constraint(self.shards),
        )

    def search_function(self, k):
        constrain = sharding.shard_constraint(self.shards)
        chunk, shards = self.chunk_size, self.shards

        def fn(queries, embeddings, ids, size):
            return kernels.exact_search(queries, embeddings, ids, size, k, chunk, shards, constrain)

        args = (self.index_embeddings.value, self.index_ids.value, self.index_size.value)
        return ("exact", k, constrain is not None), fn, args

    def get_config(self):
        config = super().get_config()
        config.update(capacity=self.capacity, chunk_size=self.chunk_size, shards=self.shards)
        return config
