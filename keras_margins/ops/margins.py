"""Margin measures of Zhou et al. (ICLR 2022): sample and class margins, zero-centroid.

Definitions: ``docs/papers.md`` §1.1 and §1.5.
"""

from keras import ops

from keras_margins.ops._numerics import NEG_LARGE, take_target, target_mask
from keras_margins.ops._validation import as_float, as_labels, check_scores, static_shape
from keras_margins.ops.normalize import l2_normalize


def sample_margin(labels, cos):
    """Sample margins γ_i = cos θ_{i,y_i} − max_{j≠y_i} cos θ_ij, in [−2, 2].

    γ_i > 0 iff sample i is classified correctly. The sample-margin regulariser is
    R_sm = −mean_i γ_i (``sample_margin_weight`` of the margin losses).

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        cos: (N, C) cosines, C >= 2.

    Returns:
        (N,) float32 sample margins.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos = np.array([[0.9, 0.1, -0.2], [0.7, 0.4, 0.2]])
    >>> print(np.round(np.asarray(km.ops.sample_margin([0, 1], cos)), 4))
    [ 0.8 -0.3]

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (sample margin).
    """
    cos, num_classes = check_scores(cos)
    labels = as_labels(labels, num_classes, cos.shape[0])
    others = ops.where(target_mask(labels, cos.shape[1]), NEG_LARGE, cos)
    return take_target(cos, labels) - ops.max(others, axis=1)


def _unit_columns(kernel):
    kernel = as_float(kernel, "kernel", 2, "(D, C) with one column per class")
    num_classes = static_shape(kernel)[1]
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"`kernel` must have at least 2 class columns; got {num_classes}.")
    return l2_normalize(kernel, axis=0)


def class_margin(kernel):
    """Class margin: the smallest angle (radians) between two class prototypes.

    m_cls = min_{i≠j} arccos(ŵ_i·ŵ_j). For C ≤ D+1 its maximum is arccos(−1/(C−1)), reached
    by the regular simplex.

    Args:
        kernel: (D, C) prototypes, one column per class, C >= 2.

    Returns:
        A float32 scalar tensor (radians).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> print(round(float(km.ops.class_margin(np.eye(3))), 4))   # π/2
    1.5708
    >>> simplex = km.ops.pedcc_centroids(4, 3)                   # arccos(-1/3)
    >>> print(round(float(km.ops.class_margin(simplex)), 4))
    1.9106

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (class margin).
    """
    w = _unit_columns(kernel)
    gram = ops.matmul(ops.transpose(w), w)
    eye = ops.eye(ops.shape(gram)[0], dtype="bool")
    largest_cos = ops.max(ops.where(eye, NEG_LARGE, gram))
    return ops.arccos(ops.clip(largest_cos, -1.0, 1.0))


def zero_centroid(kernel):
    """Zero-centroid measure R_w = ||Σ_k ŵ_k||² of the unit class prototypes (sum form).

    This is the sum form of the authors' public code; the paper writes the mean form
    ||(1/C) Σ_k ŵ_k||², which is this value divided by C² (``docs/papers.md`` §1.5).

    Args:
        kernel: (D, C) prototypes, one column per class, C >= 2.

    Returns:
        A float32 scalar tensor.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> print(round(float(km.ops.zero_centroid(np.eye(2))), 4))   # ||(1, 1)||²
    2.0

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (zero-centroid regularisation).
    """
    w = _unit_columns(kernel)
    return ops.sum(ops.square(ops.sum(w, axis=1)))
