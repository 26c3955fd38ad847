"""Base class of the library's losses (private).

Like Keras' own ``LossFunctionWrapper``: a loss is a per-sample function from ``km.ops`` plus
a small class holding hyper-parameters. ``get_config`` returns exactly the constructor
arguments (plus Keras' ``name``/``reduction``/``dtype``). The loss never owns weights.
Losses compute in float32 (``dtype="float32"``) even under mixed precision.
"""

import keras

#: What a loss can ask ``km.models.MarginModel`` for (the ``needs`` attribute).
NEEDS = ("scores", "embedding", "model")


class MarginLoss(keras.losses.Loss):
    """A loss on (labels, class scores) defined by a per-sample ``km.ops`` function.

    Subclasses set ``self._hparams`` (a dict of constructor arguments) and implement
    ``per_sample(labels, y_pred)`` returning (N,). ``y_true`` may be (N,) or (N, 1) integers.

    ``needs`` tells ``km.models.MarginModel`` what the loss consumes: ``"scores"`` (the head's
    output: works in a plain ``keras.Sequential``), ``"embedding"`` (the backbone output) or
    ``"model"`` (``compute_model_loss(y, outputs, model, sample_weight)`` with the embedding, the
    scores and the model, e.g. POD and LossEnsemble).
    """

    needs = "scores"

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype="float32", **hparams):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._hparams = dict(hparams)

    def __getattr__(self, item):
        hparams = self.__dict__.get("_hparams", {})
        if item in hparams:
            return hparams[item]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {item!r}")

    def call(self, y_true, y_pred):
        return self.per_sample(y_true, y_pred)

    def per_sample(self, labels, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(self._hparams)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class ModelLoss(keras.losses.Loss):
    """Base class of the losses that need more than ``(labels, class scores)``.

    A ``ModelLoss`` (``needs = "model"``) runs inside ``km.models.MarginModel``, which calls
    three methods:

    * ``build_state(model)``: once per loss object, at ``compile`` (and on reload, before the
      weights and optimizer slots are restored). Create variables with ``model.add_weight`` so
      the model trains and saves them. Default: no state.
    * ``compute_model_loss(y, outputs, model, sample_weight=None, training=True)``: the
      scalar loss of a step, reduced (and scaled for ``tf.distribute``) like
      ``keras.losses.Loss.__call__``. ``outputs`` is ``{"embedding": (N, D), "scores": (N, C)
      or None}`` from the step's single forward pass; ``model`` gives access to
      ``model.backbone`` and ``model.head``; ``training`` is False in ``evaluate``.
    * ``logs(model)``: ``{name: scalar}`` added to the fit/evaluate logs (read with the values
      the step used). Default: none.

    Calling a ``ModelLoss`` like a plain Keras loss on ``(y_true, y_pred)`` raises a
    ``ValueError`` that points to ``MarginModel``, unless a subclass defines ``call``.
    The protocol and how ``MarginModel`` shares one forward pass: ``docs/design.md``.
    """

    needs = "model"

    def build_state(self, model):
        """Create the loss's variables on ``model`` (``model.add_weight``). Default: none."""

    def compute_model_loss(self, y, outputs, model, sample_weight=None, training=True):
        raise NotImplementedError(f"{type(self).__name__} must implement compute_model_loss.")

    def logs(self, model):
        """``{name: scalar}`` for the fit/evaluate logs. Default: none."""
        return {}

    def call(self, y_true, y_pred):
        raise ValueError(
            f"{type(self).__name__} needs the embedding and the head: compile it on a "
            "km.models.MarginModel(backbone, head), not on a plain keras.Model."
        )


def as_loss(loss, argument="`loss`", example="km.losses.ArcFace()"):
    """A ``keras.losses.Loss`` from a loss object, its ``.keras`` config dict or a Keras loss
    name, with a ``needs`` that ``km.models.MarginModel`` understands.

    Args:
        loss: the loss, a serialised loss (dict) or a Keras loss name (str).
        argument: how error messages name the argument, e.g. ``"`losses`"``.
        example: a valid value the error message suggests.

    Returns:
        The ``keras.losses.Loss``. Raises a ``ValueError`` naming ``argument`` otherwise.
    """
    if isinstance(loss, dict):
        loss = keras.saving.deserialize_keras_object(loss)
    elif isinstance(loss, str):
        loss = keras.losses.get(loss)
    if not isinstance(loss, keras.losses.Loss):
        raise ValueError(f"{argument} must be a keras.losses.Loss (e.g. {example}); got {loss!r}.")
    needs = getattr(loss, "needs", "scores")  # Keras' own losses have no `needs`: scores
    if needs not in NEEDS:
        raise ValueError(f"{argument}: {loss.name} has needs={needs!r}; expected one of {NEEDS}.")
    if needs == "model" and not isinstance(loss, ModelLoss):
        raise ValueError(
            f"{argument}: {loss.name} has needs='model' but does not subclass km.losses.ModelLoss."
        )
    return loss


def compute_model_loss(loss, y, outputs, model, sample_weight=None, training=True):
    """The value of a ``needs="model"`` loss (a ``ModelLoss``) for one step."""
    if not isinstance(loss, ModelLoss):
        raise ValueError(
            f"`loss`: {type(loss).__name__} has needs='model' but is not a "
            "km.losses.ModelLoss subclass."
        )
    return loss.compute_model_loss(y, outputs, model, sample_weight, training=training)
