"""Base classes of the library's losses (private).

Like Keras' own losses: a loss is a per-sample function from ``km.ops`` plus a small class
whose constructor arguments are plain attributes (``self.margin = margin``). ``get_config``
returns Keras' base config (``name``, ``reduction``, ``dtype``) plus exactly the constructor
arguments, read from those attributes. Unknown keyword arguments raise a ``TypeError``.
Losses compute in float32 (``dtype="float32"``) even under mixed precision, unless a float64
``dtype`` is asked for. The loss never owns weights.

What a loss declares (``needs``, ``score_kind``) is read through ``km.protocols``.
"""

import keras
from keras import ops

from keras_margins._arguments import LOSS_BASE_ARGUMENTS, constructor_arguments, reject_unknown
from keras_margins.ops._validation import concrete_value
from keras_margins.protocols import NEEDS, as_loss  # noqa: F401  (kept importable here)

#: Slack on |cos| <= 1 before cosines count as out of range (float16 heads round up to 1 + 1e-3).
COSINE_SLACK = 1e-3


class ArgumentsConfig:
    """Mixin: ``get_config`` = the base config + the constructor arguments (plain attributes),
    unknown keyword arguments refused with a ``TypeError``."""

    def _init_base(self, kwargs, name=None, reduction="sum_over_batch_size", dtype="float32"):
        accepted = {k: kwargs.pop(k) for k in list(kwargs) if k in LOSS_BASE_ARGUMENTS}
        reject_unknown(type(self), kwargs)
        accepted.setdefault("name", name)
        accepted.setdefault("reduction", reduction)
        accepted.setdefault("dtype", dtype)
        keras.losses.Loss.__init__(self, **accepted)

    def hyperparameters(self):
        """``{argument: value}`` of the constructor arguments (what ``get_config`` adds)."""
        return {name: getattr(self, name) for name in constructor_arguments(type(self))}

    def get_config(self):
        config = keras.losses.Loss.get_config(self)
        config.update(self.hyperparameters())
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class MarginLoss(ArgumentsConfig, keras.losses.Loss):
    """A loss on (labels, class scores) defined by a per-sample ``km.ops`` function.

    Subclasses store their constructor arguments as attributes, call
    ``super().__init__(**kwargs)`` with the remaining keyword arguments (``name``,
    ``reduction``, ``dtype``; anything else is a ``TypeError``) and implement
    ``per_sample(labels, y_pred)`` returning (N,). ``y_true`` may be (N,) or (N, 1) integers.

    Declarations (``km.protocols``): ``needs`` — ``"scores"`` (the head's output: works in a
    plain ``keras.Sequential``), ``"embedding"`` (the backbone output) or ``"model"`` (a
    ``ModelLoss``); ``score_kind`` — the head output a scores loss is defined on
    (``"cosine"``, ``"log_probs"``; None: any). A loss on cosines checks them: values outside
    [−1, 1] beyond rounding (raw embeddings or logits given by mistake) raise a ``ValueError``
    in eager mode and make the loss NaN inside compiled graphs.
    """

    needs = "scores"
    score_kind = None

    def __init__(self, **kwargs):
        self._init_base(kwargs)

    def call(self, y_true, y_pred):
        if self.score_kind != "cosine":
            return self.per_sample(y_true, y_pred)
        check_cosine_range(y_pred, type(self).__name__)
        loss = self.per_sample(y_true, y_pred)
        return poison_out_of_range(loss, y_pred)

    def per_sample(self, labels, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError


def check_cosine_range(cos, owner):
    """Eager only: ``ValueError`` when |cos| > 1 + ``COSINE_SLACK`` (embeddings or logits
    where the loss expects a cosine head's output)."""
    values = concrete_value(cos)
    if values is None or values.size == 0:
        return
    largest = float(abs(values).max())
    if largest > 1.0 + COSINE_SLACK:  # NaN compares False: the NaN check reports it
        raise ValueError(
            f"`y_pred` of km.losses.{owner} must be the (N, C) cosines of a cosine head "
            f"(|cos| <= 1, e.g. km.layers.LargestMarginHead); got values up to {largest:.4g}. "
            "For (N, D) embeddings use a pair-wise loss (e.g. km.losses.PairCircleLoss, "
            "pytorch-metric-learning's CircleLoss)."
        )


def poison_out_of_range(loss, cos):
    """``loss`` (N,) with NaN in the rows whose cosines leave [−1 − slack, 1 + slack]: inside a
    compiled graph the range cannot raise, so a wrong input never gives a finite value."""
    if len(getattr(loss, "shape", ())) != 1:
        return loss
    bad = ops.any(ops.abs(ops.cast(cos, loss.dtype)) > 1.0 + COSINE_SLACK, axis=-1)
    return ops.where(bad, ops.cast(float("nan"), loss.dtype), loss)


class ModelLoss(ArgumentsConfig, keras.losses.Loss):
    """Base class of the losses that need more than ``(labels, class scores)``.

    A ``ModelLoss`` (``needs = "model"``) runs inside ``km.models.MarginModel``, which calls
    three methods:

    * ``build_state(model)``: once per loss object, at ``compile`` (and on reload, before the
      weights and optimizer slots are restored). Check the model's head through its
      declarations (``km.protocols``) and create variables with ``model.add_weight`` so the
      model trains and saves them. Default: no state.
    * ``compute_model_loss(y, outputs, model, sample_weight=None, training=True)``: the
      scalar loss of a step, reduced (and scaled for ``tf.distribute``) like
      ``keras.losses.Loss.__call__``. ``outputs`` is ``{"embedding": (N, D), "scores": (N, C)
      or None}`` from the step's single forward pass; ``model`` gives access to
      ``model.backbone`` and ``model.head``; ``training`` is False in ``evaluate``. A
      wrapped loss is evaluated with ``km.protocols.loss_value``.
    * ``logs(model)``: ``{name: scalar}`` added to the fit/evaluate logs (read with the values
      the step used). Default: none.

    ``state_losses()`` lists the losses whose state this one holds (itself and wrapped
    model-aware losses), so callbacks such as ``km.callbacks.PODDelta`` find a wrapped POD.

    Calling a ``ModelLoss`` like a plain Keras loss on ``(y_true, y_pred)`` raises a
    ``ValueError`` that points to ``MarginModel``, unless a subclass defines ``call``.
    """

    needs = "model"
    #: Whether the loss trains a class head (``km.protocols.wants_head``).
    wants_head = True
    #: Whether a training step needs the full (N, C) head output (Partial FC does not).
    needs_training_scores = True

    def __init__(self, **kwargs):
        self._init_base(kwargs)

    def build_state(self, model):
        """Create the loss's variables on ``model`` (``model.add_weight``). Default: none."""

    def compute_model_loss(self, y, outputs, model, sample_weight=None, training=True):
        raise NotImplementedError(f"{type(self).__name__} must implement compute_model_loss.")

    def logs(self, model):
        """``{name: scalar}`` for the fit/evaluate logs. Default: none."""
        return {}

    def wrapped_losses(self):
        """The losses this one applies (default: none)."""
        return []

    def state_losses(self):
        """This loss and every model-aware loss it wraps, depth first."""
        found = [self]
        for inner in self.wrapped_losses():
            if isinstance(inner, ModelLoss):
                found.extend(inner.state_losses())
        return found

    def call(self, y_true, y_pred):
        raise ValueError(
            f"{type(self).__name__} needs the embedding and the head: compile it on a "
            "km.models.MarginModel(backbone, head), not on a plain keras.Model."
        )
