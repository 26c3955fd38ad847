"""Sample-margin regulariser on any loss (Zhou et al., ICLR 2022, Sec. 4.2)."""

import keras
from keras import ops

from keras_margins.losses._base import ModelLoss
from keras_margins.ops.cosine import cosine_similarity
from keras_margins.ops.margins import sample_margin
from keras_margins.protocols import as_loss, class_vectors, head_score_kind, loss_value


class _NegativeSampleMargin(keras.losses.Loss):
    """−γ_i per sample from (labels, cosines), reduced like any Keras loss (private)."""

    def call(self, y_true, y_pred):
        return -sample_margin(y_true, y_pred)


@keras.saving.register_keras_serializable(package="keras_margins")
class SampleMarginRegularizer(ModelLoss):
    """Any loss plus the sample-margin regulariser of Zhou et al. (2022):

        L = loss(y, outputs) + weight · R_sm,   R_sm = −mean_i γ_i,
        γ_i = cos θ_{i,y_i} − max_{j≠y_i} cos θ_ij,

    where θ_ij is the angle between the embedding x_i and the class vector w_j of the
    model's head (its ``.kernel`` column j), whatever the head: a bias-free
    ``keras.layers.Dense`` (plain softmax), ``km.layers.VirtualSoftmaxHead``,
    ``km.layers.LargestMarginHead`` or ``km.layers.PEDCCHead``. The sample margin γ_i is
    ``km.ops.sample_margin`` of those cosines (positive iff x_i is nearer, in angle, to its own
    class vector than to any other). The paper adds R_sm to its LM-Softmax; the margin-softmax
    losses here have it built in (``sample_margin_weight``); this wrapper adds it to any
    other loss, e.g. the plain softmax cross-entropy.

    It needs the embedding and the head, so it runs in ``km.models.MarginModel``
    (``needs = "model"``). The wrapped ``loss`` gets what its own ``needs`` asks for (the
    head's output for a plain Keras loss), and may itself be a ``needs="model"`` loss (its
    state and logs are passed through). With sample weights, γ_i is weighted like the
    wrapped loss (Keras' ``sum_over_batch_size`` reduction).

    Args:
        loss: the base loss, a ``keras.losses.Loss`` object (or its serialised
            config), e.g. ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``.
        weight: λ >= 0, the weight of R_sm (the paper's λ; 0 gives the base loss).
        name: the loss name. Defaults to ``"sample_margin_regularizer"``.

    Returns:
        A loss whose ``compute_model_loss`` gives the scalar loss(y, ·) + λ·R_sm of a step.

    Example:
        >>> head = keras.layers.Dense(10, use_bias=False)
        >>> model = km.models.MarginModel(backbone, head)
        >>> ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        >>> model.compile("adam", loss=km.losses.SampleMarginRegularizer(ce, 1.0),
        ...               metrics=["accuracy"], jit_compile=True)
        >>> model.fit(x, y, epochs=30)

    Reference:
        X. Zhou, X. Liu, D. Zhai, J. Jiang, X. Ji, "Learning Towards the Largest Margins",
        ICLR 2022: the sample margin (Definition 3.2) and the sample-margin regulariser
        R_sm (Sec. 4.2).
    """

    needs = "model"

    def __init__(self, loss, weight, name="sample_margin_regularizer", **kwargs):
        base = as_loss(loss, example="keras.losses.SparseCategoricalCrossentropy(from_logits=True)")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"`weight` must be a number >= 0; got {weight!r}.")
        if not (weight >= 0 and weight < float("inf")):
            raise ValueError(f"`weight` must be a finite number >= 0; got {weight}.")
        self.loss = base
        self.weight = float(weight)
        super().__init__(name=name, **kwargs)
        self._penalty = _NegativeSampleMargin(
            name="negative_sample_margin", reduction=self.reduction, dtype=self.compute_dtype
        )

    @property
    def compute_dtype(self):
        """float32 (also under mixed precision), or float64 when the loss is asked for it."""
        return "float64" if self.dtype == "float64" else "float32"

    # ------------------------------------------------------------- state of the wrapped loss
    def wrapped_losses(self):
        return [self.loss]

    def build_state(self, model):
        """Checks the head's class vectors; builds the wrapped loss's state when it is itself
        a ``ModelLoss``."""
        class_vectors(model.head, "`model.head`", "SampleMarginRegularizer")
        if isinstance(self.loss, ModelLoss):
            self.loss.build_state(model)

    def logs(self, model):
        """The wrapped loss's logs (none for a plain Keras loss)."""
        if isinstance(self.loss, ModelLoss):
            return self.loss.logs(model)
        return {}

    # ----------------------------------------------------------------------------- the loss
    def cosines(self, embedding, head, scores=None):
        """cos θ (N, C) between the embeddings and the head's class vectors (float32, or float64
        for a float64 loss): the head's own output when it declares ``score_kind = "cosine"``."""
        dtype = self.compute_dtype
        if scores is not None and head_score_kind(head) == "cosine":
            return ops.cast(scores, dtype)
        kernel = ops.cast(class_vectors(head, "`model.head`", "SampleMarginRegularizer"), dtype)
        return cosine_similarity(ops.cast(embedding, dtype), kernel)

    def compute_model_loss(self, y, outputs, model, sample_weight=None, training=True):
        cos = self.cosines(outputs["embedding"], model.head, outputs.get("scores"))
        base = ops.cast(loss_value(self.loss, y, outputs, model, sample_weight, training),
                        self.compute_dtype)
        if not self.weight:
            return base
        # Reduced like any Keras loss (sample weights, tf.distribute scaling).
        return base + self.weight * self._penalty(y, cos, sample_weight=sample_weight)

    # ------------------------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        config["loss"] = keras.saving.serialize_keras_object(self.loss)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)
