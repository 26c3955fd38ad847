"""AdaFace (Kim, Jain & Liu, CVPR 2022): a margin that adapts to image quality, read off the
feature norm relative to running batch statistics.

Formulas, defaults and conventions: ``docs/papers.md`` §8.4.
"""

import math

from keras import ops

from keras_margins.ops._validation import check_positive
from keras_margins.ops.angular import (
    check_momentum,
    check_per_sample,
    cosines_and_targets,
    sin_from_cos,
    softmax_with_target,
)

#: The authors' stability constants: θ is kept in [ε, π − ε], σ gets + ε.
ADAFACE_EPS = 1e-3
#: Norms are clipped to this range before the statistics (the authors' code).
NORM_RANGE = (1e-3, 100.0)


def adaface_norm_stats(norms, mean, std, momentum=0.99):
    """Running statistics of the feature norms (Kim et al. 2022, the EMA of μ and σ):
    μ ← momentum·μ + (1 − momentum)·mean_B(‖z‖), σ ← momentum·σ + (1 − momentum)·std_B(‖z‖),
    norms clipped to [0.001, 100], the batch std unbiased (N − 1, as ``torch.std``; 0 for a
    single sample), no gradient. A non-finite batch leaves the statistics unchanged.

    Args:
        norms: (N,) feature norms.
        mean, std: the previous μ, σ (scalars).
        momentum: weight of the previous values, in [0, 1) (default 0.99; the paper's α = 0.01
            is 1 − momentum).

    Returns:
        ``(mean, std)`` scalar tensors.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> m, s = km.ops.adaface_norm_stats(np.array([10.0, 30.0]), 20.0, 100.0)
    >>> print(round(float(m), 4), round(float(s), 4))
    20.0 99.1414
    """
    check_momentum(momentum)
    norms = ops.clip(ops.stop_gradient(ops.cast(norms, "float32")), *NORM_RANGE)
    if len(norms.shape) != 1:
        raise ValueError(f"`norms` must be (N,) feature norms; got shape {tuple(norms.shape)}.")
    count = ops.cast(ops.shape(norms)[0], "float32")
    batch_mean = ops.mean(norms)
    batch_var = ops.sum(ops.square(norms - batch_mean)) / ops.maximum(count - 1.0, 1.0)
    batch_std = ops.sqrt(ops.maximum(batch_var, 0.0))
    mean, std = ops.cast(mean, "float32"), ops.cast(std, "float32")
    new_mean = momentum * mean + (1.0 - momentum) * batch_mean
    new_std = momentum * std + (1.0 - momentum) * batch_std
    finite = ops.logical_and(ops.isfinite(new_mean), ops.isfinite(new_std))
    return ops.where(finite, new_mean, mean), ops.where(finite, new_std, std)


def adaface_margin_scaler(norms, mean, std, h=0.333):
    """ẑ_i = clip(h·(‖z_i‖ − μ)/(σ + ε), −1, 1) (Kim et al. 2022, the margin scaler; ε = 1e-3 as in the
    authors' code), with the norms clipped to [0.001, 100] and no gradient.

    Example:

    >>> import numpy as np
    >>> from keras_margins.ops.adaface import adaface_margin_scaler
    >>> print(np.round(np.asarray(adaface_margin_scaler(np.array([10.0, 20.0, 90.0]), 20.0, 10.0)), 4))
    [-0.333  0.     1.   ]
    """
    norms = ops.clip(ops.stop_gradient(ops.cast(norms, "float32")), *NORM_RANGE)
    mean = ops.stop_gradient(ops.cast(mean, "float32"))
    std = ops.stop_gradient(ops.cast(std, "float32"))
    return ops.clip(h * (norms - mean) / (std + ADAFACE_EPS), -1.0, 1.0)


def adaface_target(cos_y, scaler, margin=0.4):
    """cos(clip(θ_y + g_angle, ε, π − ε)) − g_add with g_angle = −m·ẑ, g_add = m·ẑ + m
    (Kim et al. 2022, the adaptive margin function), without arccos: cos(θ + g) =
    cos θ·cos g − sin θ·sin g, and the two clip ends found by comparing cos θ with cos(ε − g)
    and cos(π − ε − g)."""
    g_angle = -margin * scaler
    g_add = margin + margin * scaler
    cos_g, sin_g = ops.cos(g_angle), ops.sin(g_angle)
    shifted = cos_y * cos_g - sin_from_cos(cos_y) * sin_g
    eps = ADAFACE_EPS
    # θ + g < ε  <=>  θ < ε − g (possible only when ε − g > 0)  <=>  cos θ > cos(ε − g)
    below = ops.logical_and(eps - g_angle > 0.0, cos_y > ops.cos(eps - g_angle))
    # θ + g > π − ε  <=>  θ > π − ε − g (possible only when π − ε − g < π)
    above = ops.logical_and(g_angle > -eps, cos_y < ops.cos(math.pi - eps - g_angle))
    angular = ops.where(below, math.cos(eps), ops.where(above, math.cos(math.pi - eps), shifted))
    return angular - g_add


def adaface(labels, cos, norms, mean, std, scale=64.0, margin=0.4, h=0.333):
    """Per-sample AdaFace loss (Kim et al. 2022, the AdaFace loss):

    L_i = −log e^{s·f(θ_y)} / (e^{s·f(θ_y)} + Σ_{j≠y} e^{s·cos θ_j}),
    f(θ_y) = cos(clip(θ_y − m·ẑ_i, ε, π − ε)) − (m·ẑ_i + m),

    ẑ_i = clip(h·(‖z_i‖ − μ)/(σ + ε), −1, 1) from the running norm statistics μ, σ
    (``adaface_norm_stats``). A low norm (low image quality, ẑ = −1) gives ArcFace's
    cos(θ + m), which de-emphasises hard samples; ẑ = 0 gives CosFace's cos θ − m; a high norm
    (ẑ = 1) gives cos(θ − m) − 2m, which emphasises hard samples. The norm gets no gradient.

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        cos: (N, C) cosines of a cosine head.
        norms: (N,) feature norms.
        mean, std: μ, σ of the norms (scalars).
        scale: s > 0 (default 64.0).
        margin: m in [0, π/2) (default 0.4).
        h: concentration h > 0 (default 0.333).

    Returns:
        (N,) float32 per-sample losses.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos = np.array([[0.9, 0.1, -0.2], [0.3, 0.6, 0.2]])
    >>> out = km.ops.adaface([0, 1], cos, np.array([10.0, 30.0]), 20.0, 10.0, scale=16.0)
    >>> print(np.round(np.asarray(out), 3))
    [1.000e-03 2.396e+00]

    Reference:
        - Kim, Jain & Liu, 2022. [AdaFace: Quality Adaptive Margin for Face
          Recognition](https://arxiv.org/abs/2204.00964), CVPR 2022.
    """
    check_positive(scale, "scale")
    check_positive(h, "h")
    if not 0.0 <= margin < math.pi / 2:
        raise ValueError(f"`margin` (radians) must be in [0, π/2); got {margin}.")
    cos, labels, cos_y = cosines_and_targets(labels, cos)
    norms = check_per_sample(norms, "norms", cos.shape[0], "(N,) of feature norms")
    scaler = adaface_margin_scaler(norms, mean, std, h)
    target = adaface_target(cos_y, ops.cast(scaler, cos.dtype), margin)
    return softmax_with_target(labels, scale * target, scale * cos)
