"""MagFace (Meng et al., CVPR 2021): a margin that grows with the feature norm, and a
regulariser that rewards large norms, so that the norm ranks the samples' quality.

Formulas, defaults and conventions: ``docs/papers.md`` §8.3.
"""

from keras import ops

from keras_margins.ops._validation import check_positive
from keras_margins.ops.angular import (
    angular_margin_target,
    check_per_sample,
    cosines_and_targets,
    sin_from_cos,
    softmax_with_target,
)


def check_magface_bounds(lower_norm, upper_norm, lower_margin, upper_margin):
    """``ValueError`` unless 0 < l_a < u_a and 0 <= l_m <= u_m < π/2 (names the argument)."""
    check_positive(lower_norm, "lower_norm")
    if not upper_norm > lower_norm:
        raise ValueError(f"`upper_norm` must be > lower_norm={lower_norm}; got {upper_norm}.")
    if not 0.0 <= lower_margin <= upper_margin:
        raise ValueError(
            f"`lower_margin` must be in [0, upper_margin={upper_margin}]; got {lower_margin}."
        )
    if not upper_margin < 1.5707963:
        raise ValueError(f"`upper_margin` (radians) must be < π/2; got {upper_margin}.")


def magface_margin(norms, lower_norm=10.0, upper_norm=110.0, lower_margin=0.45, upper_margin=0.8):
    """m(a) = (u_m − l_m)/(u_a − l_a)·(a − l_a) + l_m with a = clip(‖x‖, l_a, u_a): the
    linear, increasing margin of MagFace (Meng et al. 2021, the magnitude-aware margin).

    Args:
        norms: (N,) feature norms ‖x_i‖.
        lower_norm, upper_norm: l_a < u_a, the norm range (default 10, 110).
        lower_margin, upper_margin: l_m <= u_m, the margins at l_a and u_a (default 0.45, 0.8).

    Returns:
        (N,) margins in radians.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> print(np.round(np.asarray(km.ops.magface_margin(np.array([0.0, 60.0, 500.0]))), 4))
    [0.45  0.625 0.8  ]
    """
    check_magface_bounds(lower_norm, upper_norm, lower_margin, upper_margin)
    a = ops.clip(ops.convert_to_tensor(norms), lower_norm, upper_norm)
    slope = (upper_margin - lower_margin) / (upper_norm - lower_norm)
    return slope * (a - lower_norm) + lower_margin


def magface_regularizer(norms, lower_norm=10.0, upper_norm=110.0):
    """g(a) = 1/a + a/u_a² with a = clip(‖x‖, l_a, u_a) (Meng et al. 2021, the regulariser g): strictly
    decreasing on [l_a, u_a], so its weight λ_g rewards large norms.

    Args:
        norms: (N,) feature norms.
        lower_norm, upper_norm: l_a < u_a (default 10, 110).

    Returns:
        (N,) values g(a_i).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> print(np.round(np.asarray(km.ops.magface_regularizer(np.array([10.0, 110.0]))), 5))
    [0.10083 0.01818]
    """
    check_positive(lower_norm, "lower_norm")
    if not upper_norm > lower_norm:
        raise ValueError(f"`upper_norm` must be > lower_norm={lower_norm}; got {upper_norm}.")
    a = ops.clip(ops.convert_to_tensor(norms), lower_norm, upper_norm)
    return 1.0 / a + a / (upper_norm * upper_norm)


def magface(labels, cos, norms, scale=64.0, lower_norm=10.0, upper_norm=110.0,
            lower_margin=0.45, upper_margin=0.8, regularizer_weight=35.0, easy_margin=False):
    """Per-sample MagFace loss (Meng et al. 2021, the MagFace loss):

    L_i = −log e^{s·cos(θ_y + m(a_i))} / (e^{s·cos(θ_y + m(a_i))} + Σ_{j≠y} e^{s·cos θ_j})
          + λ_g·g(a_i),

    a_i = clip(‖x_i‖, l_a, u_a), m(a) the linear margin (``magface_margin``), g(a) = 1/a +
    a/u_a² (``magface_regularizer``). The margin keeps its gradient with respect to the norm
    (as in the authors' code): a sample is pushed to the norm where the margin it can afford
    balances λ_g·g. Past π the target continues as cos θ − m·sin m (ArcFace); with
    ``easy_margin=True`` the margin applies only where cos θ_y > 0 (the authors' default).

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        cos: (N, C) cosines of a cosine head.
        norms: (N,) feature norms ‖x_i‖ of the un-normalised embeddings.
        scale: s > 0 (default 64.0).
        lower_norm, upper_norm: l_a < u_a (default 10, 110).
        lower_margin, upper_margin: l_m <= u_m (default 0.45, 0.8).
        regularizer_weight: λ_g >= 0 (default 35.0).
        easy_margin: margin only where cos θ_y > 0 (default False).

    Returns:
        (N,) float32 per-sample losses.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos = np.array([[0.9, 0.1, -0.2], [0.3, 0.6, 0.2]])
    >>> out = km.ops.magface([0, 1], cos, np.array([20.0, 100.0]), scale=16.0)
    >>> print(np.round(np.asarray(out), 3))
    [1.808 7.563]

    Reference:
        - Meng et al., 2021. [MagFace: A Universal Representation for Face Recognition and
          Quality Assessment](https://arxiv.org/abs/2103.06627), CVPR 2021.
    """
    check_positive(scale, "scale")
    check_magface_bounds(lower_norm, upper_norm, lower_margin, upper_margin)
    if not regularizer_weight >= 0:
        raise ValueError(f"`regularizer_weight` must be >= 0; got {regularizer_weight}.")
    cos, labels, cos_y = cosines_and_targets(labels, cos)
    norms = ops.cast(check_per_sample(norms, "norms", cos.shape[0], "(N,) of feature norms"), cos.dtype)
    margin = magface_margin(norms, lower_norm, upper_norm, lower_margin, upper_margin)
    if easy_margin:
        shifted = cos_y * ops.cos(margin) - sin_from_cos(cos_y) * ops.sin(margin)
        psi = ops.where(cos_y > 0.0, shifted, cos_y)
    else:
        psi = angular_margin_target(cos_y, margin)
    loss = softmax_with_target(labels, scale * psi, scale * cos)
    return loss + regularizer_weight * magface_regularizer(norms, lower_norm, upper_norm)


def magface_min_regularizer_weight(scale=64.0, lower_norm=10.0, upper_norm=110.0,
                                   lower_margin=0.45, upper_margin=0.8):
    """The smallest λ_g of MagFace's guarantee that the optimal norm is unique (Meng et al.
    2021, and the authors' check): s·k·u_a²·l_a²/(u_a² − l_a²), k = (u_m − l_m)/(u_a − l_a).

    Example:

    >>> import keras_margins as km
    >>> round(km.ops.magface_min_regularizer_weight(), 2)
    22.59
    """
    check_positive(scale, "scale")
    check_magface_bounds(lower_norm, upper_norm, lower_margin, upper_margin)
    slope = (upper_margin - lower_margin) / (upper_norm - lower_norm)
    return scale * slope * upper_norm**2 * lower_norm**2 / (upper_norm**2 - lower_norm**2)
