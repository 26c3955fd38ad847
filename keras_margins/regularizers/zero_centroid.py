"""Zero-centroid regularisation of class prototypes (Zhou et al. 2022, SPEC §1.5)."""

import keras

from keras_margins.ops import zero_centroid


@keras.saving.register_keras_serializable(package="keras_margins")
class ZeroCentroid(keras.regularizers.Regularizer):
    """λ·|| Σ_k w_k/||w_k|| ||² on a (D, C) kernel (SPEC §1.5, R_w): keeps the prototypes'
    centroid at the origin, which enlarges tail-class margins on imbalanced data.
    ``reduction="mean"`` uses the paper's ||(1/C) Σ_k ŵ_k||² instead of the public code's sum.
    Default λ = 5 (the authors' script, ``--reg 5``).

    Example:
        >>> head = km.layers.LargestMarginHead(10, kernel_regularizer=km.regularizers.ZeroCentroid(5.0))
    """

    def __init__(self, weight=5.0, reduction="sum"):
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
