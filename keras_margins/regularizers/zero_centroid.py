"""Zero-centroid regularisation of class prototypes (Zhou et al., ICLR 2022)."""

import keras

from keras_margins._arguments import reject_unknown
from keras_margins.ops import zero_centroid


@keras.saving.register_keras_serializable(package="keras_margins")
class ZeroCentroid(keras.regularizers.Regularizer):
    """λ·R_w on a (D, C) kernel, R_w = ||Σ_k ŵ_k||² (sum form) or ||(1/C) Σ_k ŵ_k||² (mean form).

    Keeps the unit prototypes' centroid at the origin, which enlarges the tail-class margins
    on imbalanced data. The default ``reduction="sum"`` is the authors' public code; the
    paper writes the mean form, which is the sum form divided by C² (multiply λ by C² to get
    the same gradient with ``reduction="mean"``). Use it as a head's ``kernel_regularizer``.

    Args:
        weight: λ >= 0 (default 5.0, the authors' script, ``--reg 5``, for the sum form).
        reduction: ``"sum"`` (default) or ``"mean"``.
        **kwargs: none are accepted: an unknown keyword is a ``TypeError`` naming the closest
            valid argument (``weigth`` -> ``weight``).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> print(float(km.regularizers.ZeroCentroid(5.0)(np.eye(2))))   # 5 · ||(1, 1)||²
    10.0
    >>> print(float(km.regularizers.ZeroCentroid(5.0, reduction="mean")(np.eye(2))))   # / C²
    2.5
    >>> head = km.layers.LargestMarginHead(10, kernel_regularizer=km.regularizers.ZeroCentroid())

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (zero-centroid regularisation).
    """

    def __init__(self, weight=5.0, reduction="sum", **kwargs):
        reject_unknown(type(self), kwargs, accepted=())
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0; got {weight}.")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"`reduction` must be 'sum' or 'mean'; got {reduction!r}.")
        self.weight = float(weight)
        self.reduction = reduction

    def __call__(self, kernel):
        value = zero_centroid(kernel)
        if self.reduction == "mean":
            value = value / float(kernel.shape[1]) ** 2
        return self.weight * value

    def get_config(self):
        return {"weight": self.weight, "reduction": self.reduction}
