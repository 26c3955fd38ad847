"""Retrieval scores of "A Metric Learning Reality Check" (Musgrave et al., ECCV 2020).

Evaluation-time code: it runs on the host in NumPy, one block of queries at a time, so the
(queries × references) similarity matrix never exists in full. Memory is about
``chunk_size × num_references × 17`` bytes (float32 scores, float64 ranking keys, a boolean
match matrix) plus the ranked neighbour lists.
"""

import numpy as np

from keras_margins.ops._validation import integer_label_array

_METRICS = ("cosine", "euclidean")


def as_embeddings(x, name):
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"`{name}` must be a rank-2 array (N, D) of embeddings; got {x.shape}.")
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` must hold at least one embedding; got shape {x.shape}.")
    x = x.astype("float32")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` contains NaN or inf values.")
    return x


def as_label_vector(y, n, name):
    """(n,) int64 labels from (n,) or (n, 1) integer ids (``integer_label_array``); ``ValueError``
    naming ``name`` for another length."""
    y = integer_label_array(y, name)
    if y.shape[0] != n:
        raise ValueError(f"`{name}` must have shape ({n},) or ({n}, 1); got {y.shape[0]} labels.")
    return y


def _check_k(k):
    ks = (k,) if np.isscalar(k) else tuple(k)
    if not ks or any(int(v) != v or v < 1 for v in ks):
        raise ValueError(f"`k` must be a positive integer or a sequence of them; got {k!r}.")
    return tuple(int(v) for v in ks)


def pairwise_scores(queries, references, metric="cosine"):
    """float32 similarity, larger = closer: cosine of the rows, or minus squared distance."""
    if metric not in _METRICS:
        raise ValueError(f"`metric` must be one of {_METRICS}; got {metric!r}.")
    if metric == "cosine":
        q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        r = references / np.maximum(np.linalg.norm(references, axis=1, keepdims=True), 1e-12)
        return (q @ r.T).astype("float32")
    sq = (
        np.sum(queries**2, axis=1)[:, None]
        - 2.0 * (queries @ references.T)
        + np.sum(references**2, axis=1)[None, :]
    )
    return (-np.maximum(sq, 0.0)).astype("float32")


def _ranked_matches(scores, same, exclude, depth):
    """Relevance (0/1) of the ``depth`` best references of each query, best first.

    Ties: at equal score a reference of another class ranks *before* one of the query's class
    (the pessimistic order), so a tie never helps a score and the result does not depend on the
    order of the references. It is exact: float32 scores are widened to float64 and same-class
    keys are lowered by one float64 ulp, less than the gap between two float32 numbers.
    """
    key = scores.astype("float64")
    key = np.where(same, np.nextafter(key, -np.inf), key)
    if exclude is not None:
        key[np.arange(len(key)), exclude] = -np.inf
    top = np.argpartition(-key, depth - 1, axis=1)[:, :depth]
    order = np.argsort(-np.take_along_axis(key, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return np.take_along_axis(same, top, axis=1)


def _chunk_sums(rel, num_relevant, ks):
    """Per-chunk sums of the per-query scores (queries with R >= 1 only)."""
    positions = np.arange(1, rel.shape[1] + 1)
    within_r = positions[None, :] <= num_relevant[:, None]
    hits = np.cumsum(rel, axis=1)
    precision_at_i = hits / positions[None, :]
    r = num_relevant.astype("float64")
    sums = {
        "precision_at_1": rel[:, 0].sum(),
        "r_precision": (np.sum(rel * within_r, axis=1) / r).sum(),
        "map_at_r": (np.sum(precision_at_i * rel * within_r, axis=1) / r).sum(),
    }
    for k in ks:
        sums[f"recall_at_{k}"] = np.any(rel[:, :k], axis=1).sum()
    return sums


def retrieval_scores(
    embeddings,
    labels,
    query_embeddings=None,
    query_labels=None,
    k=(1, 5, 10),
    chunk_size=256,
    metric="cosine",
):
    """Precision@1, Recall@K, R-Precision and MAP@R of a nearest-neighbour search.

    Musgrave et al. 2020, §3.2 ("A Metric Learning Reality Check"). For a query with R
    references of its class, ranked neighbours 1, 2, ... and rel(i) = 1 when neighbour i is of
    the query's class:

    * ``precision_at_1``: mean of rel(1).
    * ``recall_at_{k}``: fraction of queries with at least one same-class item among their k
      nearest (the deep-metric-learning papers' Recall@K, not recall in the IR sense).
    * ``r_precision``: mean of (1/R) Σ_{i≤R} rel(i).
    * ``map_at_r``: mean of (1/R) Σ_{i≤R} P(i)·rel(i), with P(i) the precision at i.

    Without ``query_embeddings`` every embedding is a query against all the others
    (leave-one-out: a query never retrieves itself). Queries whose class has no reference
    (R = 0) are left out of every mean. At equal similarity a reference of another class is
    ranked first (pessimistic ties: ties never raise a score, and the result does not depend
    on the order of the data).

    Args:
        embeddings: (M, D) reference embeddings.
        labels: (M,) integer class ids of the references.
        query_embeddings: optional separate queries (Q, D) (default None: leave-one-out).
        query_labels: (Q,) class ids of the queries (default None; pass with
            ``query_embeddings``).
        k: the K of Recall@K, an int or a sequence (default (1, 5, 10)).
        chunk_size: queries scored at once; ``None`` scores all queries in one block
            (default 256).
        metric: ``"cosine"`` (the papers', default) or ``"euclidean"``.

    Returns:
        dict of Python floats: ``precision_at_1``, ``r_precision``, ``map_at_r`` and
        ``recall_at_{k}`` for each k.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> emb = np.array([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    >>> scores = km.metrics.retrieval_scores(emb, [0, 0, 1, 1, 1], k=(1, 2))
    >>> {name: round(value, 4) for name, value in scores.items()}
    {'precision_at_1': 1.0, 'r_precision': 0.9, 'map_at_r': 0.9, 'recall_at_1': 1.0, 'recall_at_2': 1.0}

    Reference:
        - Musgrave, Belongie & Lim, 2020. [A Metric Learning Reality Check](https://arxiv.org/abs/2003.08505),
          ECCV 2020, §3.2.
    """
    refs = as_embeddings(embeddings, "embeddings")
    ref_labels = as_label_vector(labels, len(refs), "labels")
    leave_one_out = query_embeddings is None
    if leave_one_out != (query_labels is None):
        raise ValueError("Pass both `query_embeddings` and `query_labels`, or neither.")
    if leave_one_out:
        queries, q_labels = refs, ref_labels
    else:
        queries = as_embeddings(query_embeddings, "query_embeddings")
        q_labels = as_label_vector(query_labels, len(queries), "query_labels")
        if queries.shape[1] != refs.shape[1]:
            raise ValueError(
                f"`query_embeddings` has D={queries.shape[1]} but `embeddings` has "
                f"D={refs.shape[1]}."
            )
    ks = _check_k(k)
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"`chunk_size` must be a positive integer or None; got {chunk_size!r}.")
    if metric not in _METRICS:
        raise ValueError(f"`metric` must be one of {_METRICS}; got {metric!r}.")
    available = len(refs) - int(leave_one_out)
    if available < 1:
        raise ValueError("Leave-one-out retrieval needs at least 2 embeddings.")

    classes, counts = np.unique(ref_labels, return_counts=True)
    count_of = dict(zip(classes.tolist(), counts.tolist()))
    num_relevant = np.array([count_of.get(c, 0) for c in q_labels.tolist()], dtype="int64")
    num_relevant -= int(leave_one_out)
    keep = num_relevant > 0
    if not keep.any():
        raise ValueError(
            "`labels`: No query has a reference of its own class (every class needs 2 or more "
            "embeddings, or a query class present among the references); retrieval scores are "
            "undefined."
        )
    query_index = np.flatnonzero(keep)
    step = len(query_index) if chunk_size is None else int(chunk_size)
    totals = {}
    for start in range(0, len(query_index), step):
        rows = query_index[start : start + step]
        scores = pairwise_scores(queries[rows], refs, metric)
        same = q_labels[rows, None] == ref_labels[None, :]
        exclude = rows if leave_one_out else None
        if exclude is not None:
            same[np.arange(len(rows)), rows] = False
        depth = min(available, max(max(ks), int(num_relevant[rows].max())))
        rel = _ranked_matches(scores, same, exclude, depth)
        for name, value in _chunk_sums(rel, num_relevant[rows], ks).items():
            totals[name] = totals.get(name, 0.0) + float(value)
    n = float(len(query_index))
    ordered = ["precision_at_1", "r_precision", "map_at_r"] + [f"recall_at_{v}" for v in ks]
    return {name: totals[name] / n for name in ordered}
