"""Building blocks of the adaptive-margin losses (sub-center ArcFace, CurricularFace, MagFace,
AdaFace, ElasticFace, UniFace): the additive angular target with a per-sample margin, the
feature norm, a counter-based normal draw that compiles under XLA, and the softmax
cross-entropy with a replaced target logit.

Formulas, defaults and conventions: ``docs/papers.md`` §8.
"""

import math

from keras import ops

from keras_margins.ops._numerics import EPS, take_target, target_mask
from keras_margins.ops._validation import as_float, as_labels, check_scores

#: sin θ = sqrt(1 − cos²θ) has an infinite derivative at cos = ±1; the radicand is floored.
SIN_FLOOR = 1e-12


def check_angle(value, name, upper=math.pi):
    """Python-number angular margins in radians: ``ValueError`` naming ``name`` unless in
    [0, upper)."""
    if not 0.0 <= value < upper:
        raise ValueError(
            f"`{name}` (an angular margin, radians) must be in [0, {upper:.4g}); got {value}. "
            "Convert degrees with math.radians."
        )


def check_momentum(momentum):
    """``ValueError`` unless the weight of a moving average's previous value is in [0, 1)."""
    if isinstance(momentum, bool) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"`momentum` must be in [0, 1); got {momentum!r}.")


def check_per_sample(values, name, rows, what):
    """A float (N,) tensor of per-sample values matching ``rows`` (N) where both are known."""
    values = as_float(values, name, 1, what)
    n = values.shape[0]
    if n is not None and rows is not None and n != rows:
        raise ValueError(f"`{name}` has {n} entries but the cosines have {rows} rows.")
    return values


def sin_from_cos(cos):
    """sin θ = sqrt(max(1 − cos²θ, 1e-12)) for θ ∈ [0, π] (finite gradient at cos = ±1)."""
    return ops.sqrt(ops.maximum(1.0 - ops.square(cos), SIN_FLOOR))


def angular_margin_target(cos_y, margin):
    """cos(θ + m) for target cosines cos θ and additive angular margins m (scalar or (N,)),
    with ArcFace's monotone continuation cos θ − m·sin m where θ + m > π.

    No arccos: cos(θ + m) = cos θ·cos m − sin θ·sin m, so values and gradients stay finite at
    cos θ = ±1. The gradient reaches ``margin`` when it is a tensor (MagFace's margin depends
    on the feature norm).

    Args:
        cos_y: (N,) target cosines.
        margin: float or (N,) tensor of margins in radians, in [0, π).

    Returns:
        (N,) tensor ψ(θ).

    Example:

    >>> import numpy as np
    >>> from keras_margins.ops.angular import angular_margin_target
    >>> out = angular_margin_target(np.array([1.0, 0.5, -1.0]), np.array([0.5, 0.5, 0.2]))
    >>> print(np.round(np.asarray(out), 4))
    [ 0.8776  0.0236 -1.0397]

    Reference:
        - Deng et al., 2019. [ArcFace](https://arxiv.org/abs/1801.07698), CVPR 2019 (additive angular margin).
    """
    cos_y = ops.convert_to_tensor(cos_y)
    margin = ops.cast(margin, cos_y.dtype)
    cos_m, sin_m = ops.cos(margin), ops.sin(margin)
    shifted = cos_y * cos_m - sin_from_cos(cos_y) * sin_m
    # θ + m > π  <=>  cos θ < cos(π − m) = −cos m
    fallback = cos_y - margin * sin_m
    return ops.where(cos_y > -cos_m, shifted, fallback)


def feature_norm(features):
    """‖x_i‖ of each row of ``features`` (N, D), float32 (float64 kept), with the square root
    floored at 1e-12 so the gradient is finite at x = 0: MagFace's and AdaFace's quality score.

    Args:
        features: (N, D) embeddings (before any normalisation).

    Returns:
        (N,) norms.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> print(np.asarray(km.ops.feature_norm(np.array([[3.0, 4.0], [0.0, 0.0]]))))
    [5.e+00 1.e-12]
    """
    features = as_float(features, "features", 2, "(N, D) of embeddings")
    return ops.sqrt(ops.maximum(ops.sum(ops.square(features), axis=-1), EPS * EPS))


def cosines_and_targets(labels, cos):
    """The start of every per-sample op here: the (N, C) cosines checked (``check_scores``),
    the labels checked against C and N (int32), and the (N,) target cosines cos θ_y.

    Returns:
        (cos, labels, cos_y).
    """
    cos, num_classes = check_scores(cos)
    labels = as_labels(labels, num_classes, cos.shape[0])
    return cos, labels, take_target(cos, labels)


def softmax_with_target(labels, target_logit, other_logits):
    """−log softmax of the target: LSE over the row of ``other_logits`` (N, C) with the column
    of ``labels`` (N,) replaced by ``target_logit`` (N,), minus ``target_logit``."""
    mask = target_mask(labels, other_logits.shape[1])
    logits = ops.where(mask, ops.expand_dims(target_logit, 1), other_logits)
    return ops.logsumexp(logits, axis=1) - target_logit


# ------------------------------------------------------------------ counter-based random
def _int32(value):
    return ((int(value) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


_MIX_1 = _int32(0x7FEB352D)
_MIX_2 = _int32(0x846CA68B)


def hash_int32(x):
    """A 32-bit integer finaliser (xor-shift / multiply rounds) in wrapping int32 arithmetic:
    the same bits on every backend and under XLA."""
    x = ops.cast(x, "int32")
    x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))
    x = x * _MIX_1
    x = ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 15), 0x1FFFF))
    x = x * _MIX_2
    return ops.bitwise_xor(x, ops.bitwise_and(ops.right_shift(x, 16), 0xFFFF))


def _uniform_open(bits):
    """(0, 1) floats from the top 24 bits of int32 hashes (exact in float32)."""
    top = ops.cast(ops.bitwise_and(ops.right_shift(bits, 8), 0xFFFFFF), "float32")
    return (top + 0.5) / float(2**24)


def stateless_normal(count, seed, mean=0.0, stddev=1.0):
    """``count`` draws from N(mean, stddev²), a pure function of ``seed`` (Box–Muller on
    hashed counters): no random state, so it compiles under XLA and repeats. The hashed bits
    are the same on every backend; the normals agree to float32 rounding of log and cos.

    Args:
        count: number of draws (int, or an int32 scalar tensor for a dynamic batch).
        seed: int or int32 scalar tensor; a new seed gives independent draws (change it every
            step, e.g. seed + step counter).
        mean: mean (default 0.0).
        stddev: standard deviation (default 1.0).

    Returns:
        (count,) float32 tensor.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> z = np.asarray(km.ops.stateless_normal(100_000, seed=3))
    >>> bool(abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02)
    True
    """
    if isinstance(count, bool) or (isinstance(count, int) and count < 0) or isinstance(count, float):
        raise ValueError(f"`count` must be a non-negative integer; got {count!r}.")
    if not stddev >= 0:
        raise ValueError(f"`stddev` must be >= 0; got {stddev}.")
    if isinstance(seed, bool) or isinstance(seed, (str, bytes, float)):
        raise ValueError(f"`seed` must be an integer or an int32 scalar tensor; got {seed!r}.")
    if isinstance(seed, int):
        seed = _int32(seed)
    key = hash_int32(hash_int32(seed) + _int32(0x9E3779B9))
    index = ops.arange(count, dtype="int32") * 2
    u1 = _uniform_open(hash_int32(index + key))
    u2 = _uniform_open(hash_int32(index + 1 + key))
    z = ops.sqrt(-2.0 * ops.log(u1)) * ops.cos((2.0 * math.pi) * u2)
    return mean + stddev * z


def mix_seed(seed, step):
    """The int32 seed of training step ``step`` for the user's ``seed`` (wrapping)."""
    return hash_int32(ops.cast(step, "int32") + hash_int32(_int32(seed)))
