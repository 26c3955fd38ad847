"""Pair verification scores: the LFW protocol's 10-fold best-threshold accuracy, TAR@FAR and
ROC AUC (evaluation-time NumPy on the host)."""

import numpy as np

from keras_margins.metrics.retrieval import as_embeddings


def pair_similarity(emb_a, emb_b, metric="cosine"):
    """Row-wise similarity of two (N, D) arrays, larger = more alike (float64 (N,))."""
    a = as_embeddings(emb_a, "emb_a").astype("float64")
    b = as_embeddings(emb_b, "emb_b").astype("float64")
    if a.shape != b.shape:
        raise ValueError(f"`emb_a` {a.shape} and `emb_b` {b.shape} must have the same shape.")
    if metric == "cosine":
        na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
        nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
        return np.sum(a * b, axis=1) / (na * nb)
    if metric == "euclidean":
        return -np.sum((a - b) ** 2, axis=1)
    raise ValueError(f"`metric` must be 'cosine' or 'euclidean'; got {metric!r}.")


def roc_points(scores, is_same):
    """ROC curve of "same if score >= t": (fpr, tpr, thresholds), thresholds decreasing.

    One point per distinct score plus the origin (threshold +inf), the same points as
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], is_same[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (len(y) - y.sum())]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def _best_threshold(scores, is_same):
    """Threshold maximising accuracy of "same if score >= t" (midpoints between distinct
    scores, plus one below all and one above all); the lowest such threshold wins ties."""
    distinct = np.unique(scores)
    candidates = np.r_[distinct[0] - 1.0, (distinct[:-1] + distinct[1:]) / 2, distinct[-1] + 1.0]
    pos = np.sort(scores[is_same])
    neg = np.sort(scores[~is_same])
    correct = (len(pos) - np.searchsorted(pos, candidates, side="left")) + np.searchsorted(
        neg, candidates, side="left"
    )
    return candidates[int(np.argmax(correct))]


def verification_scores(
    emb_a, emb_b, is_same, n_folds=10, fars=(1e-1, 1e-2, 1e-3), metric="cosine"
):
    """Face-verification scores of pairs (a_i, b_i) labelled same / different.

    * ``accuracy`` (and ``accuracy_std``): the LFW protocol (Huang et al. 2007). The pairs are
      cut, in the given order, into ``n_folds`` contiguous folds (LFW's pairs file lists its 10
      folds one after another); for each fold the threshold with the best accuracy on the other
      folds is applied to it; the mean (and sample std, ddof = 1) of the held-out accuracies
      is returned.
    * ``threshold``: the mean of the fold thresholds (a similarity: "same if score >= t").
    * ``tar_at_far_{far}``: the best true-accept rate among thresholds whose false-accept rate
      is at most ``far`` (0 when none), on all pairs.
    * ``roc_auc``: area under the ROC curve (trapezoids; ties count one half).

    Embeddings are read as float32 (like the retrieval scores); similarities are float64.

    Args:
        emb_a: (N, D) embeddings of the first side of each pair.
        emb_b: (N, D) embeddings of the second side.
        is_same: (N,) booleans (or 0/1), both values present.
        n_folds: folds of the accuracy protocol (default 10, as LFW).
        fars: false-accept rates in (0, 1] at which the TAR is read (default
            (1e-1, 1e-2, 1e-3)).
        metric: ``"cosine"`` similarity (default) or ``"euclidean"`` (minus squared distance).

    Returns:
        dict of Python floats: ``accuracy``, ``accuracy_std``, ``threshold``,
        ``tar_at_far_{far}`` for each far, ``roc_auc``.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(40, 8)); same = np.arange(40) % 2 == 0
    >>> b = np.where(same[:, None], a + 0.5 * rng.normal(size=(40, 8)), rng.normal(size=(40, 8)))
    >>> s = km.metrics.verification_scores(a, b, same, n_folds=4, fars=(0.1,))
    >>> {name: round(value, 4) for name, value in s.items()}
    {'accuracy': 0.95, 'accuracy_std': 0.0577, 'threshold': 0.6454, 'tar_at_far_0.1': 1.0, 'roc_auc': 0.9925}

    Reference:
        - Huang et al., 2007. Labeled Faces in the Wild: A Database for Studying Face Recognition in
          Unconstrained Environments, UMass Amherst TR 07-49 (the 10-fold protocol).
    """
    scores = pair_similarity(emb_a, emb_b, metric)
    is_same = np.asarray(is_same)
    if is_same.ndim != 1 or is_same.shape[0] != len(scores):
        raise ValueError(f"`is_same` must have shape ({len(scores)},); got {is_same.shape}.")
    if not np.all(np.isin(is_same, (0, 1))):
        raise ValueError("`is_same` must hold booleans or 0/1 values.")
    is_same = is_same.astype(bool)
    if is_same.all() or not is_same.any():
        raise ValueError("`is_same` must contain both same (True) and different (False) pairs.")
    if int(n_folds) != n_folds or not 2 <= n_folds <= len(scores):
        raise ValueError(f"`n_folds` must be an integer in [2, {len(scores)}]; got {n_folds!r}.")
    if any(not 0.0 < f <= 1.0 for f in fars):
        raise ValueError(f"`fars` must lie in (0, 1]; got {fars!r}.")

    accuracies, thresholds = [], []
    for fold in np.array_split(np.arange(len(scores)), int(n_folds)):
        train = np.ones(len(scores), dtype=bool)
        train[fold] = False
        threshold = _best_threshold(scores[train], is_same[train])
        accuracies.append(np.mean((scores[fold] >= threshold) == is_same[fold]))
        thresholds.append(threshold)

    fpr, tpr, _ = roc_points(scores, is_same)
    out = {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
        "threshold": float(np.mean(thresholds)),
    }
    for far in fars:
        allowed = fpr <= far
        out[f"tar_at_far_{far:g}"] = float(tpr[allowed].max()) if allowed.any() else 0.0
    out["roc_auc"] = float(np.trapezoid(tpr, fpr) if hasattr(np, "trapezoid") else np.trapz(tpr, fpr))
    return out
