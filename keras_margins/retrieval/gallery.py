"""What every index shares: the gallery's ids and names, input checks, compiled search on the
host, calibration of a match threshold and the match decision.

An index is a Keras layer whose state (gallery rows, ids, size, threshold) lives in
non-trainable variables, so it is saved with ``.keras`` files, placed on devices by
``keras.distribution`` and exported with the model. Its variables are created in
``__init__`` at a capacity and replaced by larger ones when ``add`` needs more rows.
"""

import dataclasses
import math

import keras
import numpy as np
from keras import ops

from keras_margins._arguments import reject_unknown
from keras_margins.metrics import open_set

#: ``keras.layers.Layer`` arguments an index accepts besides its own.
LAYER_ARGUMENTS = ("name", "dtype", "trainable")
METRICS = ("cosine", "inner_product")
#: Largest id (ids are int32; -1 means "no match").
MAX_ID = 2**31 - 2
#: Queries searched per compiled call; a smaller last batch is padded to a power of two, so
#: only a few shapes are ever compiled.
QUERY_BATCH = 256


def compile_function(fn, xla=True):
    """``fn`` compiled with XLA on the running backend (JAX always; TensorFlow with ``xla``,
    else traced into a TensorFlow graph); as is on other backends."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=bool(xla))
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


class FunctionCache:
    """Compiled functions by key, kept out of Keras' and TensorFlow's attribute tracking (a
    dict attribute of a layer would be tracked and saved with the SavedModel)."""

    def __init__(self):
        self.functions = {}

    def get(self, key, make, xla=True):
        """The function under ``key``, compiled from ``make()`` on first use."""
        if key not in self.functions:
            self.functions[key] = compile_function(make(), xla)
        return self.functions[key]

    def clear(self):
        self.functions = {}


def check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A calibrated match threshold and what it achieves on the calibration searches.

    Attributes:
        threshold: accept the best gallery entry when its score is >= this.
        target_far: the false-accept rate asked for.
        far: false-accept rate on the calibration searches (<= ``target_far``).
        tar: true-accept rate (mated searches accepted with the right id).
        far_interval, tar_interval: bootstrap percentile intervals ``(low, high)`` of the
            rates this threshold has on resampled searches (what to expect on other data
            of the same kind); ``None`` without resamples.
        threshold_interval: the interval of the threshold each resample would choose.
        confidence: coverage of the intervals.
        n_genuine, n_impostor: mated and impostor searches used.
    """

    threshold: float
    target_far: float
    far: float
    tar: float
    far_interval: tuple
    tar_interval: tuple
    threshold_interval: tuple
    confidence: float
    n_genuine: int
    n_impostor: int


class GalleryIndex(keras.layers.Layer):
    """Base of the indexes: a gallery of (embedding, id) pairs searched by inner product.

    Subclasses create their storage in ``allocate`` and implement ``insert``, ``delete``,
    ``all_ids`` and ``search_function``. See ``km.retrieval.EmbeddingIndex``.
    """

    #: Compile ``search`` with XLA on TensorFlow too (JAX always compiles with XLA).
    search_with_xla = True

    def __init__(self, dim, metric="cosine", k=1, names=None, **kwargs):
        unknown = set(kwargs) - set(LAYER_ARGUMENTS)
        reject_unknown(type(self), unknown, accepted=LAYER_ARGUMENTS)
        dtype = kwargs.pop("dtype", None)
        if dtype not in (None, "float32") and getattr(dtype, "name", dtype) != "float32":
            raise ValueError(f"`dtype` of an index must be float32; got {dtype!r}.")
        kwargs.setdefault("trainable", False)
        super().__init__(dtype="float32", **kwargs)
        self.dim = check_positive_int(dim, "dim")
        if metric not in METRICS:
            raise ValueError(f"`metric` must be one of {METRICS}; got {metric!r}.")
        self.metric = metric
        self.k = check_positive_int(k, "k")
        self.names = {}
        if names:
            if not isinstance(names, dict):
                raise ValueError(f"`names` must be a dict id -> name; got {type(names).__name__}.")
            self.names = {int(key): str(value) for key, value in names.items()}
        self.compiled = FunctionCache()
        self.index_size = None
        self.match_threshold = None

    # ------------------------------------------------------------------ state
    def create_scalars(self):
        """The size and threshold variables (called by subclasses' ``allocate``)."""
        for attribute in ("index_size", "match_threshold"):
            if getattr(self, attribute, None) is not None:
                delattr(self, attribute)
        self.index_size = self.add_weight(
            name="index_size", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self.match_threshold = self.add_weight(
            name="match_threshold", shape=(), dtype="float32",
            initializer=keras.initializers.Constant(float("nan")), trainable=False,
        )

    def replace_variables(self, specs):
        """Create (or re-create, at a new shape) variables ``{attribute: (shape, dtype,
        fill)}`` keeping ``index_size`` and ``match_threshold`` values; drops compiled
        searches, which hold the old variables."""
        size = None if self.index_size is None else self.index_size.value
        threshold = None if self.match_threshold is None else self.match_threshold.value
        for attribute in specs:
            if getattr(self, attribute, None) is not None:
                delattr(self, attribute)
        for attribute in ("index_size", "match_threshold"):
            if getattr(self, attribute, None) is not None:
                delattr(self, attribute)
        for attribute, (shape, dtype, fill) in specs.items():
            setattr(self, attribute, self.add_weight(
                name=attribute, shape=shape, dtype=dtype, trainable=False,
                initializer=keras.initializers.Constant(fill),
            ))
        self.create_scalars()
        if size is not None:
            self.index_size.assign(size)
            self.match_threshold.assign(threshold)
        self.compiled.clear()

    def build(self, input_shape=None):
        # The state is created in __init__ at the gallery's capacity (and replaced when the
        # gallery grows), so there is nothing to build from an input shape.
        return None

    @property
    def size(self):
        """Number of items in the gallery."""
        return int(ops.convert_to_numpy(self.index_size.value))

    @property
    def threshold(self):
        """The match threshold set by ``calibrate`` (or assigned), or None."""
        value = float(ops.convert_to_numpy(self.match_threshold.value))
        return None if math.isnan(value) else value

    @threshold.setter
    def threshold(self, value):
        if value is None:
            value = float("nan")
        elif isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or math.isnan(float(value)):
            raise ValueError(f"`threshold` must be a number or None; got {value!r}.")
        self.match_threshold.assign(float(value))

    def ids(self):
        """The ids of the gallery (int64 NumPy array, in storage order)."""
        return self.all_ids().astype("int64")

    def name_of(self, ids):
        """The names of ``ids`` (``None`` where an id has no name or is -1)."""
        return [self.names.get(int(i)) for i in np.asarray(ids).reshape(-1)]

    # ------------------------------------------------------------------ input checks
    def check_embeddings(self, x, name):
        x = np.asarray(x)
        if x.ndim == 1 and x.size == self.dim:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"`{name}` must have shape (N, {self.dim}) (the index's dim); got {x.shape}."
            )
        if x.shape[0] == 0:
            raise ValueError(f"`{name}` must hold at least one embedding; got shape {x.shape}.")
        if x.dtype.kind not in "fiu":
            raise ValueError(f"`{name}` must hold numbers; got dtype {x.dtype}.")
        x = x.astype("float32")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"`{name}` contains NaN or inf values.")
        if self.metric == "cosine":
            norms = np.linalg.norm(x.astype("float64"), axis=1, keepdims=True)
            if np.any(norms == 0):
                raise ValueError(f"`{name}` has an all-zero row, whose cosine is undefined.")
            x = (x / norms).astype("float32")
        return x

    def check_new_ids(self, ids, count):
        ids = np.asarray(ids)
        if ids.ndim == 0:
            ids = ids.reshape(1)
        if ids.ndim != 1 or ids.shape[0] != count:
            raise ValueError(f"`ids` must have shape ({count},) (one per embedding); got {ids.shape}.")
        if ids.dtype.kind == "f":
            if not np.all(np.isfinite(ids)) or np.any(ids != np.round(ids)):
                raise ValueError("`ids` must hold integers.")
        elif ids.dtype.kind not in "iu":
            raise ValueError(f"`ids` must hold integers; got dtype {ids.dtype}.")
        ids = ids.astype("int64")
        if np.any(ids < 0) or np.any(ids > MAX_ID):
            raise ValueError(f"`ids` must lie in [0, {MAX_ID}] (-1 means 'no match').")
        unique, counts = np.unique(ids, return_counts=True)
        if np.any(counts > 1):
            raise ValueError(f"`ids` repeats {unique[counts > 1][:5].tolist()}; ids must be unique.")
        present = np.intersect1d(ids, self.all_ids())
        if present.size:
            raise ValueError(
                f"`ids` {present[:5].tolist()} are already in the gallery; remove them first."
            )
        return ids.astype("int32")

    def check_k(self, k):
        k = self.k if k is None else k
        size = self.size
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= size:
            raise ValueError(
                f"`k` must be an integer in [1, {size}] (the gallery's size); got {k!r}."
            )
        return int(k)

    # ------------------------------------------------------------------ gallery edits
    def add(self, embeddings, ids, names=None):
        """Enrol ``embeddings`` (N, D) under ``ids`` (N,) (and optional ``names``, N strings).

        Cosine indexes store unit rows. Raises ``ValueError`` naming the argument (wrong
        dimension, NaN/inf, an all-zero row for cosine, an id repeated or already enrolled,
        a negative id), leaving the gallery unchanged. Returns the new size.
        """
        rows = self.check_embeddings(embeddings, "embeddings")
        ids = self.check_new_ids(ids, rows.shape[0])
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != len(ids):
                raise ValueError(f"`names` must hold {len(ids)} names (one per id); got {len(names)}.")
        self.insert(rows, ids)
        if names is not None:
            self.names.update(dict(zip(ids.tolist(), names)))
        return self.size

    def remove(self, ids):
        """Remove the items with these ``ids``; ``ValueError`` naming ``ids`` (gallery
        unchanged) when one is not enrolled or repeated. Returns the new size."""
        ids = np.asarray(ids)
        if ids.ndim == 0:
            ids = ids.reshape(1)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(f"`ids` must be a rank-1 array of integers; got {ids!r}.")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("`ids` repeats an id.")
        missing = np.setdiff1d(ids, self.all_ids())
        if missing.size:
            raise ValueError(f"`ids` {missing[:5].tolist()} are not in the gallery.")
        if ids.size:
            self.delete(ids.astype("int32"))
        for i in ids.tolist():
            self.names.pop(int(i), None)
        return self.size

    # ------------------------------------------------------------------ search
    def search(self, queries, k=None):
        """The ``k`` best gallery items of each query: ``(ids (Q, k) int64, scores (Q, k)
        float32)``, best first (cosine or inner product, per ``metric``).

        Compiled with XLA (TensorFlow or JAX). ``k`` defaults to the index's ``k``; it must
        lie in [1, size]. ``ValueError`` naming ``queries`` or ``k`` for bad input.
        """
        queries = self.check_embeddings(queries, "queries")
        k = self.check_k(k)
        found, scores = [], []
        for start in range(0, len(queries), QUERY_BATCH):
            batch = queries[start:start + QUERY_BATCH]
            padded = 1 << max(0, (len(batch) - 1).bit_length())
            if padded != len(batch):
                batch = np.concatenate([batch, np.zeros((padded - len(batch), self.dim), "float32")])
            got, score = self.search_batch(batch, k)
            n = min(QUERY_BATCH, len(queries) - start)
            found.append(np.asarray(ops.convert_to_numpy(got))[:n])
            scores.append(np.asarray(ops.convert_to_numpy(score))[:n])
        return np.concatenate(found).astype("int64"), np.concatenate(scores).astype("float32")

    def search_batch(self, queries, k):
        """One compiled search of a padded batch (a NumPy array)."""
        key, fn, args = self.search_function(k)
        search = self.compiled.get(key, lambda: fn, xla=self.search_with_xla)
        return search(ops.convert_to_tensor(queries), *args)

    def call(self, queries):
        """``(ids, scores)`` of the ``k`` (constructor argument) best items per query.

        For use inside a model (no host-side checks; cosine indexes normalise the queries).
        """
        queries = ops.cast(queries, "float32")
        if self.metric == "cosine":
            norm = ops.sqrt(ops.sum(ops.square(queries), axis=-1, keepdims=True))
            queries = queries / ops.maximum(norm, 1e-12)
        return self.graph_search(queries, self.k)

    def serving_search(self, queries, k):
        """The search traced into the exported TensorFlow graph (``k`` may be a tensor)."""
        return self.graph_search(queries, k)

    def compute_output_spec(self, queries):
        shape = (queries.shape[0], self.k)
        return (keras.KerasTensor(shape, dtype="int32"), keras.KerasTensor(shape, dtype="float32"))

    # ------------------------------------------------------------------ calibration / match
    def open_set_scores(self, embeddings, labels, leave_mate_out=True):
        """``(genuine, impostor)`` per-search scores of labelled searches (see ``calibrate``)."""
        queries = self.check_embeddings(embeddings, "embeddings")
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or labels.shape[0] != len(queries) or labels.dtype.kind not in "iu":
            raise ValueError(
                f"`labels` must be ({len(queries)},) integers (the id each search should match, "
                "or an id not in the gallery); got "
                f"{labels.shape} {labels.dtype}."
            )
        if self.size < 2:
            raise ValueError("calibration needs a gallery of at least 2 items.")
        found, scores = self.search(queries, 2)
        mated = np.isin(labels, self.all_ids())
        right = found[:, 0] == labels
        genuine = np.where(right, scores[:, 0], -np.inf)[mated]
        # A search's best score among the other identities' entries (its impostor score).
        best_other = np.where(right, scores[:, 1], scores[:, 0])
        impostor = best_other if leave_mate_out else best_other[~mated]
        if genuine.size == 0:
            raise ValueError("`labels`: no search is of an enrolled id, so no TAR can be measured.")
        if impostor.size == 0:
            raise ValueError(
                "`labels`: every search is of an enrolled id; pass searches of ids that are not "
                "enrolled, or leave_mate_out=True."
            )
        return genuine.astype("float32"), impostor.astype("float32")

    def calibrate(self, embeddings, labels, target_far=1e-3, leave_mate_out=True,
                  n_bootstrap=1000, confidence=0.95, seed=0):
        """Choose the match threshold for a target false-accept rate; sets ``threshold``.

        Every labelled search (``embeddings`` (N, D), ``labels`` (N,): the id it should
        match, or any id not in the gallery) is run against the gallery (top 2).

        * Impostor trials: the best score among the entries of *other* identities: for a
          search of a non-enrolled id that is its best score, and with ``leave_mate_out``
          (default) an enrolled search contributes one too (its best score once its own
          entry is left out) — what it would score were it not enrolled.
        * Genuine trials (enrolled searches): the best score when the best entry is the
          right id, else -inf (never a correct accept).

        The threshold is the smallest one whose FAR on the impostor trials is at most
        ``target_far`` (``km.metrics.threshold_at_far``); FAR = mean(impostor >= t) is the
        false-positive identification rate and TAR = mean(genuine >= t) the detection and
        identification rate at rank 1 of NISTIR 8271. Bootstrap intervals come from
        ``km.metrics.tar_at_far``. Needs enough impostor trials: about 1 / target_far per
        expected false accept.

        Returns:
            A ``km.retrieval.Calibration``.
        """
        if isinstance(target_far, bool) or not isinstance(target_far, (int, float, np.floating)) \
                or not 0.0 < float(target_far) < 1.0:
            raise ValueError(f"`target_far` must be a rate in (0, 1); got {target_far!r}.")
        far = float(target_far)
        genuine, impostor = self.open_set_scores(embeddings, labels, leave_mate_out)
        result = open_set.tar_at_far(genuine, impostor, far, n_bootstrap, confidence, seed)
        interval = (lambda name: (result[f"{name}_low"], result[f"{name}_high"])
                    if n_bootstrap else None)
        calibration = Calibration(
            threshold=result["threshold"], target_far=result["target_far"], far=result["far"],
            tar=result["tar"], far_interval=interval("far_at_threshold"),
            tar_interval=interval("tar_at_threshold"),
            threshold_interval=interval("threshold"), confidence=float(confidence),
            n_genuine=result["n_genuine"], n_impostor=result["n_impostor"],
        )
        self.threshold = calibration.threshold
        return calibration

    def decision_rates(self, embeddings, labels, threshold=None, leave_mate_out=True):
        """FAR and TAR of ``threshold`` (default: the calibrated one) on labelled searches,
        counted as in ``calibrate``: ``{"far", "tar", "n_genuine", "n_impostor"}``."""
        threshold = self.resolve_threshold(threshold)
        genuine, impostor = self.open_set_scores(embeddings, labels, leave_mate_out)
        t = np.float32(threshold)
        return {"far": float(np.mean(impostor >= t)), "tar": float(np.mean(genuine >= t)),
                "n_genuine": int(genuine.size), "n_impostor": int(impostor.size)}

    def resolve_threshold(self, threshold):
        if threshold is None:
            threshold = self.threshold
            if threshold is None:
                raise ValueError(
                    "`threshold`: the index is not calibrated; call calibrate(...) or pass a "
                    "threshold."
                )
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) \
                or math.isnan(float(threshold)):
            raise ValueError(f"`threshold` must be a number; got {threshold!r}.")
        return float(threshold)

    def match(self, queries, threshold=None):
        """The decision per query: ``(ids, scores)``, id = the best item's id when its score
        is >= the threshold (default: the calibrated one), else -1."""
        threshold = self.resolve_threshold(threshold)
        found, scores = self.search(queries, 1)
        found, scores = found[:, 0], scores[:, 0]
        return np.where(scores >= np.float32(threshold), found, -1), scores

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, metric=self.metric, k=self.k,
                      names={str(key): value for key, value in sorted(self.names.items())})
        return config
