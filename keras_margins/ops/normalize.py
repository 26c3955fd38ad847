"""L2 normalisation that keeps zero vectors at zero (public op ``km.ops.l2_normalize``).
"""

from keras import ops

from keras_margins.ops._numerics import EPS
from keras_margins.ops._validation import check_not_nan


def l2_normalize(x, axis=-1):
    """``x / max(||x||, 1e-12)`` along ``axis``: zero vectors stay zero (never NaN).

    Args:
        x: float tensor.
        axis: axis to normalise along (default -1).

    Returns:
        A tensor of the shape of ``x``, unit norm along ``axis`` except for zero vectors.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> print(np.round(np.asarray(km.ops.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))), 4))
    [[0.6 0.8]
     [0.  0. ]]
    """
    check_not_nan(x, "x")
    sq = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(sq, EPS * EPS))
