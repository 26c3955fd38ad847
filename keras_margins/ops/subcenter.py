"""Sub-center ArcFace (Deng, Guo, Liu, Gong & Zafeiriou, ECCV 2020): K sub-centres per class,
a sample only needs to be close to one of them.

Formulas, defaults and conventions: ``docs/papers.md`` §8.1.
"""

from keras import ops

from keras_margins.ops._validation import as_float, static_shape


def subcenter_max(cos, sub_centers, keep=None):
    """Class cosines from sub-centre cosines: cos θ_ij = max_k cos θ_ij,k (Deng et al. 2020,
    sub-center ArcFace's max pooling over the K sub-centres of class j).

    Args:
        cos: (N, C·K) cosines with the K sub-centres of class j in columns j·K … j·K + K − 1.
        sub_centers: K >= 1.
        keep: optional (C, K) mask (bool or 0/1) of the sub-centres in use (the dominant ones
            after dropping); a class must keep at least one. Dropped sub-centres count as −1.

    Returns:
        (N, C) cosines.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos = np.array([[0.1, 0.7, -0.2, 0.3]])           # C = 2 classes, K = 2
    >>> print(np.asarray(km.ops.subcenter_max(cos, 2)))
    [[0.7 0.3]]
    >>> print(np.asarray(km.ops.subcenter_max(cos, 2, keep=np.array([[1, 0], [1, 0]]))))
    [[ 0.1 -0.2]]
    """
    if not isinstance(sub_centers, int) or isinstance(sub_centers, bool) or sub_centers < 1:
        raise ValueError(f"`sub_centers` must be an integer >= 1; got {sub_centers!r}.")
    cos = as_float(cos, "cos", 2, "(N, C·K) of sub-centre cosines")
    columns = static_shape(cos)[1]
    if columns is not None and columns % sub_centers:
        raise ValueError(
            f"`cos` has {columns} columns, not a multiple of sub_centers={sub_centers}."
        )
    if sub_centers == 1 and keep is None:
        return cos
    grouped = ops.reshape(cos, (-1, columns // sub_centers, sub_centers))
    if keep is not None:
        keep = ops.cast(keep, "bool")
        grouped = ops.where(ops.expand_dims(keep, 0), grouped, -1.0)
    return ops.max(grouped, axis=2)
