"""The generalised margin softmax family and LM-Softmax (Zhou et al., ICLR 2022).

Formulas, defaults and conventions: ``docs/papers.md`` §1.
"""

import math

from keras import ops

from keras_margins.ops._numerics import masked_logsumexp, take_target, target_mask
from keras_margins.ops._validation import (
    as_float,
    as_labels,
    check_non_negative,
    check_positive,
    check_scores,
)

# Keep arccos away from ±1 where its derivative is infinite (float32 resolution ~1.2e-7).
_ACOS_CLIP = 1.0 - 1e-6
# sin θ = sqrt(1 - cos²) has an infinite derivative at cos = ±1; floor the radicand.
_SIN_FLOOR = 1e-12


def margin_target(cos_y, m1=1.0, m2=0.0, m3=0.0):
    """Target function ψ(θ) = cos(m1·θ + m2) − m3 of the generalised margin softmax.

    Applied to the target cosines only. Where ψ would stop decreasing it is extended
    monotonically:

    * m1 = 1 (ArcFace, CosFace, combined): cos(θ + m2) = cos θ·cos m2 − sin θ·sin m2 (no
      arccos, finite gradients at cos = ±1); where θ + m2 > π the ArcFace convention
      cos θ − m2·sin m2 − m3 takes over.
    * m1 > 1 (SphereFace): with t = m1·θ + m2 and k = ⌊t/π⌋, ψ = (−1)^k·cos t − 2k − m3, the
      monotone extension of Liu et al. (2017), here for real m1.

    Args:
        cos_y: (N,) target cosines cos θ_y.
        m1: multiplicative angular margin, >= 1 (default 1.0).
        m2: additive angular margin in radians, in [0, π) (default 0.0).
        m3: additive cosine margin, >= 0 (default 0.0).

    Returns:
        (N,) float tensor ψ(θ_y).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos_y = np.array([1.0, 0.5, -1.0])
    >>> print(np.round(np.asarray(km.ops.margin_target(cos_y, m2=0.5)), 4))   # ArcFace
    [ 0.8776  0.0236 -1.2397]
    >>> print(np.round(np.asarray(km.ops.margin_target(cos_y, m3=0.35)), 4))  # CosFace
    [ 0.65  0.15 -1.35]
    >>> print(np.round(np.asarray(km.ops.margin_target(np.array([1.0, 0.0, -0.9]), m1=1.5)), 4))
    [ 1.     -0.7071 -1.3739]

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (generalised margin softmax).
        - Deng et al., 2019. [ArcFace](https://arxiv.org/abs/1801.07698), CVPR 2019.
        - Wang et al., 2018. [CosFace](https://arxiv.org/abs/1801.09414), CVPR 2018.
        - Liu et al., 2017. [SphereFace](https://arxiv.org/abs/1704.08063), CVPR 2017.
    """
    _validate_angles(m1, m2, m3)
    cos_y = as_float(cos_y, "cos_y", 1, "(N,) of target cosines")
    if m1 == 1.0:
        if m2 == 0.0:
            return cos_y - m3
        cos_m, sin_m = math.cos(m2), math.sin(m2)
        sin_t = ops.sqrt(ops.maximum(1.0 - ops.square(cos_y), _SIN_FLOOR))
        shifted = cos_y * cos_m - sin_t * sin_m
        # θ + m2 > π  <=>  cos θ < cos(π − m2) = −cos m2
        fallback = cos_y - m2 * sin_m
        return ops.where(cos_y > -cos_m, shifted, fallback) - m3
    theta = ops.arccos(ops.clip(cos_y, -_ACOS_CLIP, _ACOS_CLIP))
    t = m1 * theta + m2
    k = ops.stop_gradient(ops.floor(t / math.pi))
    sign = 1.0 - 2.0 * ops.mod(k, 2.0)
    return sign * ops.cos(t) - 2.0 * k - m3


def _validate_angles(m1, m2, m3):
    if not m1 >= 1.0:
        raise ValueError(f"`m1` (multiplicative angular margin) must be >= 1; got {m1}.")
    if not 0.0 <= m2 < math.pi:
        raise ValueError(f"`m2` (additive angular margin, radians) must be in [0, π); got {m2}.")
    check_non_negative(m3, "m3")


def _validate_margins(scale, m1, m2, m3):
    check_positive(scale, "scale")
    _validate_angles(m1, m2, m3)


def margin_softmax(labels, cos, scale, m1=1.0, m2=0.0, m3=0.0):
    """Per-sample generalised margin softmax cross-entropy (GM-Softmax).

    L_i = −log( e^{s·ψ(θ_y)} / (e^{s·ψ(θ_y)} + Σ_{j≠y} e^{s·cos θ_j}) ),
    ψ(θ) = cos(m1·θ + m2) − m3 (see ``margin_target``). NormFace: m = (1, 0, 0); SphereFace:
    m1 > 1; ArcFace: m2 > 0; CosFace: m3 > 0. The margin touches the N gathered target
    cosines only, never the (N, C) matrix.

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        cos: (N, C) cosines of a cosine head.
        scale: s > 0.
        m1: multiplicative angular margin, >= 1 (default 1.0).
        m2: additive angular margin in radians, in [0, π) (default 0.0).
        m3: additive cosine margin, >= 0 (default 0.0).

    Returns:
        (N,) float32 per-sample losses.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos = np.array([[0.9, 0.1, -0.2], [0.3, 0.6, 0.2]])
    >>> print(np.round(np.asarray(km.ops.margin_softmax([0, 1], cos, scale=16.0)), 4))
    [0.     0.0098]
    >>> arcface = km.ops.margin_softmax([0, 1], cos, scale=16.0, m2=0.5)
    >>> print(np.round(np.asarray(arcface), 2))
    [0.   2.76]

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (generalised margin softmax).
    """
    _validate_margins(scale, m1, m2, m3)
    cos, num_classes = check_scores(cos)
    labels = as_labels(labels, num_classes, cos.shape[0])
    cos_y = take_target(cos, labels)
    psi = margin_target(cos_y, m1, m2, m3)
    is_target = target_mask(labels, cos.shape[1])
    logits = ops.where(is_target, ops.expand_dims(scale * psi, 1), scale * cos)
    return ops.logsumexp(logits, axis=1) - scale * psi


def largest_margin_softmax(labels, cos, scale):
    """Per-sample LM-Softmax loss: the target removed from the softmax denominator.

    L_i = −log( e^{s·cos θ_y} / Σ_{j≠y} e^{s·cos θ_j} ) = LSE_{j≠y}(s·cos θ_j) − s·cos θ_y.
    Not Liu et al.'s L-Softmax. It can be negative (never clipped) but is bounded below on unit
    cosines: L_i ≥ log(C−1) − 2s, and, averaged over classes with each feature on its own
    prototype and the prototypes summing to zero, ≥ log(C−1) − s·C/(C−1), reached by the
    regular simplex (derivation in ``docs/papers.md`` §1.3). The normalised softmax
    cross-entropy equals softplus(L_i).

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        cos: (N, C) cosines of a cosine head, C >= 2.
        scale: s > 0.

    Returns:
        (N,) float32 per-sample losses.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos = np.array([[0.9, 0.1, -0.2], [0.3, 0.6, 0.2]])
    >>> lm = np.asarray(km.ops.largest_margin_softmax([0, 1], cos, scale=5.0))
    >>> print(np.round(lm, 4))
    [-3.7986 -1.0259]
    >>> ce = np.asarray(km.ops.margin_softmax([0, 1], cos, scale=5.0))
    >>> bool(np.allclose(np.logaddexp(0.0, lm), ce))   # CE = softplus(LM)
    True

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (largest margin softmax loss).
    """
    check_positive(scale, "scale")
    cos, num_classes = check_scores(cos)
    labels = as_labels(labels, num_classes, cos.shape[0])
    others = ops.logical_not(target_mask(labels, cos.shape[1]))
    lse_others, _ = masked_logsumexp(scale * cos, others, axis=1)
    return lse_others - scale * take_target(cos, labels)
