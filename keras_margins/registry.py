"""The loss families on offer: one table read by ``keras-margins`` and ``km.tuning``.

Each entry of ``FAMILIES`` names a loss class, the head it trains, the constructor arguments a
search may vary (with their ranges) and which of them the command line's ``--scale`` and
``--margin`` set. The names are the ``keras-margins train --loss`` choices and the
``km.tuning.MarginHyperModel(losses=...)`` names.

The classes are referenced directly, so renaming or removing a loss breaks ``import
keras_margins.registry`` with an error instead of silently dropping a choice.

Example:
    >>> from keras_margins.registry import FAMILIES
    >>> family = FAMILIES["circle"]
    >>> family.loss.__name__, family.option_map()
    ('CircleLoss', {'scale': 'gamma', 'margin': 'margin'})
    >>> loss = family.make_loss(**family.loss_arguments(scale=64.0))   # CircleLoss(gamma=64)
"""

import dataclasses

import keras

from keras_margins import callbacks, layers, losses

#: The command-line options that map onto a loss argument (``--scale``, ``--margin``).
OPTIONS = ("scale", "margin")
_SAMPLINGS = ("linear", "log")


@dataclasses.dataclass(frozen=True)
class Param:
    """A float constructor argument of a loss, searched in ``[min_value, max_value]``.

    Args:
        name: the loss constructor's argument (``"scale"``, ``"gamma"``, ``"delta"``, ...).
        min_value: lower end of the search range.
        max_value: upper end of the search range.
        default: value of a search's first trial (inside the range).
        sampling: ``"linear"`` (default) or ``"log"`` (log-uniform; needs ``min_value > 0``).
        column: the option/column this argument answers to when its name differs: Circle's
            ``gamma`` is its ``"scale"`` (``--scale``), POD's ``delta`` its ``"margin"``.
            Default ``None``: the argument's own name.

    Example:
        >>> from keras_margins.registry import Param
        >>> Param("margin", 0.05, 0.7, 0.5).option
        'margin'
        >>> Param("gamma", 8.0, 256.0, 64.0, "log", column="scale").option
        'scale'
    """

    name: str
    min_value: float
    max_value: float
    default: float
    sampling: str = "linear"
    column: str = None

    def __post_init__(self):
        if self.sampling not in _SAMPLINGS:
            raise ValueError(f"`sampling` must be one of {_SAMPLINGS}; got {self.sampling!r}.")
        if not self.min_value <= self.default <= self.max_value:
            raise ValueError(
                f"Param {self.name!r}: need min_value <= default <= max_value; got "
                f"{self.min_value}, {self.default}, {self.max_value}."
            )
        if self.sampling == "log" and not self.min_value > 0:
            raise ValueError(f"Param {self.name!r}: log sampling needs min_value > 0.")

    @property
    def option(self):
        """The option / results column this argument answers to (``column`` or ``name``)."""
        return self.column or self.name


def _is_subclass(value, base):
    return isinstance(value, type) and issubclass(value, base)


@dataclasses.dataclass(frozen=True)
class LossFamily:
    """One loss family: the loss class, its head class and its searchable arguments.

    Args:
        loss: a ``keras.losses.Loss`` subclass built with keyword arguments, or ``None`` for
            plain softmax cross-entropy on logits.
        head: a head layer class called as ``head(num_classes, name=...)``, or ``None`` for a
            bias-free ``keras.layers.Dense``.
        params: tuple of ``Param``, the loss arguments a search varies. Those whose ``option``
            is ``"scale"`` or ``"margin"`` are what ``keras-margins train --scale/--margin``
            sets. Default ``()``.
        trainable_head: whether the head has weights to train (False for PEDCC's fixed
            centroids, so no head learning-rate multiplier is searched). Default True.
        tuned: part of ``MarginHyperModel``'s default search space. Default True.
        train_callbacks: callback classes that ``keras-margins train`` attaches (POD's δ
            schedule). Default ``()``.

    Example:
        >>> import keras_margins as km
        >>> from keras_margins.registry import LossFamily, Param
        >>> family = LossFamily(km.losses.CosFace, km.layers.LargestMarginHead,
        ...                     (Param("scale", 8, 64, 30, "log"), Param("margin", 0.1, 0.5, 0.35)))
        >>> family.loss_arguments(scale=16.0, margin=0.2)
        {'scale': 16.0, 'margin': 0.2}
        >>> # km.tuning.MarginHyperModel(build, 10, families={"cosface": family}) searches it
    """

    loss: type
    head: type
    params: tuple = ()
    trainable_head: bool = True
    tuned: bool = True
    train_callbacks: tuple = ()

    def __post_init__(self):
        if self.loss is not None and not _is_subclass(self.loss, keras.losses.Loss):
            raise ValueError(
                f"`loss` must be a keras.losses.Loss subclass or None; got {self.loss!r}."
            )
        if self.head is not None and not _is_subclass(self.head, keras.layers.Layer):
            raise ValueError(f"`head` must be a Keras layer class or None; got {self.head!r}.")
        if not all(isinstance(p, Param) for p in self.params):
            raise ValueError(f"`params` must be a tuple of Param; got {self.params!r}.")

    @property
    def loss_name(self):
        """The loss class's name (``"SparseCategoricalCrossentropy"`` for ``loss=None``)."""
        return "SparseCategoricalCrossentropy" if self.loss is None else self.loss.__name__

    @property
    def needs(self):
        """What the loss consumes (``km.losses.MarginLoss.needs``): ``"scores"`` for a plain
        ``keras.Sequential([backbone, head])``, else a ``km.models.MarginModel`` is needed."""
        return "scores" if self.loss is None else getattr(self.loss, "needs", "scores")

    def option_map(self):
        """``{option: loss argument}`` for ``--scale``/``--margin`` (e.g. Circle: scale→gamma)."""
        return {p.option: p.name for p in self.params if p.option in OPTIONS}

    def loss_arguments(self, **options):
        """The loss's keyword arguments for option values (``None`` values are left out, so
        the loss keeps its paper default). An option the family has no argument for raises
        ``ValueError`` naming it."""
        mapping = self.option_map()
        kwargs = {}
        for option, value in options.items():
            if value is None:
                continue
            if option not in mapping:
                raise ValueError(f"`{option}` does not apply to {self.loss_name}.")
            kwargs[mapping[option]] = value
        return kwargs

    def make_loss(self, **kwargs):
        """A new loss object (``kwargs`` go to the loss class)."""
        if self.loss is None:
            return keras.losses.SparseCategoricalCrossentropy(from_logits=True, **kwargs)
        return self.loss(**kwargs)

    def make_head(self, num_classes, name="head"):
        """A new head layer for ``num_classes`` classes."""
        return make_head(self.head, num_classes, name)


def make_head(head, num_classes, name="head"):
    """``head(num_classes, name=name)``, or a bias-free ``Dense`` when ``head`` is None."""
    if head is None:
        return keras.layers.Dense(num_classes, use_bias=False, name=name)
    return head(num_classes, name=name)


def _scale(low, high, default):
    return Param("scale", low, high, default, "log")


_SAMPLE_MARGIN = Param("sample_margin_weight", 0.0, 2.0, 0.0)

#: Head choices of ``keras-margins train --head`` (None: a bias-free Dense).
HEADS = {
    "cosine": layers.LargestMarginHead,
    "virtual_softmax": layers.VirtualSoftmaxHead,
    "pedcc": layers.PEDCCHead,
    "dense": None,
}

# Scale ranges reach the optima reported by Musgrave et al. 2020 ("A Metric Learning Reality
# Check": s ≈ 50–220) and down to the small s that suit few classes; margins span the papers'
# defaults (ArcFace 0.5 rad, CosFace 0.35, normalised SphereFace m1 = 1.5, Circle m = 0.25 with
# γ = 256, POD δ = 0.05) with room on either side.
# The order of the tuned families is the order of the tuner's `loss` choice (kept stable so
# that seeded searches repeat).
FAMILIES = {
    "arcface": LossFamily(
        losses.ArcFace, layers.LargestMarginHead,
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.5), _SAMPLE_MARGIN),
    ),
    "cosface": LossFamily(
        losses.CosFace, layers.LargestMarginHead,
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.35), _SAMPLE_MARGIN),
    ),
    "sphereface": LossFamily(
        losses.SphereFace, layers.LargestMarginHead,
        (_scale(4.0, 64.0, 30.0), Param("margin", 1.1, 2.5, 1.5), _SAMPLE_MARGIN),
    ),
    "lmsoftmax": LossFamily(
        losses.LMSoftmax, layers.LargestMarginHead, (_scale(1.0, 64.0, 5.0), _SAMPLE_MARGIN)
    ),
    "virtual_softmax": LossFamily(losses.VirtualSoftmax, layers.VirtualSoftmaxHead),
    # PEDCC centroids are fixed (no head learning rate). A search varies δ as a constant; the
    # train command runs the paper's δ schedule (PODDelta) from the --margin start value.
    "pod": LossFamily(
        losses.POD, layers.PEDCCHead,
        (Param("delta", 0.01, 1.0, 0.05, "log", column="margin"),
         Param("decorrelation_weight", 0.1, 10.0, 1.0, "log")),
        trainable_head=False,
        train_callbacks=(callbacks.PODDelta,),
    ),
    "circle": LossFamily(
        losses.CircleLoss, layers.LargestMarginHead,
        (Param("gamma", 8.0, 256.0, 64.0, "log", column="scale"),
         Param("margin", 0.1, 0.45, 0.25)),
    ),
    # NormFace has no margin; searched only when asked for (losses=("normface",)).
    "normface": LossFamily(
        losses.NormFace, layers.LargestMarginHead, (_scale(4.0, 64.0, 16.0), _SAMPLE_MARGIN),
        tuned=False,
    ),
    # The baseline: softmax cross-entropy on a bias-free Dense head.
    "softmax": LossFamily(None, None, tuned=False),
}


def tuned_families(families=None):
    """Names of the families in the default search space (``tuned=True``)."""
    families = FAMILIES if families is None else families
    return tuple(name for name, family in families.items() if family.tuned)
