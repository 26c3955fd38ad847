"""ElasticFace (Boutros et al., CVPRW 2022): margins drawn from a normal distribution."""

import random

import keras
from keras import ops

from keras_margins.losses._cosine_state import CosineModelLoss, scalar_weight
from keras_margins.ops._numerics import take_target
from keras_margins.ops._validation import as_labels, check_positive
from keras_margins.ops.angular import check_angle, mix_seed
from keras_margins.ops.elasticface import KINDS, elastic_face, elastic_margins

#: The authors' defaults: (margin, std) per variant, (kind, plus) -> values.
DEFAULTS = {
    ("arc", False): (0.5, 0.05),
    ("arc", True): (0.5, 0.0175),
    ("cos", False): (0.35, 0.05),
    ("cos", True): (0.35, 0.02),
}


@keras.saving.register_keras_serializable(package="keras_margins")
class ElasticFace(CosineModelLoss):
    """ElasticFace (Boutros et al. 2022): ArcFace or CosFace with a margin drawn per sample
    and step from N(m, σ²) (``km.ops.elastic_face``):

    ElasticFace-Arc: target logit s·cos(θ_y + E_i);  ElasticFace-Cos: s·(cos θ_y − E_i);
    E_i ~ N(m, σ²);  non-target logits s·cos θ_j.

    ElasticFace+ (``plus=True``): the batch's draws are sorted and given by rank, the
    largest margin to the sample with the smallest target cosine. Arc margins are clipped to
    [0, π − 0.001] and continue past π as ArcFace does.

    The draws come from ``km.ops.stateless_normal`` seeded by the seed and a step counter
    (a non-trainable int32 weight of the model made by ``build_state``, saved with it): no
    random state, so the step compiles under XLA on every backend and a reloaded model goes
    on with the next step's draws. ``evaluate`` uses the mean margin m.

    Args:
        scale: s > 0 (default 64.0).
        margin: mean margin m (default None: 0.5 rad for ``"arc"``, 0.35 for ``"cos"``).
        std: σ >= 0 (default None: the authors' 0.05 for ElasticFace-Arc and -Cos, 0.0175
            for ElasticFace-Arc+, 0.02 for ElasticFace-Cos+).
        kind: ``"arc"`` (default) or ``"cos"``.
        plus: the "+" variant (default False).
        seed: int seed of the draws (default None: drawn once, kept at ``effective_seed``).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(1000))
        >>> model.compile("sgd", loss=km.losses.ElasticFace(kind="arc", plus=True, seed=1),
        ...               jit_compile=True)

    Reference:
        - Boutros et al., 2022. [ElasticFace: Elastic Margin Loss for Deep Face
          Recognition](https://arxiv.org/abs/2109.09416), CVPR Workshops 2022.
    """

    def __init__(self, scale=64.0, margin=None, std=None, kind="arc", plus=False, seed=None,
                 **kwargs):
        check_positive(scale, "scale")
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}; got {kind!r}.")
        if not isinstance(plus, bool):
            raise ValueError(f"`plus` must be True or False; got {plus!r}.")
        default_margin, default_std = DEFAULTS[(kind, plus)]
        margin = default_margin if margin is None else margin
        std = default_std if std is None else std
        if kind == "arc":
            check_angle(margin, "margin")
        elif not margin >= 0:
            raise ValueError(f"`margin` must be >= 0; got {margin}.")
        if not std >= 0:
            raise ValueError(f"`std` must be >= 0; got {std}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be None or an integer; got {seed!r}.")
        kwargs.setdefault("name", "elastic_face")
        self.scale = float(scale)
        self.margin = float(margin)
        self.std = float(std)
        self.kind = kind
        self.plus = plus
        self.seed = seed
        #: The seed the draws use: ``seed``, or one drawn when ``seed`` is None.
        self.effective_seed = seed if seed is not None else random.randrange(2**31)
        super().__init__(**kwargs)

    def make_state(self, model):
        return {"step": scalar_weight(model, "elasticface_step", 0, dtype="int32",
                                      aggregation="only_first_replica")}

    def margins(self, cos, labels=None, step=0):
        """The (N,) margins of training step ``step`` for the cosines ``cos`` (N, C)."""
        count = cos.shape[0] if cos.shape[0] is not None else ops.shape(cos)[0]
        cos_y = None
        if self.plus:
            cos_y = take_target(cos, as_labels(labels, cos.shape[1], cos.shape[0]))
        seed = mix_seed(self.effective_seed, step)
        return elastic_margins(count, seed, self.margin, self.std, cos_y)

    def step_inputs(self, y, cos, embedding, training):
        if not training:
            return {"cos": cos, "margins": ops.full(ops.shape(cos)[:1], self.margin)}
        step = self.state_value("step", 0)
        margins = self.margins(cos, y, step)
        if self.state:
            self.state["step"].assign_add(1)
        return {"cos": cos, "margins": margins}

    def per_sample(self, labels, inputs):
        return elastic_face(labels, inputs["cos"], inputs["margins"], self.scale, self.kind)
