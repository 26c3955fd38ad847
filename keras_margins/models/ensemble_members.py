"""The members of a ``km.models.EnsembleModel``: how a ``(loss, head_or_None)`` pair is checked,
how member k's loss is applied to member k's outputs, and the paper's four members."""

import keras

from keras_margins import layers, losses, miners
from keras_margins.losses._base import ModelLoss
from keras_margins.models.ensemble_member_losses import (
    SemiHardTripletHingeLoss,
    SmoothedCrossEntropy,
)
from keras_margins.protocols import as_loss, check_composition, loss_value, wants_head


def _model_aware(loss):
    """True for a model-aware loss (``needs="model"``, which ``km.protocols`` requires to
    define ``compute_model_loss``): it reads ``model.head`` / ``model.backbone`` and keeps
    state on the model, which an ensemble member does not have."""
    return callable(getattr(loss, "compute_model_loss", None))


class MemberLoss(ModelLoss):
    """Member k's loss applied to member k's outputs.

    ``km.losses.LossEnsemble`` hands each of its losses one ``outputs`` dict; the
    ``EnsembleModel`` puts every member's ``{"embedding", "scores"}`` in
    ``outputs["members"]``, and this adapter evaluates ``loss`` on entry ``index`` through
    ``km.protocols.loss_value``. Built by the model, never serialised.
    """

    #: Trains its own head (given to ``loss_value`` in the member's outputs), not ``model.head``.
    wants_head = False

    def __init__(self, index, loss):
        self.index = index
        self.loss = loss
        super().__init__(name=loss.name)

    def compute_model_loss(self, y, outputs, model, sample_weight=None, training=True):
        member = outputs["members"][self.index]
        return loss_value(self.loss, y, member, model, sample_weight, training=training)

    def wrapped_losses(self):
        return [self.loss]


def as_member(item, index):
    """``(loss, head_or_None)`` from a member pair (or its ``.keras`` config), checked through
    the loss's and head's declarations (``km.protocols``); ``ValueError`` naming
    ``members[index]`` otherwise."""
    where = f"`members`[{index}]"
    if isinstance(item, dict):  # a config entry is a pair of dicts
        item = (item.get("loss"), item.get("head"))
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        raise ValueError(f"{where} must be a (loss, head_or_None) pair; got {item!r}.")
    loss, head = item
    loss = as_loss(loss, f"{where}: the loss", example="km.losses.TripletMarginLoss()")
    if isinstance(head, dict):
        head = keras.saving.deserialize_keras_object(head)
    if _model_aware(loss):
        raise ValueError(
            f"{where}: {loss.name} is model-aware (a km.losses.ModelLoss); an EnsembleModel "
            "member must work on class scores (with a head) or on the embedding (head None)."
        )
    if head is not None and not isinstance(head, keras.layers.Layer):
        raise ValueError(f"{where}: the head must be a Keras layer or None; got {head!r}.")
    if wants_head(loss) and head is None:
        raise ValueError(
            f"{where}: {loss.name} needs class scores: pair it with a head, e.g. "
            "(km.losses.ArcFace(), km.layers.LargestMarginHead(num_classes))."
        )
    if not wants_head(loss) and head is not None:
        raise ValueError(
            f"{where}: {loss.name} works on the embedding (it takes no class scores): its head "
            "must be None."
        )
    check_composition(loss, head, where)
    return loss, head


#: The prior of ``paper_members``' coefficients c_k (Zabihzadeh et al.'s demo configuration).
PAPER_PRIOR = (2, 1, 2, 3)


def paper_members(num_classes, authors=False):
    """The four members of Zabihzadeh et al.'s multi-embedding ensemble (WEDL), as
    ``EnsembleModel`` ``members``; use them with ``prior=PAPER_PRIOR``.

    Softmax cross-entropy on a ``Dense`` head, a semi-hard triplet loss (margin 1), binomial
    deviance (the authors' slopes 2 and 25: ``cost=12.5``) and ProxyNCA (proxy scale 3,
    label smoothing 0.1) with its proxies in a ``LargestMarginHead``.

    ``authors=False`` (default) uses the library's general losses for the first two:
    ``SparseCategoricalCrossentropy`` without smoothing and
    ``TripletMarginLoss(1.0, miner=SemiHardMiner())`` (FaceNet / TensorFlow Addons semi-hard
    rule on squared distances). ``authors=True`` uses the authors' code's forms:
    ``SmoothedCrossEntropy(0.15)`` and ``SemiHardTripletHingeLoss(margin=1, window=0.1)``
    (Euclidean distances, every triplet with 0 < d_an − d_ap <= 0.1). The difference and its
    measured effect: ``docs/papers.md`` §5.

    Args:
        num_classes: C, the training classes of the two class-score members.
        authors: use the authors' cross-entropy and triplet forms (default False).

    Returns:
        A list of four ``(loss, head_or_None)`` pairs, new objects on each call.

    Example:
        >>> import keras, keras_margins as km
        >>> from keras_margins.models.ensemble_members import PAPER_PRIOR, paper_members
        >>> backbone = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)])
        >>> model = km.models.EnsembleModel(backbone, paper_members(5), embedding_dim=4,
        ...                                 prior=PAPER_PRIOR)
        >>> [type(loss).__name__ for loss, _ in paper_members(5)][1:]
        ['TripletMarginLoss', 'BinomialDevianceLoss', 'ProxyNCALoss']
        >>> [type(loss).__name__ for loss, _ in paper_members(5, authors=True)][:2]
        ['SmoothedCrossEntropy', 'SemiHardTripletHingeLoss']

    Reference:
        Zabihzadeh, Alitbi & Mousavirad, arXiv 2107.01130 (2021); authors' code
        ``demo_WEDL_run_best.py``, ``Losses.py``, ``WEL_DML.py``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2; got {num_classes!r}.")
    if not isinstance(authors, bool):
        raise ValueError(f"`authors` must be True or False; got {authors!r}.")
    if authors:
        classifier = SmoothedCrossEntropy(label_smoothing=0.15)
        triplet = SemiHardTripletHingeLoss(margin=1.0, window=0.1)
    else:
        classifier = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        triplet = losses.TripletMarginLoss(1.0, miner=miners.SemiHardMiner())
    return [
        (classifier, keras.layers.Dense(num_classes)),
        (triplet, None),
        (losses.BinomialDevianceLoss(alpha=2.0, beta=0.5, cost=12.5), None),
        (losses.ProxyNCALoss(proxy_scale=3.0, label_smoothing=0.1), layers.LargestMarginHead(num_classes)),
    ]
