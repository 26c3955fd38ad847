"""AdaFace (Kim, Jain & Liu, CVPR 2022) with its running norm statistics as model state."""

import math

import keras

from keras_margins.losses._cosine_state import CosineModelLoss, scalar_weight
from keras_margins.ops._validation import check_positive
from keras_margins.ops.adaface import adaface, adaface_norm_stats
from keras_margins.ops.angular import check_momentum

#: Where the authors start the running statistics of the norms (μ, σ).
INITIAL_NORM_MEAN = 20.0
INITIAL_NORM_STD = 100.0


@keras.saving.register_keras_serializable(package="keras_margins")
class AdaFace(CosineModelLoss):
    """AdaFace (Kim et al. 2022): a margin that adapts to image quality, read off the
    feature norm relative to running batch statistics (``km.ops.adaface``):

    L_i = −log e^{s·f(θ_y)} / (e^{s·f(θ_y)} + Σ_{j≠y} e^{s·cos θ_j}),
    f(θ_y) = cos(clip(θ_y + g_angle, ε, π − ε)) − g_add,
    g_angle = −m·ẑ_i,  g_add = m·ẑ_i + m,  ẑ_i = clip(h·(‖z_i‖ − μ)/(σ + ε), −1, 1),
    μ ← momentum·μ + (1 − momentum)·mean_B ‖z‖,  σ ← momentum·σ + (1 − momentum)·std_B ‖z‖.

    Low-norm (low-quality) samples get ArcFace's cos(θ + m), which gives little weight to
    hard, possibly unrecognisable samples; average ones CosFace's cos θ − m; high-norm
    (high-quality) ones cos(θ − m) − 2m, which emphasises hard samples. The norm gets no
    gradient. μ and σ (starting at 20 and 100, the authors' values) are non-trainable
    weights of the model made by ``build_state``: they are updated in every training step
    before use, saved and reloaded with the model and shown in the logs
    (``adaface_norm_mean``, ``adaface_norm_std``); ``evaluate`` reads them without updating.
    The loss reads the backbone's un-normalised embedding in ``km.models.MarginModel``.

    Args:
        scale: s > 0 (default 64.0).
        margin: m in [0, π/2) (default 0.4).
        h: concentration h > 0 (default 0.333).
        momentum: weight of the previous statistics, in [0, 1) (default 0.99: the paper's
            α = 0.01 on the batch).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(1000))
        >>> model.compile("sgd", loss=km.losses.AdaFace(), jit_compile=True)
        >>> model.fit(x, y)   # logs show adaface_norm_mean / adaface_norm_std

    Reference:
        - Kim, Jain & Liu, 2022. [AdaFace: Quality Adaptive Margin for Face
          Recognition](https://arxiv.org/abs/2204.00964), CVPR 2022.
    """

    def __init__(self, scale=64.0, margin=0.4, h=0.333, momentum=0.99, **kwargs):
        check_positive(scale, "scale")
        check_positive(h, "h")
        if not 0.0 <= margin < math.pi / 2:
            raise ValueError(f"`margin` (radians) must be in [0, π/2); got {margin}.")
        check_momentum(momentum)
        kwargs.setdefault("name", "ada_face")
        self.scale = float(scale)
        self.margin = float(margin)
        self.h = float(h)
        self.momentum = float(momentum)
        super().__init__(**kwargs)

    def make_state(self, model):
        return {
            "mean": scalar_weight(model, "adaface_norm_mean", INITIAL_NORM_MEAN),
            "std": scalar_weight(model, "adaface_norm_std", INITIAL_NORM_STD),
        }

    def logs(self, model):
        if not self.state:
            return {}
        return {"adaface_norm_mean": self.state["mean"], "adaface_norm_std": self.state["std"]}

    def step_inputs(self, y, cos, embedding, training):
        norms = self.norms(embedding)
        mean = self.state_value("mean", INITIAL_NORM_MEAN)
        std = self.state_value("std", INITIAL_NORM_STD)
        if training and self.state:
            mean, std = adaface_norm_stats(norms, mean, std, self.momentum)
            self.assign_state("mean", mean)
            self.assign_state("std", std)
        return {"cos": cos, "norms": norms, "mean": mean, "std": std}

    def per_sample(self, labels, inputs):
        return adaface(labels, inputs["cos"], inputs["norms"], inputs["mean"], inputs["std"],
                       self.scale, self.margin, self.h)
