"""UniFace (Zhou et al., ICCV 2023): the unified cross-entropy loss with a learned bias."""

import keras

from keras_margins.losses._cosine_state import CosineModelLoss, scalar_weight
from keras_margins.ops._validation import check_non_negative, check_positive
from keras_margins.ops.uniface import uniface, uniface_initial_bias
from keras_margins.protocols import require_cosine_head


@keras.saving.register_keras_serializable(package="keras_margins")
class UniFace(CosineModelLoss):
    """UniFace (Zhou et al. 2023): the unified cross-entropy loss with margin, L_uce-m
    (``km.ops.uniface``):

    L_i = log(1 + e^{−(s·(cos θ_y − m) − b̃)}) + λ·Σ_{j≠y} log(1 + e^{s·cos θ_j − b̃}).

    Every positive similarity is pushed above, and every negative one below, the same
    threshold b̃/s, learned with the model: b̃ is a trainable scalar weight of the model
    made by ``build_state`` (starting at log(10·r·C), the authors' initialisation for C
    classes), saved with it and shown in the logs as ``uniface_bias``. λ ≠ 1 gives the
    paper's L_uce-mb-λ (weighted negatives), r ≠ 1 its L_uce-mb-r (another initial bias).

    Args:
        scale: s > 0 (default 64.0).
        margin: cosine margin m >= 0 (default 0.4).
        negative_weight: λ >= 0 (default 1.0).
        r: r > 0 of the initial bias log(10·r·C) (default 1.0).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(1000))
        >>> model.compile("sgd", loss=km.losses.UniFace(), jit_compile=True)
        >>> model.fit(x, y)   # logs show uniface_bias

    Reference:
        - Zhou et al., 2023. [UniFace: Unified Cross-Entropy Loss for Deep Face
          Recognition](https://openaccess.thecvf.com/content/ICCV2023/papers/Zhou_UniFace_Unified_Cross-Entropy_Loss_for_Deep_Face_Recognition_ICCV_2023_paper.pdf),
          ICCV 2023.
    """

    def __init__(self, scale=64.0, margin=0.4, negative_weight=1.0, r=1.0, **kwargs):
        check_positive(scale, "scale")
        check_non_negative(margin, "margin")
        check_non_negative(negative_weight, "negative_weight")
        check_positive(r, "r")
        kwargs.setdefault("name", "uni_face")
        self.scale = float(scale)
        self.margin = float(margin)
        self.negative_weight = float(negative_weight)
        self.r = float(r)
        super().__init__(**kwargs)

    def make_state(self, model):
        head = require_cosine_head(getattr(model, "head", None), user="UniFace")
        bias = uniface_initial_bias(head.num_classes, self.r)
        return {"bias": scalar_weight(model, "uniface_bias", bias, trainable=True)}

    @property
    def bias_variable(self):
        """The model variable holding b̃ (None before ``build_state``)."""
        return None if not self.state else self.state["bias"]

    def logs(self, model):
        return {"uniface_bias": self.state["bias"]} if self.state else {}

    def step_inputs(self, y, cos, embedding, training):
        default = uniface_initial_bias(cos.shape[1] or 2, self.r)
        return {"cos": cos, "bias": self.state_value("bias", default)}

    def per_sample(self, labels, inputs):
        return uniface(labels, inputs["cos"], inputs["bias"], self.scale, self.margin,
                       self.negative_weight)
