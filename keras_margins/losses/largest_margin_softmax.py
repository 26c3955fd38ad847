"""LM-Softmax (Zhou et al., ICLR 2022)."""

import keras

from keras_margins.losses._base import MarginLoss
from keras_margins.losses.margin_softmax import with_sample_margin
from keras_margins.ops import largest_margin_softmax
from keras_margins.ops._validation import check_positive


@keras.saving.register_keras_serializable(package="keras_margins")
class LargestMarginSoftmax(MarginLoss):
    """LM-Softmax: the softmax with the target removed from its denominator, on cosines.

    L = −log e^{s·cos θ_y} / Σ_{j≠y} e^{s·cos θ_j}, plus ``sample_margin_weight`` · R_sm with
    R_sm = −mean_i γ_i. Not Liu et al.'s L-Softmax. Negative values are normal, but the loss
    is bounded below on unit cosines: L ≥ log(C−1) − 2s per sample (every other prototype at
    −x, i.e. collapsed prototypes), and log(C−1) − s·C/(C−1) when each feature sits on its own
    prototype and the prototypes sum to zero, reached by the regular simplex
    (``docs/papers.md`` §1.3). It is never clipped.

    When to use it. Its weights on the negative classes always sum to one (the target is not
    in the denominator), so unlike softmax-type losses its loss keeps falling as the other
    prototypes move away, after every sample is classified. Where the regular simplex exists
    (C ≤ D + 1) this is what takes the class margin to the bound arccos(−1/(C−1)), the
    paper's result (``docs/papers.md`` §1.3 derives the bound). Two cases need care:

    * Many classes (C ≫ D): grow the scale with C; the authors' s = 5 is too small for
      a thousand classes.
    * A learned head on a 2-D embedding (C > D + 1, outside the paper's result): for 10
      classes at the default s = 5 and above, the loss is lower with some prototypes merged
      than with evenly spaced ones, so learned prototypes end unevenly spread or merged.
      Use NormFace or ArcFace there, a small scale, or keep LM-Softmax and fix the
      prototypes evenly: ``keras.Sequential([backbone, km.layers.PEDCCHead(C)])``.

    Measured figures (digits, 1 000 synthetic classes, the 2-D minima): the README ("When to
    use LM-Softmax") and ``docs/lm_softmax_study.md`` (``examples/margin_study.py``,
    ``examples/lm_softmax_minima.py``).

    Args:
        scale: s > 0 (default 5.0, the authors' script default for visual classification;
            with many classes use a larger s, e.g. 16 for 1 000 classes).
        sample_margin_weight: λ >= 0 of the sample-margin regulariser (default 0.0).
        divide_by_scale: divide the loss by s as the authors' public code does; this only
            rescales the gradient (default False, the paper's formula).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.LMSoftmax(scale=5.0, sample_margin_weight=1.0))
        >>> model.fit(x, y)
        >>> # 2-D features: keep the prototypes fixed and evenly spread on the circle
        >>> flat = keras.Sequential([backbone_2d, km.layers.PEDCCHead(10)])
        >>> flat.compile("adam", loss=km.losses.LMSoftmax(scale=5.0))

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (largest margin softmax loss, sample-margin regularisation).
    """

    score_kind = "cosine"

    def __init__(self, scale=5.0, sample_margin_weight=0.0, divide_by_scale=False, **kwargs):
        check_positive(scale, "scale")
        if sample_margin_weight < 0:
            raise ValueError(f"`sample_margin_weight` must be >= 0; got {sample_margin_weight}.")
        kwargs.setdefault("name", "largest_margin_softmax")
        self.scale = float(scale)
        self.sample_margin_weight = float(sample_margin_weight)
        self.divide_by_scale = bool(divide_by_scale)
        super().__init__(**kwargs)

    def per_sample(self, labels, cos):
        loss = largest_margin_softmax(labels, cos, self.scale)
        if self.divide_by_scale:
            loss = loss / self.scale
        return with_sample_margin(loss, labels, cos, self.sample_margin_weight)


LMSoftmax = LargestMarginSoftmax
