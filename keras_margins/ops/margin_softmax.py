"""The generalised margin softmax family (Zhou et al. 2022, SPEC §1.2-1.4)."""

import math

from keras import ops

from keras_margins.ops._common import (
    as_float,
    as_labels,
    check_non_negative,
    check_positive,
    check_scores,
    masked_logsumexp,
    target_mask,
    take_target,
)

# Keep arccos away from ±1 where its derivative is infinite (float32 resolution ~1.2e-7).
_ACOS_CLIP = 1.0 - 1e-6
# sin θ = sqrt(1 - cos²) has an infinite derivative at cos = ±1; floor the radicand.
_SIN_FLOOR = 1e-12


def margin_target(cos_y, m1=1.0, m2=0.0, m3=0.0):
    """ψ(θ) = cos(m1·θ + m2) − m3 on target cosines (N,) (SPEC §1.2, GM-Softmax target).

    * m1 = 1: cos(θ+m2) = cos θ·cos m2 − sin θ·sin m2 (no arccos). Where θ + m2 > π the
      function stops decreasing; the ArcFace convention then uses cos θ − m2·sin m2 − m3.
    * m1 > 1 (SphereFace): with t = m1·θ + m2 and k = ⌊t/π⌋, ψ = (−1)^k cos t − 2k − m3,
      the monotone extension of Liu et al. (2017).

    Example:
        >>> psi = km.ops.margin_target(np.array([1.0, 0.5, -1.0]), m2=0.5)   # ArcFace target
        >>> psi.shape   # (3,)
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
    """Per-sample generalised margin softmax cross-entropy, shape (N,).

    L_i = −log( e^{s·ψ(θ_y)} / (e^{s·ψ(θ_y)} + Σ_{j≠y} e^{s·cos θ_j}) ),
    ψ(θ) = cos(m1·θ + m2) − m3  (Zhou et al. 2022, GM-Softmax; SPEC §1.2).
    NormFace m=(1,0,0); SphereFace m1>1; ArcFace m2>0; CosFace m3>0. The margin transform is
    applied to the N target cosines only (a gather), never to the full (N, C) matrix.

    Example:
        >>> cos = km.ops.cosine_similarity(features, head.kernel)
        >>> loss = km.ops.margin_softmax(labels, cos, scale=64.0, m2=0.5)   # ArcFace
        >>> loss.shape  # (N,)
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
    """Per-sample LM-Softmax loss, shape (N,) (Zhou et al. 2022, Eq. of §1.3 in SPEC).

    L_i = −log( e^{s·cos θ_y} / Σ_{j≠y} e^{s·cos θ_j} ) = logsumexp_{j≠y}(s·cos θ_j) − s·cos θ_y:
    the softmax with the target removed from its denominator (not Liu's L-Softmax). It is
    unbounded below (never clipped), so it keeps enlarging the margins; CE_i = softplus(L_i).

    Example:
        >>> loss = km.ops.largest_margin_softmax(labels, cos, scale=5.0)
        >>> ce = keras.ops.softplus(loss)   # equals the plain normalised-softmax CE
    """
    check_positive(scale, "scale")
    cos, num_classes = check_scores(cos)
    labels = as_labels(labels, num_classes, cos.shape[0])
    others = ops.logical_not(target_mask(labels, cos.shape[1]))
    lse_others, _ = masked_logsumexp(scale * cos, others, axis=1)
    return lse_others - scale * take_target(cos, labels)
