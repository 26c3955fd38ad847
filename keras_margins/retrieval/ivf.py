"""``IVFIndex``: approximate search with an inverted file (coarse k-means lists), in keras.ops."""

import math

import keras
import numpy as np
from keras import ops

from keras_margins.retrieval import kernels
from keras_margins.retrieval.gallery import GalleryIndex, check_positive_int, compile_function

#: Gathered rows of one chunk of queries are kept under this many bytes: small chunks stay
#: in the CPU caches between the gather and the product.
GATHER_BYTES = 2 * 2**20
#: Rows assigned to lists per compiled call of ``add``.
ASSIGN_BATCH = 16384
#: Gallery rows sampled (as stand-in queries) to size the default scan budget.
BUDGET_SAMPLE = 2048
#: ``search`` reads a list this many rows at a time (rounded to whole blocks; one slice of
#: the store, see ``kernels.ivf_scan``) ...
SCAN_ROWS = 128
#: ... and scores them against this many of the queries probing that list at once.
SCAN_GROUP = 4


class ScanPlan:
    """Host-side plan of ``kernels.ivf_scan`` (runs of each list), rebuilt after every edit;
    a plain object, out of Keras' attribute tracking."""

    def __init__(self):
        self.arrays = None
        self.tensors = None
        self.longest = 0


@keras.saving.register_keras_serializable(package="keras_margins")
class IVFIndex(GalleryIndex):
    """Inverted-file search: the gallery is split into lists by a coarse k-means quantizer and
    a query scans only the lists of its ``nprobe`` nearest centroids (Jégou, Douze & Schmid,
    "Product Quantization for Nearest Neighbor Search", TPAMI 2011, Sec. IV-A; without the
    product quantizer: the rows are stored as they are, faiss' ``IndexIVFFlat``).

    Everything has a static shape, so the search compiles with XLA (JAX; on TensorFlow it
    runs as a graph, whose gather is faster on CPU) and exports with stock TensorFlow ops:
    each list is a chain of blocks of ``block_size`` rows (its last block padded with id -1)
    in one (blocks × block_size, D) store, and a (lists × blocks per list) table names each
    list's blocks. A query ranks the centroids, walks its
    ``nprobe`` lists' blocks in that order and scores them. On TensorFlow (``search`` and the
    exported ``search``/``match``) a chunk of queries scans as many blocks as the most any of
    them needs: every probed list in full, as ``IndexIVFFlat`` does. Under XLA (JAX, and the
    layer called inside a model) the number of blocks B is static, like faiss' ``max_codes``:
    the most blocks any of 2048 sampled gallery rows would need as a query (a query from the
    gallery's distribution scans all its probed lists, while the work is not padded up to the
    largest lists), never more than the ``nprobe`` largest lists hold; a query whose probed
    lists hold more scans its last-ranked lists in part. ``max_scan_blocks`` sets B on every
    backend.

    The centroids are trained by k-means (Lloyd's iterations; spherical for cosine) on a
    sample, by ``train`` or on the first ``add``; rows are assigned to the centroid with the
    largest inner product, the score the queries probe with. ``add``, ``remove``,
    ``search``, ``calibrate``, ``match``, saving and export work as for
    ``km.retrieval.EmbeddingIndex``; a query whose probed lists hold fewer than ``k`` rows
    gets id -1 and score -inf in the missing places.

    Args:
        dim: embedding size D.
        num_lists: number of coarse centroids / lists (default 256).
        nprobe: lists scanned per query (default 8).
        metric: ``"cosine"`` (default) or ``"inner_product"``.
        k: results of ``call`` and default of ``search`` (default 1).
        block_size: rows per block (default 32).
        max_scan_blocks: blocks scanned per query (default None: all blocks of the probed
            lists on TensorFlow, a budget sized on a sample of the gallery under XLA; see
            above).
        capacity: rows to allocate up front (default None: grows as needed).
        names: optional dict id -> name.
        **kwargs: ``keras.layers.Layer`` arguments; unknown ones raise ``TypeError``.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> rng = np.random.default_rng(0)
    >>> gallery = rng.normal(size=(2000, 8)).astype("float32")
    >>> index = km.retrieval.IVFIndex(8, num_lists=16, nprobe=16)   # probes every list: exact
    >>> index.add(gallery, np.arange(2000))
    2000
    >>> exact = km.retrieval.EmbeddingIndex(8, chunk_size=512)
    >>> _ = exact.add(gallery, np.arange(2000))
    >>> bool((index.search(gallery[:5], k=3)[0] == exact.search(gallery[:5], k=3)[0]).all())
    True
    """

    def __init__(self, dim, num_lists=256, nprobe=8, metric="cosine", k=1, block_size=32,
                 max_scan_blocks=None, capacity=None, names=None, **kwargs):
        super().__init__(dim, metric=metric, k=k, names=names, **kwargs)
        self.num_lists = check_positive_int(num_lists, "num_lists")
        self.probes = None
        self.largest_lists_blocks = self.sampled_scan_blocks = 1
        self.nprobe = nprobe
        self.block_size = check_positive_int(block_size, "block_size")
        self.max_scan_blocks = (None if max_scan_blocks is None
                                else check_positive_int(max_scan_blocks, "max_scan_blocks"))
        if capacity is not None:
            check_positive_int(capacity, "capacity")
        rows = capacity or 0
        self.num_blocks = 1 + self.num_lists + math.ceil(rows / self.block_size)
        self.table_width = max(1, math.ceil(rows / self.block_size / self.num_lists))
        self.plan = ScanPlan()
        self.allocate({})
        self.built = True

    @property
    def search_with_xla(self):
        """``search`` compiles with XLA on every backend, except the budgeted block scan
        (``max_scan_blocks``) on TensorFlow: it gathers blocks of rows, and TensorFlow's
        gather kernel copies them faster than XLA's CPU code."""
        return self.max_scan_blocks is None or keras.backend.backend() != "tensorflow"

    @property
    def nprobe(self):
        """Lists scanned per query (may be changed between searches)."""
        return self.probes

    @nprobe.setter
    def nprobe(self, value):
        value = check_positive_int(value, "nprobe")
        if value > self.num_lists:
            raise ValueError(f"`nprobe` ({value}) must be <= `num_lists` ({self.num_lists}).")
        self.probes = value
        if getattr(self, "ivf_list_blocks", None) is not None:
            self.refresh()

    # ------------------------------------------------------------------ storage
    def specs(self):
        lists, rows = self.num_lists, self.num_blocks * self.block_size
        return {
            "ivf_centroids": ((lists, self.dim), "float32", 0.0),
            "ivf_trained": ((), "int32", 0),
            "ivf_list_rows": ((lists,), "int32", 0),
            "ivf_list_blocks": ((lists,), "int32", 0),
            "ivf_table": ((lists, self.table_width), "int32", 0),
            "ivf_blocks": ((rows, self.dim), "float32", 0.0),
            "ivf_block_ids": ((rows,), "int32", -1),
        }

    def allocate(self, values):
        """Create every variable at the current sizes and assign ``values`` (NumPy arrays)."""
        self.replace_variables(self.specs())
        for name, value in values.items():
            getattr(self, name).assign(value)

    def host(self, name):
        return np.asarray(ops.convert_to_numpy(getattr(self, name).value))

    @property
    def capacity(self):
        """Rows of the block store (block 0 stays empty)."""
        return (self.num_blocks - 1) * self.block_size

    @property
    def trained(self):
        return bool(self.host("ivf_trained"))

    def all_ids(self):
        ids = self.host("ivf_block_ids")
        return ids[ids >= 0]

    def list_sizes(self):
        """Rows in each list (int64 NumPy array)."""
        return self.host("ivf_list_rows").astype("int64")

    # ------------------------------------------------------------------ training
    def train(self, sample, iterations=20, seed=0, max_sample=None):
        """Train the coarse centroids by k-means on ``sample`` (N, D), N >= num_lists.

        Lloyd's iterations from ``num_lists`` distinct sample rows (seeded); a centroid left
        without rows is moved to a random sample row. Cosine indexes keep unit centroids
        (spherical k-means: Dhillon & Modha, "Concept Decompositions for Large Sparse Text
        Data using Clustering", Machine Learning 2001); inner-product ones are trained with
        squared distances. At most ``max_sample`` rows are used (default 256 per list).
        Only an empty index can be trained. Returns the centroids (L, D).
        """
        if self.size:
            raise ValueError("`sample`: the index already holds items; train an empty index.")
        x = self.check_embeddings(sample, "sample")
        iterations = check_positive_int(iterations, "iterations")
        if len(x) < self.num_lists:
            raise ValueError(
                f"`sample` must hold at least num_lists={self.num_lists} rows; got {len(x)}."
            )
        rng = np.random.default_rng(seed)
        limit = 256 * self.num_lists if max_sample is None else check_positive_int(max_sample, "max_sample")
        if len(x) > limit:
            x = x[rng.choice(len(x), limit, replace=False)]
        centroids = x[rng.choice(len(x), self.num_lists, replace=False)].copy()
        chunk = min(4096, kernels.round_up(len(x), 8))
        padded = np.zeros((kernels.round_up(len(x), chunk), self.dim), "float32")
        padded[: len(x)] = x
        spherical = self.metric == "cosine"

        def step(rows, cents):
            bias = 0.0 if spherical else -0.5 * ops.sum(cents * cents, axis=1)
            return kernels.assign_sums(rows, cents, chunk, bias)

        step = compile_function(step)
        rows = ops.convert_to_tensor(padded)
        for _ in range(iterations):
            sums, counts, _ = step(rows, ops.convert_to_tensor(centroids))
            sums = np.asarray(ops.convert_to_numpy(sums), "float64")
            counts = np.asarray(ops.convert_to_numpy(counts))
            empty = counts == 0
            centroids = (sums / np.maximum(counts, 1)[:, None]).astype("float32")
            if empty.any():
                centroids[empty] = x[rng.choice(len(x), int(empty.sum()), replace=False)]
            if spherical:
                norms = np.linalg.norm(centroids, axis=1, keepdims=True)
                centroids = (centroids / np.maximum(norms, 1e-12)).astype("float32")
        self.ivf_centroids.assign(centroids)
        self.ivf_trained.assign(1)
        self.compiled.clear()
        return centroids

    def set_centroids(self, centroids):
        """Use given coarse centroids (L, D) instead of training (e.g. to share lists with
        another index); only on an empty index."""
        if self.size:
            raise ValueError("`centroids`: the index already holds items.")
        c = np.asarray(centroids, "float32")
        if c.shape != (self.num_lists, self.dim) or not np.all(np.isfinite(c)):
            raise ValueError(
                f"`centroids` must be finite with shape ({self.num_lists}, {self.dim}); got {c.shape}."
            )
        self.ivf_centroids.assign(c)
        self.ivf_trained.assign(1)
        self.compiled.clear()

    def assign_lists(self, rows):
        """The list of each row (nearest centroid by inner product), in compiled batches."""
        assign = self.compiled.get(("assign", self.num_lists), lambda: kernels.nearest_centroid)
        out = []
        centroids = self.ivf_centroids.value
        for start in range(0, len(rows), ASSIGN_BATCH):
            batch = rows[start:start + ASSIGN_BATCH]
            n = len(batch)
            padded = np.zeros((ASSIGN_BATCH if len(rows) > ASSIGN_BATCH else
                               1 << max(0, (n - 1).bit_length()), self.dim), "float32")
            padded[:n] = batch
            got = assign(ops.convert_to_tensor(padded), centroids)
            out.append(np.asarray(ops.convert_to_numpy(got))[:n])
        return np.concatenate(out).astype("int64")

    # ------------------------------------------------------------------ edits
    def insert(self, rows, ids):
        if not self.trained:
            if len(rows) < self.num_lists:
                raise ValueError(
                    f"`embeddings`: the index is not trained and {len(rows)} rows cannot train "
                    f"num_lists={self.num_lists} centroids; call train(sample) first."
                )
            self.train(rows)
        lists = self.assign_lists(rows)
        size = self.size
        R = self.block_size
        list_rows = self.host("ivf_list_rows").astype("int64")
        list_blocks = self.host("ivf_list_blocks").astype("int64")
        table = self.host("ivf_table").astype("int64")
        counts = np.bincount(lists, minlength=self.num_lists)
        new_rows = list_rows + counts
        need_blocks = -(-new_rows // R)
        extra = int(np.sum(need_blocks - list_blocks))
        used = set(table[table > 0].tolist())
        free = [b for b in range(1, self.num_blocks) if b not in used]
        values = {}
        if extra > len(free) or need_blocks.max() > self.table_width:
            values = {name: self.host(name) for name in self.specs()}
            if extra > len(free):
                self.num_blocks = max(self.num_blocks + extra - len(free),
                                      math.ceil(1.5 * self.num_blocks))
                free += list(range(len(values["ivf_block_ids"]) // R, self.num_blocks))
            if need_blocks.max() > self.table_width:
                self.table_width = max(int(need_blocks.max()), math.ceil(1.5 * self.table_width))
            values["ivf_blocks"] = _resized(values["ivf_blocks"], self.num_blocks * R, 0.0)
            values["ivf_block_ids"] = _resized(values["ivf_block_ids"], self.num_blocks * R, -1)
            table = _resized(table.T, self.table_width, 0).T
        free = iter(free)
        for lst in np.flatnonzero(need_blocks > list_blocks):
            for b in range(list_blocks[lst], need_blocks[lst]):
                table[lst, b] = next(free)
        # Row of each new item: its list's next position.
        order = np.argsort(lists, kind="stable")
        sorted_lists = lists[order]
        first = np.searchsorted(sorted_lists, sorted_lists, side="left")
        position = list_rows[sorted_lists] + (np.arange(len(order)) - first)
        block = table[sorted_lists, position // R]
        where = np.empty(len(order), "int64")
        where[order] = block * R + position % R
        if values:
            values["ivf_blocks"][where] = rows
            values["ivf_block_ids"][where] = ids
            values["ivf_table"] = table.astype("int32")
            values["ivf_list_rows"] = new_rows.astype("int32")
            values["ivf_list_blocks"] = need_blocks.astype("int32")
            self.allocate(values)
        else:
            self.scatter_rows(where, rows, ids)
            self.ivf_table.assign(table.astype("int32"))
            self.ivf_list_rows.assign(new_rows.astype("int32"))
            self.ivf_list_blocks.assign(need_blocks.astype("int32"))
        self.index_size.assign(size + len(ids))
        self.refresh()

    def scatter_rows(self, where, rows, ids):
        index = ops.convert_to_tensor(np.asarray(where, "int32")[:, None])
        self.ivf_blocks.assign(ops.scatter_update(self.ivf_blocks.value, index, rows))
        self.ivf_block_ids.assign(ops.scatter_update(self.ivf_block_ids.value, index,
                                                     np.asarray(ids, "int32")))

    def delete(self, ids):
        """Swap-remove inside each list: its last rows fill the holes; emptied blocks are
        released."""
        R = self.block_size
        block_ids = self.host("ivf_block_ids")
        table = self.host("ivf_table").astype("int64")
        list_rows = self.host("ivf_list_rows").astype("int64")
        # Owner list and place in it of every block.
        owner = np.full(self.num_blocks, -1)
        place = np.zeros(self.num_blocks, "int64")
        lists, places = np.nonzero(table > 0)
        owner[table[lists, places]] = lists
        place[table[lists, places]] = places
        rows = np.flatnonzero(np.isin(block_ids, ids))
        row_list = owner[rows // R]
        row_pos = place[rows // R] * R + rows % R
        src, dst, clear = [], [], []
        for lst in np.unique(row_list):
            removed = row_pos[row_list == lst]
            count = list_rows[lst]
            kept = count - len(removed)
            holes = np.sort(removed[removed < kept])
            tail = np.setdiff1d(np.arange(kept, count), removed)
            src += (table[lst, tail // R] * R + tail % R).tolist()
            dst += (table[lst, holes // R] * R + holes % R).tolist()
            gone = np.arange(kept, count)  # cleared after the moves
            clear += (table[lst, gone // R] * R + gone % R).tolist()
            list_rows[lst] = kept
            table[lst, -(-kept // R):] = 0
        if src:
            moved = ops.take(self.ivf_blocks.value, ops.convert_to_tensor(np.asarray(src, "int32")), axis=0)
            self.scatter_rows(dst, moved, block_ids[src])
        self.scatter_rows(clear, np.zeros((len(clear), self.dim), "float32"),
                          np.full(len(clear), -1, "int32"))
        self.ivf_table.assign(table.astype("int32"))
        self.ivf_list_rows.assign(list_rows.astype("int32"))
        self.ivf_list_blocks.assign((-(-list_rows // R)).astype("int32"))
        self.index_size.assign(self.size - len(rows))
        self.refresh()

    def load_own_variables(self, store):
        # The block store and the table grow with the gallery: take the saved sizes first.
        names = list(self.specs())
        self.table_width = int(store[str(names.index("ivf_table"))].shape[1])
        self.num_blocks = int(store[str(names.index("ivf_blocks"))].shape[0]) // self.block_size
        self.allocate({})
        super().load_own_variables(store)
        self.refresh()

    # ------------------------------------------------------------------ search
    def scan_blocks(self):
        """Blocks scanned per query (a static shape): ``max_scan_blocks`` when given, else
        the most blocks any of up to ``BUDGET_SAMPLE`` sampled gallery rows would need as a
        query; never more than the ``nprobe`` largest lists hold. Kept on the host by every
        edit, so that graphs can use it."""
        if self.max_scan_blocks is not None:
            return min(self.max_scan_blocks, self.largest_lists_blocks)
        return self.sampled_scan_blocks

    def refresh(self):
        """Recompute the scan budgets from the lists (after every edit or nprobe change)."""
        blocks = self.host("ivf_list_blocks").astype("int64")
        rows_in_lists = self.host("ivf_list_rows")
        self.plan.arrays = kernels.scan_runs(self.host("ivf_table"), blocks, rows_in_lists,
                                             self.block_size, self.window() // self.block_size)
        self.plan.tensors = None
        self.plan.longest = int(rows_in_lists.max()) if rows_in_lists.size else 0
        self.largest_lists_blocks = max(1, int(np.sort(blocks)[::-1][: self.nprobe].sum()))
        self.sampled_scan_blocks = self.largest_lists_blocks
        ids = self.host("ivf_block_ids")
        used = np.flatnonzero(ids >= 0)
        if not used.size:
            return
        rng = np.random.default_rng(0)
        chosen = np.sort(rng.choice(used, min(BUDGET_SAMPLE, used.size), replace=False))
        rows = np.asarray(ops.convert_to_numpy(
            ops.take(self.ivf_blocks.value, ops.convert_to_tensor(chosen.astype("int32")), axis=0)))
        scores = rows @ self.host("ivf_centroids").T
        probed = np.argpartition(-scores, self.nprobe - 1, axis=1)[:, : self.nprobe]
        need = int(blocks[probed].sum(axis=1).max())
        self.sampled_scan_blocks = max(1, min(need, self.largest_lists_blocks))

    def query_chunk(self, budget, queries=None):
        per_query = budget * self.block_size * self.dim * 4
        chunk = 1 << max(0, int(math.floor(math.log2(max(1, GATHER_BYTES // per_query)))))
        return chunk if queries is None else min(chunk, queries)

    def kernel(self, queries, k, budget, chunk, state):
        return kernels.ivf_search(queries, *state, k, self.nprobe, budget, self.block_size, chunk)

    def state_values(self):
        return (self.ivf_centroids.value, self.ivf_list_blocks.value, self.ivf_table.value,
                self.ivf_blocks.value, self.ivf_block_ids.value)

    def dynamic_budget(self):
        """Scan what each chunk of queries needs (a TensorFlow graph without XLA can), unless
        ``max_scan_blocks`` bounds the work."""
        return keras.backend.backend() == "tensorflow" and self.max_scan_blocks is None

    def graph_search(self, queries, k):
        # Inside a model the search may be compiled with XLA: the static budget.
        budget = self.scan_blocks()
        return self.kernel(queries, k, budget, self.query_chunk(budget), self.state_values())

    def serving_search(self, queries, k):
        budget = self.scan_blocks()
        return self.kernel(queries, k, None if self.dynamic_budget() else budget,
                           self.query_chunk(budget), self.state_values())

    def window(self):
        """Rows per slice of ``search``'s scan: ``SCAN_ROWS`` rounded to whole blocks, within
        the store."""
        blocks = max(1, SCAN_ROWS // self.block_size)
        return self.block_size * min(blocks, self.num_blocks)

    def search_function(self, k):
        if self.max_scan_blocks is None:
            return self.scan_function(k)
        budget = self.scan_blocks()
        scanned = None if self.dynamic_budget() else budget

        def fn(queries, *state):
            chunk = self.query_chunk(budget, queries.shape[0])
            return self.kernel(queries, k, scanned, chunk, state)

        return ("ivf", k, budget, self.nprobe, scanned is None), fn, self.state_values()

    def scan_function(self, k):
        """``search``'s default: every probed list read once per batch, in full
        (``kernels.ivf_scan``)."""
        if self.plan.arrays is None:
            self.refresh()
        window = self.window()
        group = SCAN_GROUP
        width = kernels.round_up(2 * window + self.plan.longest, 32)
        if self.plan.tensors is None:
            self.plan.tensors = tuple(ops.convert_to_tensor(a) for a in self.plan.arrays)
        runs = self.plan.arrays[0].shape[1]

        def fn(queries, *state):
            return kernels.ivf_scan(queries, *state, k=k, nprobe=self.nprobe,
                                    rows_per_block=self.block_size, window=window,
                                    group=group, width=width)

        state = (self.ivf_centroids.value, self.ivf_table.value, self.ivf_blocks.value,
                 self.ivf_block_ids.value) + self.plan.tensors
        return ("ivf-scan", k, self.nprobe, window, group, width, runs), fn, state

    def search(self, queries, k=None):
        if not self.trained:
            raise ValueError("`queries`: the index is not trained (add items or call train).")
        return super().search(queries, k)

    def get_config(self):
        config = super().get_config()
        config.update(num_lists=self.num_lists, nprobe=self.nprobe, block_size=self.block_size,
                      max_scan_blocks=self.max_scan_blocks, capacity=self.capacity)
        return config


def _resized(array, rows, fill):
    """``array`` with its first axis cut or padded (with ``fill``) to ``rows``."""
    if len(array) >= rows:
        return array[:rows].copy()
    pad = np.full((rows - len(array),) + array.shape[1:], fill, dtype=array.dtype)
    return np.concatenate([array, pad])
