"""LM-Softmax (Zhou et al., ICLR 2022)."""

import keras

from keras_margins.losses._base import MarginLoss
from keras_margins.losses.margin_softmax import with_sample_margin
from keras_margins.ops import largest_margin_softmax
from keras_margins.ops._common import check_positive


@keras.saving.register_keras_serializable(package="keras_margins")
class LargestMarginSoftmax(MarginLoss):
    """LM-Softmax: the softmax with the target removed from its denominator, on cosines.

    L = −log e^{s·cos θ_y} / Σ_{j≠y} e^{s·cos θ_j}, plus ``sample_margin_weight`` · R_sm with
    R_sm = −mean_i γ_i. Not Liu et al.'s L-Softmax. Negative values are normal, but the loss
    is bounded below on unit cosines: L ≥ log(C−1) − 2s per sample (every other prototype at
    −x, i.e. collapsed prototypes), and log(C−1) − s·C/(C−1) when each feature sits on its own
    prototype and the prototypes sum to zero, reached by the regular simplex
    (``docs/papers.md`` §1.3). It is never clipped.

    Args:
        scale: s > 0 (default 5.0, the authors' script default for visual classification).
        sample_margin_weight: λ >= 0 of the sample-margin regulariser (default 0.0).
        divide_by_scale: divide the loss by s as the authors' public code does; this only
            rescales the gradient (default False, the paper's formula).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.LMSoftmax(scale=5.0, sample_margin_weight=1.0))
        >>> model.fit(x, y)

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR 2022 (largest margin softmax loss, sample-margin regularisation).
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
        return with_sample_margin(loss, labels, cos, self.sample_margin_weight)


LMSoftmax = LargestMarginSoftmax
