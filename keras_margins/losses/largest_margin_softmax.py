"""LM-Softmax (Zhou et al., ICLR 2022, SPEC §1.3)."""

import keras

from keras_margins.losses._base import MarginLoss
from keras_margins.losses.margin_softmax import _with_sample_margin
from keras_margins.ops import largest_margin_softmax
from keras_margins.ops._common import check_positive


@keras.saving.register_keras_serializable(package="keras_margins")
class LargestMarginSoftmax(MarginLoss):
    """LM-Softmax: L = −log e^{s·cos θ_y} / Σ_{j≠y} e^{s·cos θ_j} (SPEC §1.3), the softmax
    with the target removed from the denominator, plus ``sample_margin_weight``·R_sm (§1.4).

    The loss is unbounded below by design (it keeps widening the margins), so negative values
    are normal. Default ``scale=5.0`` is the authors' script default for visual
    classification. ``divide_by_scale=True`` divides by s as the public code does (this only
    rescales gradients).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.LMSoftmax(scale=5.0, sample_margin_weight=1.0))
        >>> model.fit(x, y)
    """

    def __init__(self, scale=5.0, sample_margin_weight=0.0, divide_by_scale=False, **kwargs):
        check_positive(scale, "scale")
        if sample_margin_weight < 0:
            raise ValueError(f"`sample_margin_weight` must be >= 0; got {sample_margin_weight}.")
        kwargs.setdefault("name", "largest_margin_softmax")
        super().__init__(
            scale=float(scale),
            sample_margin_weight=float(sample_margin_weight),
            divide_by_scale=bool(divide_by_scale),
            **kwargs,
        )

    def per_sample(self, labels, cos):
        loss = largest_margin_softmax(labels, cos, self.scale)
        if self.divide_by_scale:
            loss = loss / self.scale
        return _with_sample_margin(loss, labels, cos, self.sample_margin_weight)


LMSoftmax = LargestMarginSoftmax
