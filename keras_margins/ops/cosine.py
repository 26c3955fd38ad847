"""Cosine similarity between features and class prototypes."""

from keras import ops

from keras_margins.ops._numerics import EPS
from keras_margins.ops._validation import as_float, static_shape


@ops.custom_gradient
def normalized_matmul(x, w):
    """(x/||x||)·(w/||w||), clipped to [−1, 1], with a hand-written backward pass (the
    gradient autodiff gives through the two normalisations).

    Forward: one matmul x·w, then the (N, C) result is scaled by 1/||x_i|| and 1/||w_j||
    (the normalised (D, C) kernel is never materialised). Backward, with g the upstream
    gradient and cos the output:
        dW = xᵀ·(g/(||x_i|| ||w_j||)) − w_j · Σ_i g_ij cos_ij / ||w_j||²
        dx = (g/(||x_i|| ||w_j||))·Wᵀ − x_i · Σ_j g_ij cos_ij / ||x_i||²
    i.e. one matmul per input plus one fused pass, instead of autodiff through two
    normalisations (the cosine head's step time against Dense + softmax:
    ``benchmarks/step_time.py`` and ``benchmarks/head_cost.py``, figures in
    ``benchmarks/RESULTS.md``). Norms are floored at EPS: zero vectors give cosine 0 and a
    zero gradient (the normalisation has no derivative at 0; the floored one, about 1/EPS,
    would turn inf once cast to a float16 backbone).
    """
    sq_x = ops.sum(ops.square(x), axis=1, keepdims=True)
    sq_w = ops.sum(ops.square(w), axis=0, keepdims=True)
    inv_x = ops.rsqrt(ops.maximum(sq_x, EPS * EPS))
    inv_w = ops.rsqrt(ops.maximum(sq_w, EPS * EPS))
    cos = ops.matmul(x, w) * inv_x * inv_w

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        scaled = upstream * inv_x * inv_w
        weighted = upstream * cos
        dx = ops.matmul(scaled, ops.transpose(w)) - x * (
            ops.square(inv_x) * ops.sum(weighted, axis=1, keepdims=True)
        )
        dw = ops.matmul(ops.transpose(x), scaled) - w * (
            ops.square(inv_w) * ops.sum(weighted, axis=0, keepdims=True)
        )
        return ops.where(sq_x > EPS * EPS, dx, 0.0), ops.where(sq_w > EPS * EPS, dw, 0.0)

    # The clip only removes rounding beyond ±1; the backward pass above ignores it
    # (straight-through), so a cosine that rounds to 1.0000001 still gets a gradient.
    return ops.clip(cos, -1.0, 1.0), grad


def cosine_similarity(features, kernel):
    """Cosines between the rows of ``features`` (N, D) and the columns of ``kernel`` (D, C).

    cos_ij = <x_i/||x_i||, w_j/||w_j||>, clipped to [-1, 1]; a zero vector has cosine 0 with
    everything (never NaN). One matmul whose output is scaled by 1/||x_i||·1/||w_j||, with a
    hand-written backward pass (the normalised kernel is never materialised; see
    ``docs/design.md``, "The fused cosine op").

    Args:
        features: float tensor (N, D).
        kernel: float tensor (D, C), one column per class (a head's ``.kernel``).

    Returns:
        (N, C) cosines, float32 (float64 for float64 inputs).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> x = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    >>> print(np.round(np.asarray(km.ops.cosine_similarity(x, np.eye(2))), 4))
    [[1.  0. ]
     [0.6 0.8]
     [0.  0. ]]

    Reference:
        - Wang et al., 2017. [NormFace: L2 Hypersphere Embedding for Face
          Verification](https://arxiv.org/abs/1704.06369), ACM MM 2017 (normalised features and weights).
    """
    features = as_float(features, "features", 2, "(N, D)")
    kernel = as_float(kernel, "kernel", 2, "(D, C)")
    d_x, d_w = static_shape(features)[1], static_shape(kernel)[0]
    if d_x is not None and d_w is not None and d_x != d_w:
        raise ValueError(
            f"`features` has D={d_x} but `kernel` has D={d_w} rows; kernel must be (D, C)."
        )
    return normalized_matmul(features, kernel)
