"""What heads and losses declare about themselves, and the one place that reads it.

Every composition check of the library (``PartialFC``, ``SampleMarginRegularizer``, ``POD``,
``MarginModel.compile``, ``km.distribution``, the command line) reads these declarations; none
asks for a concrete class or a class name. A head or loss written by a user composes like the
library's own once it declares itself (``docs/extend.md``).

**Heads** (a ``keras.layers.Layer`` mapping (N, D) embeddings to (N, C) class scores):

* ``score_kind``: what the output is: ``"cosine"`` (cos θ between the embedding and the class
  vectors), ``"logits"`` (x·W, linear) or ``"log_probs"`` (log-softmax of logits).
* ``fixed_centers``: True when the class vectors are not trained (PEDCC's centroids).
* ``num_classes``: C.
* ``class_vectors()``: the (D, C) class vectors (one column per class) the scores compare with.
* ``gather_class_vectors(class_ids)`` (optional): the (K, D) rows of ``class_ids``; default:
  columns of ``class_vectors()``. A head whose storage makes this cheap (class-major rows)
  says so by defining it.
* ``sub_centers`` (optional, default 1): class vectors per class. A head with more than one
  (sub-center ArcFace) declares ``class_cosines(features, class_ids)``: the (N, K) cosines of
  the classes ``class_ids`` (its own pooling over their sub-centres); its
  ``class_vectors()`` gives one vector per class.

A bias-free ``keras.layers.Dense`` declares nothing and is read as a ``"logits"`` head whose
class vectors are its ``kernel`` (its public attributes ``kernel`` and ``use_bias``).

**Losses** (``keras.losses.Loss``):

* ``needs``: ``"scores"`` (the head's output; the default, and what Keras' own losses are),
  ``"embedding"`` (the backbone's output; pair-wise losses) or ``"model"`` (a
  ``km.losses.ModelLoss``: ``compute_model_loss(y, outputs, model, sample_weight, training)``).
* ``score_kind``: for ``needs="scores"``, the head output it is defined on (``"cosine"``,
  ``"log_probs"``), or None for any (Keras' own losses). A model-aware loss declaring
  ``score_kind = "cosine"`` says that it reads the step's class cosines from
  ``outputs["scores"]`` (with the labels indexing its columns), so a wrapper may hand it the
  cosines of a sample of the classes (``km.losses.PartialFC``).
"""

import keras
from keras import ops

from keras_margins.ops.cosine import cosine_similarity

#: What a loss can consume (its ``needs``).
NEEDS = ("scores", "embedding", "model")
#: What a head's output can be (its ``score_kind``).
SCORE_KINDS = ("cosine", "logits", "log_probs")


# --------------------------------------------------------------------------------- heads
def head_score_kind(head):
    """The head's declared ``score_kind``; ``"logits"`` for a bias-free Dense-like layer
    (a 2-D ``kernel``, ``use_bias`` False); None when the head says nothing."""
    kind = getattr(head, "score_kind", None)
    if kind is not None:
        if kind not in SCORE_KINDS:
            raise ValueError(
                f"`head`: {type(head).__name__}.score_kind must be one of {SCORE_KINDS}; got {kind!r}."
            )
        return kind
    if _plain_linear(head):
        return "logits"
    return None


def declares_head(layer):
    """True when ``layer`` declares itself a class head (a ``score_kind`` of ``SCORE_KINDS``)."""
    return getattr(layer, "score_kind", None) in SCORE_KINDS


def _plain_linear(head):
    kernel = getattr(head, "kernel", None)
    return kernel is not None and len(kernel.shape) == 2 and getattr(head, "use_bias", True) is False


def has_class_vectors(head):
    """True when ``class_vectors(head)`` can answer (the head declares them, or is a
    bias-free linear layer)."""
    return head is not None and (callable(getattr(head, "class_vectors", None)) or _plain_linear(head))


def class_vectors(head, argument="`model.head`", user="this loss"):
    """The head's (D, C) class vectors, or a ``ValueError`` naming ``argument``."""
    if head is None:
        raise ValueError(f"{argument}: {user} needs a head with class vectors; the model has no head.")
    declared = getattr(head, "class_vectors", None)
    if callable(declared):
        return declared()
    if _plain_linear(head):
        return head.kernel
    if getattr(head, "use_bias", False):
        raise ValueError(
            f"{argument}: {user} compares embeddings with the class vectors, which a bias "
            "ignores; use keras.layers.Dense(C, use_bias=False)."
        )
    raise ValueError(
        f"{argument}: {user} needs the head's class vectors: {type(head).__name__} declares no "
        "`class_vectors()` (see docs/extend.md) and is not a bias-free Dense layer."
    )


def gather_class_vectors(head, class_ids):
    """(K, D) class vectors of ``class_ids`` (K,): the head's own ``gather_class_vectors``
    when it declares one (a row gather of class-major storage), else columns of
    ``class_vectors``."""
    gather = getattr(head, "gather_class_vectors", None)
    if callable(gather):
        return gather(class_ids)
    return ops.transpose(ops.take(class_vectors(head), class_ids, axis=1))


def sub_centers(head):
    """The class vectors per class the head declares (``sub_centers``; 1 when it says
    nothing)."""
    value = getattr(head, "sub_centers", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"`head`: {type(head).__name__}.sub_centers must be an integer >= 1; got {value!r}."
        )
    return value


def sampled_class_cosines(head, features, class_ids):
    """(N, K) cosines between ``features`` (N, D) and the classes ``class_ids`` (K,) of a
    cosine head: the cosines with ``gather_class_vectors`` (a row gather on class-major
    storage), or on a head with sub-centres its own ``class_cosines(features, class_ids)``
    (the max over each class's sub-centres in use)."""
    if sub_centers(head) > 1:
        pooled = getattr(head, "class_cosines", None)
        if not callable(pooled):
            raise ValueError(
                f"`model.head`: {type(head).__name__} declares {head.sub_centers} sub-centres "
                "per class but no class_cosines(features, class_ids) to pool them."
            )
        return pooled(features, class_ids)
    return cosine_similarity(features, ops.transpose(gather_class_vectors(head, class_ids)))


def require_cosine_head(head, argument="`model.head`", user="this loss"):
    """The head when it outputs cosines and gives its class vectors, else a ``ValueError``."""
    if head is None or head_score_kind(head) != "cosine" or not has_class_vectors(head):
        got = "no head" if head is None else (
            f"{type(head).__name__} (score_kind={head_score_kind(head)!r})"
        )
        raise ValueError(
            f"{argument}: {user} needs a cosine head (score_kind='cosine' with class_vectors(), "
            f"e.g. km.layers.LargestMarginHead or PEDCCHead); got {got}."
        )
    return head


# -------------------------------------------------------------------------------- losses
def loss_needs(loss, argument="`loss`"):
    """The loss's ``needs`` (``"scores"`` when it declares none), checked."""
    needs = getattr(loss, "needs", "scores")
    if needs not in NEEDS:
        name = getattr(loss, "name", type(loss).__name__)
        raise ValueError(f"{argument}: {name} has needs={needs!r}; expected one of {NEEDS}.")
    if needs == "model" and not callable(getattr(loss, "compute_model_loss", None)):
        raise ValueError(
            f"{argument}: {loss.name} has needs='model' but no compute_model_loss (subclass "
            "km.losses.ModelLoss)."
        )
    return needs


def loss_score_kind(loss):
    """The head output a ``needs="scores"`` loss is defined on (None: any)."""
    return getattr(loss, "score_kind", None)


def loss_takes_scores_of(loss, score_kind):
    """True when ``loss`` takes the head's scores (``needs="scores"``) and declares them to be
    ``score_kind`` (e.g. ``"cosine"``: what ``km.losses.PartialFC`` can wrap)."""
    return loss_needs(loss) == "scores" and loss_score_kind(loss) == score_kind


def loss_reads_cosines(loss):
    """True when ``loss`` is defined on a cosine head's class cosines and takes them from
    the step's ``scores``: a ``needs="scores"`` loss with ``score_kind="cosine"``, or a
    model-aware one (``needs="model"``) declaring ``score_kind="cosine"``. Such a loss may be
    handed the cosines of a sample of the classes with the labels remapped to its columns
    (what ``km.losses.PartialFC`` wraps)."""
    return loss_needs(loss) in ("scores", "model") and loss_score_kind(loss) == "cosine"


def wants_head(loss):
    """True when ``loss`` (an object or a class) trains a class head: it takes the head's
    scores, or is model-aware and declares ``wants_head`` (default True for model losses)."""
    needs = getattr(loss, "needs", "scores")
    if needs == "scores":
        return True
    if needs == "embedding":
        return False
    return bool(getattr(loss, "wants_head", True))


def check_composition(loss, head, argument="`loss`"):
    """``ValueError`` when ``loss`` cannot train ``head``: a scores loss without a head, or
    one defined on a score kind the head does not output. Model-aware losses check the model
    themselves (``build_state``)."""
    if loss_needs(loss, argument) != "scores":
        return
    wanted = loss_score_kind(loss)
    if wanted is None or head is None:
        return
    got = head_score_kind(head)
    if got is not None and got != wanted:
        raise ValueError(
            f"{argument}: {loss.name} is defined on {wanted} scores but {type(head).__name__} "
            f"outputs {got} (score_kind={got!r})."
        )


def complete_outputs(loss, outputs, embed):
    """``outputs`` with the embedding filled in by ``embed()`` when ``loss`` uses more than
    the class scores and the forward pass did not keep it."""
    if outputs.get("embedding") is None and loss_needs(loss) != "scores":
        outputs = dict(outputs, embedding=embed())
    return outputs


def loss_value(loss, y, outputs, model, sample_weight=None, training=True):
    """The value of ``loss`` for one step: the one place that dispatches on ``needs``.

    ``outputs`` is ``{"embedding": (N, D), "scores": (N, C) or None}`` from the step's forward
    pass (extra keys are passed on to model-aware losses).
    """
    needs = loss_needs(loss)
    if needs == "model":
        return loss.compute_model_loss(y, outputs, model, sample_weight, training=training)
    value = outputs.get(needs)
    if value is None:
        raise ValueError(
            f"`loss`: {loss.name} needs the model's {needs}, which this model does not produce"
            + (": the model has no head." if needs == "scores" else ".")
        )
    return loss(y, value, sample_weight=sample_weight)


@keras.saving.register_keras_serializable(package="keras_margins")
class FunctionLoss(keras.losses.Loss):
    """A loss function ``fn(y_true, y_pred) -> (N,)`` (e.g. ``keras.losses.get(name)``) as a
    ``keras.losses.Loss`` on class scores."""

    def __init__(self, fn, name=None, reduction="sum_over_batch_size", dtype=None):
        if isinstance(fn, (str, dict)):
            fn = keras.saving.deserialize_keras_object(fn)
        super().__init__(name=name or getattr(fn, "__name__", None), reduction=reduction, dtype=dtype)
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config["fn"] = keras.saving.serialize_keras_object(self.fn)
        return config


def as_loss(loss, argument="`loss`", example="km.losses.ArcFace()"):
    """A ``keras.losses.Loss`` from a loss object, its ``.keras`` config dict, a Keras loss
    name or a loss function, with a valid ``needs``; else a ``ValueError`` naming ``argument``."""
    if isinstance(loss, dict):
        loss = keras.saving.deserialize_keras_object(loss)
    elif isinstance(loss, str):
        loss = keras.losses.get(loss)
    if callable(loss) and not isinstance(loss, keras.losses.Loss):
        loss = FunctionLoss(loss)
    if not isinstance(loss, keras.losses.Loss):
        raise ValueError(f"{argument} must be a keras.losses.Loss (e.g. {example}); got {loss!r}.")
    loss_needs(loss, argument)
    return loss
