"""MagFace (Meng et al., CVPR 2021): magnitude-aware margin and regulariser."""

import warnings

import keras

from keras_margins.losses._cosine_state import CosineModelLoss
from keras_margins.ops._validation import check_positive
from keras_margins.ops.magface import check_magface_bounds, magface, magface_min_regularizer_weight


@keras.saving.register_keras_serializable(package="keras_margins")
class MagFace(CosineModelLoss):
    """MagFace (Meng et al. 2021): an ArcFace margin that grows with the feature norm, plus a
    regulariser that rewards large norms, so that after training the norm ‖x‖ of an
    embedding ranks the quality of its input (``km.ops.magface``):

    L_i = −log e^{s·cos(θ_y + m(a_i))} / (e^{s·cos(θ_y + m(a_i))} + Σ_{j≠y} e^{s·cos θ_j})
          + λ_g·g(a_i),
    a_i = clip(‖x_i‖, l_a, u_a),  m(a) = (u_m − l_m)/(u_a − l_a)·(a − l_a) + l_m,
    g(a) = 1/a + a/u_a².

    The head's cosines do not carry ‖x‖: the loss reads the backbone's un-normalised
    embedding from ``km.models.MarginModel`` (a ``ModelLoss``), so the backbone must not end
    with an L2 normalisation. Quality score at inference: ``km.ops.feature_norm(
    model.backbone(x))`` (the norm of the embedding the head normalises).

    Args:
        scale: s > 0 (default 64.0).
        lower_norm: l_a > 0 (default 10.0).
        upper_norm: u_a > l_a (default 110.0).
        lower_margin: l_m >= 0, the margin at l_a (default 0.45).
        upper_margin: u_m in [l_m, π/2), the margin at u_a (default 0.8).
        regularizer_weight: λ_g >= 0 (default 35.0). Below
            ``km.ops.magface_min_regularizer_weight(...)`` (22.59 for the defaults) the
            paper's guarantee of a unique optimal norm does not hold: a ``UserWarning`` says so.
        easy_margin: apply the margin only where cos θ_y > 0 (default False; the authors'
            code uses True).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(1000))
        >>> model.compile("sgd", loss=km.losses.MagFace(), jit_compile=True)
        >>> model.fit(x, y)
        >>> quality = km.ops.feature_norm(model.backbone.predict(x_test))

    Reference:
        - Meng et al., 2021. [MagFace: A Universal Representation for Face Recognition and
          Quality Assessment](https://arxiv.org/abs/2103.06627), CVPR 2021.
    """

    def __init__(self, scale=64.0, lower_norm=10.0, upper_norm=110.0, lower_margin=0.45,
                 upper_margin=0.8, regularizer_weight=35.0, easy_margin=False, **kwargs):
        check_positive(scale, "scale")
        check_magface_bounds(lower_norm, upper_norm, lower_margin, upper_margin)
        if not regularizer_weight >= 0:
            raise ValueError(f"`regularizer_weight` must be >= 0; got {regularizer_weight}.")
        if not isinstance(easy_margin, bool):
            raise ValueError(f"`easy_margin` must be True or False; got {easy_margin!r}.")
        smallest = magface_min_regularizer_weight(scale, lower_norm, upper_norm, lower_margin,
                                                  upper_margin)
        if regularizer_weight < smallest:
            warnings.warn(
                f"MagFace: regularizer_weight={regularizer_weight} is below {smallest:.4g}, the "
                "smallest λ_g for which the paper proves a unique optimal feature norm.",
                UserWarning,
                stacklevel=2,
            )
        kwargs.setdefault("name", "mag_face")
        self.scale = float(scale)
        self.lower_norm = float(lower_norm)
        self.upper_norm = float(upper_norm)
        self.lower_margin = float(lower_margin)
        self.upper_margin = float(upper_margin)
        self.regularizer_weight = float(regularizer_weight)
        self.easy_margin = easy_margin
        super().__init__(**kwargs)

    def step_inputs(self, y, cos, embedding, training):
        return {"cos": cos, "norms": self.norms(embedding)}

    def per_sample(self, labels, inputs):
        return magface(labels, inputs["cos"], inputs["norms"], self.scale, self.lower_norm,
                       self.upper_norm, self.lower_margin, self.upper_margin,
                       self.regularizer_weight, self.easy_margin)
