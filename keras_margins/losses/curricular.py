"""CurricularFace (Huang et al., CVPR 2020) with its adaptive t kept as model state."""

import keras

from keras_margins.losses._cosine_state import CosineModelLoss, scalar_weight
from keras_margins.ops._numerics import take_target
from keras_margins.ops._validation import as_labels, check_positive
from keras_margins.ops.angular import check_angle, check_momentum
from keras_margins.ops.curricular import curricular_face, curricular_t


@keras.saving.register_keras_serializable(package="keras_margins")
class CurricularFace(CosineModelLoss):
    """CurricularFace (Huang et al. 2020): ArcFace's target logit s·cos(θ_y + m), and hard
    negatives re-weighted by an adaptive t that follows training:

    L_i = −log e^{s·ψ(θ_y)} / (e^{s·ψ(θ_y)} + Σ_{j≠y} e^{s·N(t, cos θ_j)}),
    N(t, cos θ_j) = cos θ_j if ψ(θ_y) ≥ cos θ_j, else cos θ_j·(t + cos θ_j),
    t ← momentum·t + (1 − momentum)·mean_i cos θ_{y_i}  (each training step, before use),

    ψ(θ) = cos(θ + m), continued as cos θ − m·sin m past π (``km.ops.curricular_face``). Early
    in training t ≈ 0 and hard negatives weigh less than cos θ_j (easy samples first); as the
    target cosines grow t grows and hard negatives weigh more.

    t (starting at 0) is a non-trainable weight of the model, made by ``build_state`` when
    the model is compiled: it saves and reloads with the model (``.keras``, checkpoints,
    ``BackupAndRestore``) and shows in the logs as ``curricular_t``. ``evaluate`` uses t
    without updating it. Use it in a ``km.models.MarginModel`` with a cosine head.

    Args:
        scale: s > 0 (default 64.0).
        margin: additive angular margin m in radians, in [0, π) (default 0.5).
        momentum: weight of the previous t in its update, in [0, 1) (default 0.99, the
            authors' code).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(1000))
        >>> model.compile("sgd", loss=km.losses.CurricularFace(), jit_compile=True)
        >>> model.fit(x, y)   # logs show curricular_t

    Reference:
        - Huang et al., 2020. [CurricularFace: Adaptive Curriculum Learning Loss for Deep
          Face Recognition](https://arxiv.org/abs/2004.00288), CVPR 2020.
    """

    def __init__(self, scale=64.0, margin=0.5, momentum=0.99, **kwargs):
        check_positive(scale, "scale")
        check_angle(margin, "margin")
        check_momentum(momentum)
        kwargs.setdefault("name", "curricular_face")
        self.scale = float(scale)
        self.margin = float(margin)
        self.momentum = float(momentum)
        super().__init__(**kwargs)

    def make_state(self, model):
        return {"t": scalar_weight(model, "curricular_t", 0.0)}

    @property
    def t_variable(self):
        """The model variable holding t (None before ``build_state``)."""
        return None if not self.state else self.state["t"]

    def logs(self, model):
        return {"curricular_t": self.state["t"]} if self.state else {}

    def step_inputs(self, y, cos, embedding, training):
        t = self.state_value("t", 0.0)
        if training and self.state:
            labels = as_labels(y, cos.shape[1], cos.shape[0])
            t = curricular_t(t, take_target(cos, labels), self.momentum)
            self.assign_state("t", t)
        return {"cos": cos, "t": t}

    def per_sample(self, labels, inputs):
        return curricular_face(labels, inputs["cos"], inputs["t"], self.scale, self.margin)
