"""POD loss on predefined class centroids (Zhu & Zu, arXiv:2111.15449).

Formulas and the δ schedule: ``docs/papers.md`` §3.2-3.3.
"""

from keras import ops

from keras_margins.ops._numerics import EPS, poison_invalid_labels
from keras_margins.ops._validation import as_labels, check_non_negative, features_and_kernel, static_shape
from keras_margins.ops.normalize import l2_normalize


def _check_delta(delta):
    if isinstance(delta, (int, float)):
        check_non_negative(delta, "delta")


def pod_terms(labels, features, centroids, delta=0.05):
    """The two POD terms: per-sample NaC (N,) and the batch decorrelation term ().

    NaC_i = (1 − x_i·c_{y_i} / sqrt(||x_i||² + δ²))², the squared (1 − cosine) between
    [x_i, δ] and [c_{y_i}, 0]. Decorrelation: with residuals r_i = x_i/||x_i|| − c_{y_i}
    (not batch-centred) and Σ = RᵀR/(B−1), L_sc = Σ_{a≠b} Σ_ab² / (D−1). Centroid columns
    are normalised (a no-op for PEDCC). At x_i = 0 every value is finite (NaC_i = 1 for
    δ > 0), but x/||x|| is singular there, so the decorrelation gradient of an exactly-zero
    feature is huge (finite, ~1/1e-12).

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        features: (N, D) embeddings before normalisation, N >= 2, D >= 2.
        centroids: (D, C) class centroids (``km.ops.pedcc_centroids``).
        delta: δ >= 0, a float or a scalar tensor/variable (default 0.05).

    Returns:
        ``(nac, decorrelation)``: an (N,) tensor and a scalar tensor.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> x = np.array([[2.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.3, 0.4]])
    >>> nac, decorrelation = km.ops.pod_terms([0, 1, 2], x, np.eye(3), delta=0.05)
    >>> print(np.round(np.asarray(nac), 4), round(float(decorrelation), 4))
    [0.     0.0113 0.0416] 0.0042

    Reference:
        - Zhu & Zu, 2021. POD loss on predefined evenly-distributed class centroids, [arXiv:2111.15449](https://arxiv.org/abs/2111.15449).
    """
    _check_delta(delta)
    features, centroids = features_and_kernel(features, centroids, "(D, C) of class centroids")
    batch, dim = static_shape(features)
    if batch is not None and batch < 2:
        raise ValueError(f"`features` needs at least 2 rows for the decorrelation term; got {batch}.")
    if dim is not None and dim < 2:
        raise ValueError(f"`features` must have D >= 2; got D={dim}.")
    num_classes = static_shape(centroids)[1]
    labels = as_labels(labels, num_classes, batch)
    delta = ops.cast(delta, features.dtype)
    # Only the target centroids are read: c_{y_i} (N, D), normalised (the same as gathering
    # from normalised columns), instead of the (N, C) product x·C.
    safe_labels = ops.clip(labels, 0, (num_classes or ops.shape(centroids)[1]) - 1)
    target = l2_normalize(ops.transpose(ops.take(centroids, safe_labels, axis=1)), axis=1)
    dot_y = ops.sum(features * target, axis=1)
    dot_y = poison_invalid_labels(dot_y, labels, num_classes or ops.shape(centroids)[1])
    sq_norm = ops.sum(ops.square(features), axis=1)
    nac = ops.square(1.0 - dot_y * ops.rsqrt(ops.maximum(sq_norm + ops.square(delta), EPS * EPS)))
    residual = l2_normalize(features, axis=1) - target
    n = ops.cast(ops.shape(features)[0], features.dtype)
    # Σ_{a≠b} Σ_ab² = ||RᵀR||_F² − Σ_a (RᵀR)_aa², and ||RᵀR||_F² = ||RRᵀ||_F²: the smaller
    # of the (D, D) and (N, N) Gram matrices gives the same value (half the work for N = D/2).
    if batch is not None and dim is not None and batch < dim:
        gram = ops.matmul(residual, ops.transpose(residual))
    else:
        gram = ops.matmul(ops.transpose(residual), residual)
    diagonal = ops.sum(ops.square(residual), axis=0)  # (RᵀR)_aa
    off_diagonal = (ops.sum(ops.square(gram)) - ops.sum(ops.square(diagonal))) / ops.square(n - 1.0)
    d = ops.cast(ops.shape(features)[1], features.dtype)
    return nac, off_diagonal / (d - 1.0)


def pod_loss(labels, features, centroids, delta=0.05, decorrelation_weight=1.0):
    """POD loss: mean_i NaC_i + ``decorrelation_weight`` · L_sc (see ``pod_terms``).

    NaC pulls each feature onto its fixed centroid (δ > 0 penalises small norms and keeps
    x = 0 finite); L_sc decorrelates the residuals x̂_i − c_{y_i} across feature dimensions.

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        features: (N, D) embeddings before normalisation, N >= 2, D >= 2.
        centroids: (D, C) class centroids (``km.ops.pedcc_centroids``).
        delta: δ >= 0 (default 0.05, the authors' value for the first epoch).
        decorrelation_weight: weight of L_sc, >= 0 (default 1.0, as in the authors' code).

    Returns:
        A scalar float tensor.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> x = np.array([[2.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.3, 0.4]])
    >>> print(round(float(km.ops.pod_loss([0, 1, 2], x, np.eye(3), delta=0.05)), 4))
    0.0218

    Reference:
        - Zhu & Zu, 2021. POD loss on predefined evenly-distributed class centroids, [arXiv:2111.15449](https://arxiv.org/abs/2111.15449).
    """
    check_non_negative(decorrelation_weight, "decorrelation_weight")
    nac, decorrelation = pod_terms(labels, features, centroids, delta)
    return ops.mean(nac) + decorrelation_weight * decorrelation
