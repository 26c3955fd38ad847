"""Margin measures of Zhou et al. 2022 (SPEC §1.1, §1.5): sample and class margins,
zero-centroid."""

from keras import ops

from keras_margins.ops._common import (
    NEG_LARGE,
    as_float,
    as_labels,
    check_scores,
    l2_normalize,
    static_shape,
    take_target,
    target_mask,
)


def sample_margin(labels, cos):
    """γ_i = cos θ_{i,y_i} − max_{j≠y_i} cos θ_ij, shape (N,), in [−2, 2] (SPEC §1.1).

    Positive iff sample i is classified correctly. The sample-margin regulariser of SPEC §1.4
    is R_sm = −mean_i γ_i.

    Example:
        >>> km.ops.sample_margin([0], [[0.9, 0.1, -0.2]])   # 0.8
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
    """Smallest angle (radians) between two class prototypes, m_cls = min_{i≠j} arccos(ŵ_i·ŵ_j).

    SPEC §1.1. Its maximum is arccos(−1/(C−1)) for C ≤ D+1 (the regular simplex).

    Example:
        >>> float(km.ops.class_margin(np.eye(3)))   # π/2
    """
    w = _unit_columns(kernel)
    gram = ops.matmul(ops.transpose(w), w)
    eye = ops.eye(ops.shape(gram)[0], dtype="bool")
    largest_cos = ops.max(ops.where(eye, NEG_LARGE, gram))
    return ops.arccos(ops.clip(largest_cos, -1.0, 1.0))


def zero_centroid(kernel):
    """R_w = || Σ_k w_k/||w_k|| ||², the squared norm of the sum of unit class columns.

    SPEC §1.5 (the public code's sum form; the paper's mean form is this divided by C²).

    Example:
        >>> float(km.ops.zero_centroid(np.eye(2)))   # ||(1, 1)||² = 2
    """
    w = _unit_columns(kernel)
    return ops.sum(ops.square(ops.sum(w, axis=1)))
