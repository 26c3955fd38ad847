"""CurricularFace (Huang et al., CVPR 2020): hard negatives weighted by an adaptive t.

Formulas, defaults and conventions: ``docs/papers.md`` §8.2.
"""

from keras import ops

from keras_margins.ops._validation import check_positive
from keras_margins.ops.angular import (
    angular_margin_target,
    check_angle,
    check_momentum,
    cosines_and_targets,
    softmax_with_target,
)


def curricular_face(labels, cos, t, scale=64.0, margin=0.5):
    """Per-sample CurricularFace loss (Huang et al. 2020, the adaptive curriculum loss).

    L_i = −log e^{s·ψ(θ_y)} / (e^{s·ψ(θ_y)} + Σ_{j≠y} e^{s·N(t, cos θ_j)}), with
    ψ(θ) = cos(θ + m) (ArcFace's continuation cos θ − m·sin m where θ + m > π) and
    N(t, cos θ_j) = cos θ_j where ψ(θ_y) − cos θ_j ≥ 0 (easy negative), cos θ_j·(t + cos θ_j)
    otherwise (hard negative). t is the adaptive parameter (``curricular_t``); it gets no
    gradient. The hard/easy test compares with ψ, i.e. the continued target past π.

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        cos: (N, C) cosines of a cosine head.
        t: scalar (float or tensor), the current t.
        scale: s > 0 (default 64.0).
        margin: additive angular margin m in radians, in [0, π) (default 0.5).

    Returns:
        (N,) float32 per-sample losses.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos = np.array([[0.9, 0.1, -0.2], [0.3, 0.6, 0.2]])
    >>> print(np.round(np.asarray(km.ops.curricular_face([0, 1], cos, t=0.5, scale=16.0)), 3))
    [0.    1.898]

    Reference:
        - Huang et al., 2020. [CurricularFace: Adaptive Curriculum Learning Loss for Deep
          Face Recognition](https://arxiv.org/abs/2004.00288), CVPR 2020.
    """
    check_positive(scale, "scale")
    check_angle(margin, "margin")
    cos, labels, cos_y = cosines_and_targets(labels, cos)
    t = ops.stop_gradient(ops.cast(t, cos.dtype))
    psi = angular_margin_target(cos_y, margin)
    hard = cos > ops.expand_dims(ops.stop_gradient(psi), 1)
    modulated = ops.where(hard, cos * (t + cos), cos)
    return softmax_with_target(labels, scale * psi, scale * modulated)


def curricular_t(t, cos_y, momentum=0.99):
    """t ← momentum·t + (1 − momentum)·mean_i cos θ_{y_i} (Huang et al. 2020, the EMA of t;
    the authors' code keeps 0.99 of the previous t). A batch whose mean is not finite (an
    invalid label under XLA) leaves t unchanged.

    Args:
        t: scalar, the previous t.
        cos_y: (N,) target cosines of the batch.
        momentum: weight of the previous t, in [0, 1) (default 0.99).

    Returns:
        The new t (scalar tensor, no gradient).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> float(km.ops.curricular_t(0.0, np.array([0.5, 0.7])))
    0.006000000052154064
    """
    check_momentum(momentum)
    cos_y = ops.stop_gradient(ops.cast(cos_y, "float32"))
    if len(cos_y.shape) != 1:
        raise ValueError(f"`cos_y` must be the (N,) target cosines; got shape {tuple(cos_y.shape)}.")
    t = ops.cast(t, "float32")
    updated = momentum * t + (1.0 - momentum) * ops.mean(cos_y)
    return ops.where(ops.isfinite(updated), updated, t)
