"""UniFace (Zhou, Jia, Li, Shen & Duan, ICCV 2023): the unified cross-entropy loss, one
threshold (a learned bias) shared by every sample's positive and negative similarities.

Formulas, defaults and conventions: ``docs/papers.md`` §8.6.
"""

import math

from keras import ops

from keras_margins.ops._numerics import target_mask
from keras_margins.ops._validation import check_non_negative, check_positive
from keras_margins.ops.angular import cosines_and_targets


def uniface_initial_bias(num_classes, r=1.0):
    """The bias the authors' code starts from: b̃ = log(10·r·C).

    Example:

    >>> import keras_margins as km
    >>> round(km.ops.uniface_initial_bias(1000), 4)
    9.2103
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2; got {num_classes!r}.")
    check_positive(r, "r")
    return math.log(10.0 * r * num_classes)


def uniface(labels, cos, bias, scale=64.0, margin=0.4, negative_weight=1.0):
    """Per-sample unified cross-entropy with margin, L_uce-m (Zhou et al. 2023):

    L_i = log(1 + e^{−(s·(cos θ_y − m) − b̃)}) + λ·Σ_{j≠y} log(1 + e^{s·cos θ_j − b̃}),

    b̃ the learned bias (the unified threshold is b̃/s), λ the weight of the negative terms
    (λ = 1: L_uce-m; another λ: L_uce-mb-λ). Every log(1 + e^v) is a stable softplus.

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        cos: (N, C) cosines of a cosine head.
        bias: b̃ (float or scalar tensor; gets a gradient when it is a variable).
        scale: s > 0 (default 64.0).
        margin: cosine margin m >= 0 (default 0.4).
        negative_weight: λ >= 0 (default 1.0).

    Returns:
        (N,) float32 per-sample losses.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos = np.array([[0.9, 0.1, -0.2], [0.3, 0.6, 0.2]])
    >>> print(np.round(np.asarray(km.ops.uniface([0, 1], cos, bias=3.4, scale=16.0)), 3))
    [0.164 3.017]

    Reference:
        - Zhou et al., 2023. [UniFace: Unified Cross-Entropy Loss for Deep Face
          Recognition](https://openaccess.thecvf.com/content/ICCV2023/papers/Zhou_UniFace_Unified_Cross-Entropy_Loss_for_Deep_Face_Recognition_ICCV_2023_paper.pdf),
          ICCV 2023.
    """
    check_positive(scale, "scale")
    check_non_negative(margin, "margin")
    check_non_negative(negative_weight, "negative_weight")
    cos, labels, cos_y = cosines_and_targets(labels, cos)
    bias = ops.cast(bias, cos.dtype)
    positive = ops.softplus(bias - scale * (cos_y - margin))
    negatives = ops.softplus(scale * cos - bias)
    negatives = ops.where(target_mask(labels, cos.shape[1]), 0.0, negatives)
    return positive + negative_weight * ops.sum(negatives, axis=1)
