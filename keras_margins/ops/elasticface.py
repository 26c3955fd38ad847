"""ElasticFace (Boutros, Damer, Kirchbuchner & Kuijper, CVPRW 2022): margins drawn from a
normal distribution at every step.

Formulas, defaults and conventions: ``docs/papers.md`` §8.5.
"""

import math

from keras import ops

from keras_margins.ops._validation import check_positive
from keras_margins.ops.angular import (
    angular_margin_target,
    check_per_sample,
    cosines_and_targets,
    softmax_with_target,
    stateless_normal,
)

#: The two geometries: an additive angular margin (ArcFace's) or a cosine one (CosFace's).
KINDS = ("arc", "cos")
#: Arc margins are kept in [0, π − 1e-3] (the continuation past π needs m < π).
ARC_MARGIN_MAX = math.pi - 1e-3


def elastic_margins(count, seed, mean, std, cos_y=None):
    """The step's margins: ``count`` draws from N(mean, std²) (``km.ops.stateless_normal``,
    a pure function of ``seed``). With ``cos_y`` (ElasticFace+): the draws sorted and given
    by rank, the largest margin to the sample with the smallest target cosine (the farthest
    from its class centre) and the smallest to the closest.

    Args:
        count: N.
        seed: int or int32 scalar tensor.
        mean: the margin's mean m.
        std: its standard deviation σ >= 0.
        cos_y: optional (N,) target cosines (the "+" variant).

    Returns:
        (N,) float32 margins.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> m = km.ops.elastic_margins(4, 0, 0.5, 0.05, cos_y=np.array([0.9, 0.1, 0.5, -0.3]))
    >>> bool(np.all(np.argsort(np.asarray(m)) == np.argsort(-np.array([0.9, 0.1, 0.5, -0.3]))))
    True
    """
    if not std >= 0:
        raise ValueError(f"`std` must be >= 0; got {std}.")
    if isinstance(count, bool) or (isinstance(count, int) and count < 1):
        raise ValueError(f"`count` must be a positive integer; got {count!r}.")
    draws = stateless_normal(count, seed, mean, std)
    if cos_y is None:
        return draws
    ascending = ops.sort(draws)
    # rank of each sample when the target cosines are sorted in descending order
    order = ops.argsort(-ops.stop_gradient(ops.cast(cos_y, "float32")))
    rank = ops.argsort(order)
    return ops.take(ascending, rank)


def elastic_face(labels, cos, margins, scale=64.0, kind="arc"):
    """Per-sample ElasticFace loss with given per-sample margins (Boutros et al. 2022,
    ElasticFace-Arc and ElasticFace-Cos):

    ElasticFace-Arc: target logit s·cos(θ_y + E_i); ElasticFace-Cos: s·(cos θ_y − E_i);
    non-target logits s·cos θ_j; E_i ~ N(m, σ²) drawn per sample and step
    (``elastic_margins``). Arc margins are clipped to [0, π − 0.001] and continue past π as
    cos θ − E·sin E (ArcFace's convention).

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        cos: (N, C) cosines of a cosine head.
        margins: (N,) margins E_i (float or tensor).
        scale: s > 0 (default 64.0).
        kind: ``"arc"`` (default) or ``"cos"``.

    Returns:
        (N,) float32 per-sample losses.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos = np.array([[0.9, 0.1, -0.2], [0.3, 0.6, 0.2]])
    >>> out = km.ops.elastic_face([0, 1], cos, np.array([0.5, 0.45]), scale=16.0)
    >>> print(np.round(np.asarray(out), 3))
    [0.    2.046]

    Reference:
        - Boutros et al., 2022. [ElasticFace: Elastic Margin Loss for Deep Face
          Recognition](https://arxiv.org/abs/2109.09416), CVPR Workshops 2022.
    """
    check_positive(scale, "scale")
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}; got {kind!r}.")
    cos, labels, cos_y = cosines_and_targets(labels, cos)
    margins = check_per_sample(margins, "margins", cos.shape[0], "(N,) of margins")
    margins = ops.stop_gradient(ops.cast(margins, cos.dtype))
    if kind == "arc":
        psi = angular_margin_target(cos_y, ops.clip(margins, 0.0, ARC_MARGIN_MAX))
    else:
        psi = cos_y - margins
    return softmax_with_target(labels, scale * psi, scale * cos)
