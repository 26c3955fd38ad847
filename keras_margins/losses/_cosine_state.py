"""Base of the losses on a cosine head's output that also need the embedding's norm or keep
state between steps (private): CurricularFace, MagFace, AdaFace, ElasticFace, UniFace.

Each is a ``km.losses.ModelLoss`` (it runs in ``km.models.MarginModel``) that declares
``score_kind = "cosine"``: what it reads from a step is ``outputs["scores"]`` — the head's
(N, C) cosines, or the (N, K) cosines of the classes a wrapper such as Partial FC sampled,
with labels remapped to those columns — and, for the norm-aware losses, ``outputs["embedding"]``
(N, D) before normalisation. Its state (t, norm statistics, the step counter, a learned bias)
is made of model weights created by ``build_state``, so it trains, saves and reloads with the
model.
"""

import keras
from keras import ops

from keras_margins.losses._base import ModelLoss, check_cosine_range, poison_out_of_range
from keras_margins.ops.angular import feature_norm
from keras_margins.protocols import require_cosine_head


class CosineModelLoss(ModelLoss):
    """A model-aware loss on a cosine head's cosines (see the module notes).

    Subclasses implement ``make_state(model) -> {name: variable}`` (default: none),
    ``step_inputs(y, cos, embedding, training) -> {name: tensor}`` (the float tensors
    ``per_sample`` reads; ``"cos"`` is always there; updates the state in training steps) and
    ``per_sample(labels, inputs) -> (N,)``.
    """

    needs = "model"
    score_kind = "cosine"
    wants_head = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: ``{name: model variable}`` made by ``build_state`` (None before).
        self.state = None

    # ------------------------------------------------------------------ state (owned by model)
    def build_state(self, model):
        """Checks that the model's head outputs cosines and creates the loss's variables."""
        require_cosine_head(getattr(model, "head", None), user=type(self).__name__)
        self.state = dict(self.make_state(model) or {})

    def make_state(self, model):
        """``{name: variable}`` made with ``model.add_weight`` (default: none)."""
        return {}

    def state_value(self, name, default):
        """The current value of state variable ``name`` (``default`` before ``build_state``)."""
        if not self.state or name not in self.state:
            return default
        return ops.convert_to_tensor(self.state[name])

    def assign_state(self, name, value):
        """Writes ``value`` into state variable ``name`` (ignored before ``build_state``)."""
        if self.state and name in self.state:
            self.state[name].assign(value)

    # ----------------------------------------------------------------------------- the loss
    def compute_model_loss(self, y, outputs, model, sample_weight=None, training=True):
        embedding = outputs.get("embedding")
        cos = outputs.get("scores")
        if cos is None:
            head = require_cosine_head(getattr(model, "head", None), user=type(self).__name__)
            cos = head(embedding)
        cos = ops.cast(cos, "float32")
        if embedding is not None:
            embedding = ops.cast(embedding, "float32")
        inputs = self.step_inputs(y, cos, embedding, training)
        return self(y, inputs, sample_weight=sample_weight)

    def step_inputs(self, y, cos, embedding, training):
        return {"cos": cos}

    def norms(self, embedding):
        """‖x_i‖ of the step's embeddings (``ValueError`` when the step gave none)."""
        if embedding is None:
            raise ValueError(
                f"{type(self).__name__} needs the embedding's norm: outputs['embedding'] is None."
            )
        return feature_norm(embedding)

    def call(self, y_true, y_pred):
        if not isinstance(y_pred, dict):
            raise ValueError(
                f"{type(self).__name__} needs the embedding and the model's state: compile it on "
                "a km.models.MarginModel(backbone, km.layers.LargestMarginHead(C)), not on a "
                "plain keras.Model."
            )
        cos = y_pred["cos"]
        check_cosine_range(cos, type(self).__name__)
        return poison_out_of_range(self.per_sample(y_true, y_pred), cos)

    def per_sample(self, labels, inputs):  # pragma: no cover - abstract
        raise NotImplementedError


def scalar_weight(model, name, value, trainable=False, dtype="float32", aggregation=None):
    """A scalar model weight named ``name`` starting at ``value``; a non-trainable one is
    averaged over ``tf.distribute`` replicas unless ``aggregation`` says otherwise."""
    if aggregation is None:
        aggregation = "none" if trainable else "mean"
    return model.add_weight(
        name=name,
        shape=(),
        dtype=dtype,
        initializer=keras.initializers.Constant(value),
        trainable=trainable,
        aggregation=aggregation,
    )
