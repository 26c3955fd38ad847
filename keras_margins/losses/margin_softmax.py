"""The generalised margin softmax losses on a cosine head (Zhou et al., ICLR 2022)."""

import math
import sys
import warnings

import keras

from keras_margins._arguments import reject_unknown
from keras_margins.losses._base import MarginLoss
from keras_margins.ops import margin_softmax, sample_margin
from keras_margins.ops._validation import check_positive


def with_sample_margin(loss, labels, cos, weight):
    """loss_i + λ·(−γ_i): per-sample form of L + λ·R_sm, R_sm = −mean γ (sample-margin regularisation)."""
    if weight:
        return loss - weight * sample_margin(labels, cos)
    return loss


@keras.saving.register_keras_serializable(package="keras_margins")
class MarginSoftmax(MarginLoss):
    """Generalised margin softmax (GM-Softmax) on cosines (Zhou et al. 2022):

    L = −log e^{s·ψ(θ_y)} / (e^{s·ψ(θ_y)} + Σ_{j≠y} e^{s·cos θ_j}),  ψ(θ) = cos(m1·θ+m2) − m3,

    plus ``sample_margin_weight`` · R_sm with R_sm = −mean_i γ_i (the sample-margin
    regulariser). ``y_pred`` are the (N, C) cosines of a
    cosine head (``LargestMarginHead``, ``PEDCCHead``); ``y_true`` integer labels.
    The insightface "combined" margin is ``MarginSoftmax(64, m1=1.0, m2=0.3, m3=0.2)``.
    ``m2`` is an angle in radians (convert degrees with ``math.radians``); above 1.5 rad a
    ``UserWarning`` says it looks like degrees. ``m3`` is a cosine offset (as in
    pytorch-metric-learning's ``CosFaceLoss``), not an angle.

    Args:
        scale: s > 0 (default 64.0).
        m1: multiplicative angular margin, >= 1 (default 1.0).
        m2: additive angular margin in radians, in [0, π) (default 0.0).
        m3: additive cosine margin, >= 0 (default 0.0).
        sample_margin_weight: λ >= 0 of the sample-margin regulariser (default 0.0).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.MarginSoftmax(64.0, m2=0.3, m3=0.2))
        >>> model.fit(x, y)

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (generalised margin softmax, sample-margin regularisation).
    """

    score_kind = "cosine"

    def __init__(self, scale=64.0, m1=1.0, m2=0.0, m3=0.0, sample_margin_weight=0.0, **kwargs):
        check_positive(scale, "scale")
        if m1 < 1.0 or not 0.0 <= m2 < math.pi or m3 < 0.0:
            raise ValueError(
                f"margins must satisfy m1 >= 1, 0 <= m2 < π, m3 >= 0; got m1={m1}, m2={m2}, m3={m3}. "
                "The angular margin m2 (ArcFace's `margin`) is in radians: convert degrees with "
                "math.radians."
            )
        if m2 > DEGREES_HINT:
            warnings.warn(
                f"The additive angular margin m2 (ArcFace's `margin`) is {m2} rad "
                f"({math.degrees(m2):.0f}°), larger than {DEGREES_HINT} rad: was it meant in "
                f"degrees (pytorch-metric-learning's convention)? Margins are in radians: "
                f"math.radians({m2}) = {math.radians(m2):.4g}.",
                UserWarning,
                stacklevel=_user_stacklevel(),
            )
        if sample_margin_weight < 0:
            raise ValueError(f"`sample_margin_weight` must be >= 0; got {sample_margin_weight}.")
        kwargs.setdefault("name", _default_name(type(self)))
        self.scale = float(scale)
        self.m1 = float(m1)
        self.m2 = float(m2)
        self.m3 = float(m3)
        self.sample_margin_weight = float(sample_margin_weight)
        super().__init__(**kwargs)

    def per_sample(self, labels, cos):
        loss = margin_softmax(labels, cos, self.scale, self.m1, self.m2, self.m3)
        return with_sample_margin(loss, labels, cos, self.sample_margin_weight)


#: Above this additive angular margin (rad, about 86°) the value probably is in degrees.
DEGREES_HINT = 1.5


def _user_stacklevel():
    """``stacklevel`` of the first frame outside this module (the user's constructor call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level


def _default_name(cls):
    out = []
    for i, ch in enumerate(cls.__name__):
        if ch.isupper() and i and not cls.__name__[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


class _Preset(MarginSoftmax):
    """A MarginSoftmax with fixed (m1, m2, m3) roles: its config holds only the preset's own
    constructor arguments (``scale``, ``margin``, ``sample_margin_weight``)."""

    #: Set by the preset itself: passing one is a TypeError (the config would not keep it).
    hidden_arguments = ("m1", "m2", "m3")

    @classmethod
    def refuse_hidden(cls, kwargs):
        reject_unknown(cls, {k: kwargs[k] for k in cls.hidden_arguments if k in kwargs})


@keras.saving.register_keras_serializable(package="keras_margins")
class NormFace(_Preset):
    """NormFace (Wang et al. 2017): normalised softmax with logits s·cos θ, no margin.

    ``MarginSoftmax`` with m = (1, 0, 0).

    Args:
        scale: s > 0 (default 16.0, a common fixed scale for NormFace).
        sample_margin_weight: λ >= 0 of the sample-margin regulariser (default 0.0).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model.compile("adam", loss=km.losses.NormFace(scale=16.0))

    Reference:
        - Wang et al., 2017. [NormFace: L2 Hypersphere Embedding for Face
          Verification](https://arxiv.org/abs/1704.06369), ACM MM 2017.
    """

    def __init__(self, scale=16.0, sample_margin_weight=0.0, **kwargs):
        self.refuse_hidden(kwargs)
        super().__init__(scale, sample_margin_weight=sample_margin_weight, **kwargs)


@keras.saving.register_keras_serializable(package="keras_margins")
class SphereFace(_Preset):
    """Feature-normalised SphereFace: ``MarginSoftmax`` with m1 = ``margin``, m2 = m3 = 0.

    Target logit s·ψ(θ_y) with ψ(θ) = (−1)^k cos(m·θ) − 2k, k = ⌊m·θ/π⌋ (Liu et al.'s monotone
    extension of cos(m·θ), used here for real m), non-target logits s·cos θ_j, on
    L2-normalised features *and* prototypes with a fixed scale s. This is not the original
    A-Softmax (unnormalised features, logits scaled by ||x||, integer m = 4, annealing) and not
    pytorch-metric-learning's ``SphereFaceLoss`` (which scales the logits by ||x|| and
    truncates the margin to an integer): see ``docs/papers.md`` §1.2.

    Args:
        scale: s > 0 (default 30.0).
        margin: multiplicative angular margin m >= 1, any real (default 1.5; both defaults
            are the usual setting of feature-normalised SphereFace re-implementations).
        sample_margin_weight: λ >= 0 of the sample-margin regulariser (default 0.0).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model.compile("adam", loss=km.losses.SphereFace(scale=30.0, margin=1.5))

    Reference:
        - Liu et al., 2017. [SphereFace: Deep Hypersphere Embedding for Face
          Recognition](https://arxiv.org/abs/1704.08063), CVPR 2017.
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (SphereFace as a case of the generalised margin softmax).
    """

    def __init__(self, scale=30.0, margin=1.5, sample_margin_weight=0.0, **kwargs):
        self.refuse_hidden(kwargs)
        super().__init__(scale, m1=margin, sample_margin_weight=sample_margin_weight, **kwargs)
        self.margin = self.m1


@keras.saving.register_keras_serializable(package="keras_margins")
class CosFace(_Preset):
    """CosFace / AM-Softmax (Wang et al. 2018): target logit s·(cos θ_y − m).

    ``MarginSoftmax`` with m3 = ``margin`` (a cosine offset, as in pytorch-metric-learning's
    ``CosFaceLoss``, whose values it matches).

    Args:
        scale: s > 0 (default 64.0, the CosFace paper).
        margin: m >= 0 (default 0.35, the CosFace paper).
        sample_margin_weight: λ >= 0 of the sample-margin regulariser (default 0.0).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model.compile("adam", loss=km.losses.CosFace(scale=64.0, margin=0.35))

    Reference:
        - Wang et al., 2018. [CosFace: Large Margin Cosine Loss for Deep Face
          Recognition](https://arxiv.org/abs/1801.09414), CVPR 2018.
    """

    def __init__(self, scale=64.0, margin=0.35, sample_margin_weight=0.0, **kwargs):
        self.refuse_hidden(kwargs)
        super().__init__(scale, m3=margin, sample_margin_weight=sample_margin_weight, **kwargs)
        self.margin = self.m3


@keras.saving.register_keras_serializable(package="keras_margins")
class ArcFace(_Preset):
    """ArcFace (Deng et al. 2019): target logit s·cos(θ_y + m), with the fallback
    cos θ − m·sin m where θ + m > π. Defaults s = 64, m = 0.5 rad (the ArcFace paper).

    ``margin`` is in radians (pytorch-metric-learning's ``ArcFaceLoss`` takes degrees: its
    28.6 is ``math.radians(28.6)`` ≈ 0.5 here). A margin above 1.5 rad raises a
    ``UserWarning`` (it looks like degrees); π or more is a ``ValueError``.

    Args:
        scale: s > 0 (default 64.0).
        margin: additive angular margin m in radians, in [0, π) (default 0.5).
        sample_margin_weight: λ >= 0 of the sample-margin regulariser (default 0.0).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model.compile("adam", loss=km.losses.ArcFace(scale=64.0, margin=0.5))

    Reference:
        - Deng et al., 2019. [ArcFace: Additive Angular Margin Loss for Deep Face
          Recognition](https://arxiv.org/abs/1801.07698), CVPR 2019.
    """

    def __init__(self, scale=64.0, margin=0.5, sample_margin_weight=0.0, **kwargs):
        self.refuse_hidden(kwargs)
        super().__init__(scale, m2=margin, sample_margin_weight=sample_margin_weight, **kwargs)
        self.margin = self.m2
