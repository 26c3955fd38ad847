"""Cosine similarity between features and class prototypes."""

from keras import ops

from keras_margins.ops._common import as_float, l2_normalize, static_shape


def cosine_similarity(features, kernel):
    """Cosines between L2-normalised rows of ``features`` (N, D) and columns of ``kernel`` (D, C).

    cos_ij = <x_i/||x_i||, w_j/||w_j||> (SPEC §0), clipped to [-1, 1]. Zero vectors give
    cosine 0 (never NaN). Returns (N, C) float32.

    Example:
        >>> cos = km.ops.cosine_similarity(np.eye(3, 4), np.ones((4, 5)))
        >>> cos.shape
        (3, 5)
    """
    features = as_float(features, "features", 2, "(N, D)")
    kernel = as_float(kernel, "kernel", 2, "(D, C)")
    d_x, d_w = static_shape(features)[1], static_shape(kernel)[0]
    if d_x is not None and d_w is not None and d_x != d_w:
        raise ValueError(
            f"`features` has D={d_x} but `kernel` has D={d_w} rows; kernel must be (D, C)."
        )
    cos = ops.matmul(l2_normalize(features, axis=1), l2_normalize(kernel, axis=0))
    return ops.clip(cos, -1.0, 1.0)
