"""The library's tables of named choices, read by ``keras-margins`` and ``km.tuning``.

* ``FAMILIES``: the training recipes behind ``keras-margins train --loss`` and
  ``km.tuning.MarginHyperModel(losses=...)``: a loss class, the head it trains, the
  constructor arguments a search may vary (with their ranges) and which of them ``--scale``
  and ``--margin`` set; the pair-wise recipes (``circle_pair``, ``ensemble``) are entries too.
* ``HEADS``: the ``--head`` choices; ``HEAD_OPTIONS``: the integer head arguments the command
  line sets (``--sub-centers``) and the heads that take them.
* ``IMAGE_ARCHITECTURES`` / ``IMAGE_BACKBONES``: the image backbones of
  ``km.models.image_backbone`` (and ``--backbone``).
* ``TFDS_DATASETS``: the TFDS datasets of ``km.data.load_tfds`` (and ``--dataset``).
* ``TUNERS``: the KerasTuner search algorithms of ``km.tuning.make_tuner`` (and ``--tuner``).

Nothing here imports Keras: the tables name the library's classes by import path
(``"keras_margins.losses:ArcFace"``) and resolve them on first use, so the command line builds
its parser and answers a usage error without loading Keras or TensorFlow. The tests resolve
every entry, so a renamed class fails them instead of silently dropping a choice.

Example:
    >>> from keras_margins.registry import FAMILIES
    >>> family = FAMILIES["circle"]
    >>> family.loss.__name__, family.option_map()
    ('CircleLoss', {'scale': 'gamma', 'margin': 'margin'})
    >>> loss = family.make_loss(**family.loss_arguments(scale=64.0))   # CircleLoss(gamma=64)
"""

import dataclasses
import importlib
import inspect

#: The command-line options that map onto a loss argument (``--scale``, ``--margin``).
OPTIONS = ("scale", "margin")
_SAMPLINGS = ("linear", "log")


def resolve(reference):
    """The object a table entry names: ``"package.module:attribute"`` is imported; anything
    else (a class, a function, None) is returned as it is."""
    if not isinstance(reference, str):
        return reference
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _check_reference(value, argument, what):
    if isinstance(value, str):
        module, colon, attribute = value.partition(":")
        if not (colon and module and attribute.isidentifier()):
            raise ValueError(
                f"`{argument}` must be {what} or an import path 'package.module:Name'; got {value!r}."
            )


@dataclasses.dataclass(frozen=True)
class Param:
    """A float constructor argument of a loss, searched in ``[min_value, max_value]``.

    Args:
        name: the loss constructor's argument (``"scale"``, ``"gamma"``, ``"delta"``, ...).
        min_value: lower end of the search range.
        max_value: upper end of the search range.
        default: value of a search's first trial (inside the range). Default ``None``: the
            loss constructor's own default (``LossFamily.param_default``).
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
    default: float = None
    sampling: str = "linear"
    column: str = None

    def __post_init__(self):
        if self.sampling not in _SAMPLINGS:
            raise ValueError(f"`sampling` must be one of {_SAMPLINGS}; got {self.sampling!r}.")
        if not self.min_value < self.max_value:
            raise ValueError(
                f"Param {self.name!r}: need min_value < max_value; got {self.min_value}, "
                f"{self.max_value}."
            )
        if self.default is not None and not self.min_value <= self.default <= self.max_value:
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


@dataclasses.dataclass(frozen=True)
class HeadParam:
    """An integer constructor argument of a recipe's head (``sub_centers`` of the cosine
    head), searched in ``[min_value, max_value]`` and set by the command line option of the
    same name (``--sub-centers``).

    Args:
        name: the head constructor's argument.
        min_value: lower end of the search range (an integer).
        max_value: upper end of the search range (an integer > ``min_value``).
        default: the recipe's value (what ``make_head`` uses unless told otherwise; a
            search's first trial), inside the range.

    Example:
        >>> from keras_margins.registry import HeadParam
        >>> HeadParam("sub_centers", 1, 5, 3).option
        '--sub-centers'
    """

    name: str
    min_value: int
    max_value: int
    default: int

    def __post_init__(self):
        values = (self.min_value, self.max_value, self.default)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ValueError(f"HeadParam {self.name!r}: the range and default must be integers.")
        if not self.min_value <= self.default <= self.max_value or self.min_value == self.max_value:
            raise ValueError(
                f"HeadParam {self.name!r}: need min_value <= default <= max_value and "
                f"min_value < max_value; got {values}."
            )

    @property
    def option(self):
        """The command-line option that sets it."""
        return "--" + self.name.replace("_", "-")


#: Integer head arguments the command line can set (``--sub-centers``) -> the ``HEADS``
#: entries whose class takes them.
HEAD_OPTIONS = {"sub_centers": ("cosine",)}


class LossFamily:
    """One training recipe: a loss, the head it trains (if any) and its searchable arguments.

    Args:
        loss: a ``keras.losses.Loss`` subclass built with keyword arguments, its import path
            (``"keras_margins.losses:ArcFace"``, resolved on first use), or ``None`` for plain
            softmax cross-entropy on logits (or for a recipe whose ``model`` computes its own
            loss).
        head: a head layer class called as ``head(num_classes, name=...)``, its import path,
            or ``None`` for a bias-free ``keras.layers.Dense``. Unused when the loss trains
            no head.
        params: tuple of ``Param``, the loss arguments a search varies. Those whose ``option``
            is ``"scale"`` or ``"margin"`` are what ``keras-margins train --scale/--margin``
            sets. Default ``()``.
        trainable_head: whether the head has weights to train (False for PEDCC's fixed
            centroids, so no head learning-rate multiplier is searched). Default True.
        tuned: part of ``MarginHyperModel``'s default search space. Default True.
        train_callbacks: callback classes (or import paths) that ``keras-margins train``
            attaches (POD's δ schedule). Default ``()``.
        model: ``None`` (default), or a function (or its import path)
            ``model(backbone, num_classes, **model_options) -> keras.Model`` for a recipe that
            is a model computing its own loss (the paper ensemble). Its keyword arguments are
            the recipe's ``model_options``.
        head_params: tuple of ``HeadParam``, integer head arguments of the recipe (their
            ``default`` is what ``make_head`` passes; a search varies them): sub-center
            ArcFace's ``sub_centers``. Default ``()``.
        norm_quality: the embedding's norm before normalisation is a quality score of the
            input (MagFace, AdaFace): ``keras-margins train --export`` serves it as ``norm``
            (``km.export.export_embedding_model(include_norm=True)``). Default False.

    What the recipe trains is read from the loss's own declaration
    (``km.protocols.wants_head``): a loss on class scores (or a model-aware loss that wants a
    head) trains ``MarginModel(backbone, head)``; a loss on the embedding (pair losses)
    trains the backbone itself on P×K batches; a ``model`` recipe has its own heads and trains
    on P×K batches.

    Example:
        >>> import keras_margins as km
        >>> from keras_margins.registry import LossFamily, Param
        >>> family = LossFamily(km.losses.CosFace, km.layers.LargestMarginHead,
        ...                     (Param("scale", 8, 64, 30, "log"), Param("margin", 0.1, 0.5, 0.35)))
        >>> family.loss_arguments(scale=16.0, margin=0.2)
        {'scale': 16.0, 'margin': 0.2}
        >>> # km.tuning.MarginHyperModel(build, 10, families={"cosface": family}) searches it
    """

    def __init__(self, loss, head=None, params=(), trainable_head=True, tuned=True,
                 train_callbacks=(), model=None, head_params=(), norm_quality=False):
        _check_reference(loss, "loss", "a keras.losses.Loss subclass, None")
        _check_reference(head, "head", "a Keras layer class, None")
        _check_reference(model, "model", "a function, None")
        if loss is not None and not isinstance(loss, str):
            _require_subclass(loss, "loss", "keras.losses.Loss subclass or None", "losses", "Loss")
        if head is not None and not isinstance(head, str):
            _require_subclass(head, "head", "Keras layer class or None", "layers", "Layer")
        if model is not None and not isinstance(model, str) and not callable(model):
            raise ValueError(f"`model` must be a function or None; got {model!r}.")
        params = tuple(params)
        if not all(isinstance(p, Param) for p in params):
            raise ValueError(f"`params` must be a tuple of Param; got {params!r}.")
        head_params = tuple(head_params)
        if not all(isinstance(p, HeadParam) for p in head_params):
            raise ValueError(f"`head_params` must be a tuple of HeadParam; got {head_params!r}.")
        self._loss, self._head, self._model = loss, head, model
        self.head_params = head_params
        self.norm_quality = bool(norm_quality)
        self._callbacks = tuple(train_callbacks)
        self.params = params
        self.trainable_head = bool(trainable_head)
        self.tuned = bool(tuned)

    def __repr__(self):
        return (f"LossFamily(loss={self._loss!r}, head={self._head!r}, params={self.params!r}, "
                f"tuned={self.tuned}, model={self._model!r}, head_params={self.head_params!r})")

    # ----------------------------------------------------------------------------- what it is
    @property
    def loss(self):
        """The loss class (None: softmax cross-entropy, or a ``model`` recipe)."""
        value = resolve(self._loss)
        if value is not None and self._loss is not value:
            _require_subclass(value, "loss", "keras.losses.Loss subclass", "losses", "Loss")
        return value

    @property
    def head(self):
        """The head class (None: a bias-free ``keras.layers.Dense``)."""
        return resolve(self._head)

    @property
    def head_name(self):
        """The ``HEADS`` entry of the recipe's head (None when it is not one of them)."""
        for name, reference in HEADS.items():
            if reference == self._head:
                return name
        return None

    @property
    def model(self):
        """The model function of a recipe that is a model (the ensemble), else None."""
        return resolve(self._model)

    @property
    def train_callbacks(self):
        """The callback classes ``keras-margins train`` attaches."""
        return tuple(resolve(c) for c in self._callbacks)

    @property
    def loss_name(self):
        """The loss class's name (``"SparseCategoricalCrossentropy"`` for ``loss=None``)."""
        if self._model is not None and self._loss is None:
            return getattr(self.model, "__name__", "model")
        return "SparseCategoricalCrossentropy" if self._loss is None else self.loss.__name__

    @property
    def wants_head(self):
        """Whether the recipe trains a class head of ``HEADS`` (``km.protocols.wants_head`` of
        its loss; False for a ``model`` recipe, which has its own heads)."""
        if self._model is not None:
            return False
        if self._loss is None:
            return True  # softmax cross-entropy on the head's logits
        from keras_margins.protocols import wants_head

        return wants_head(self.loss)

    @property
    def pair_batches(self):
        """Whether the recipe trains on P×K batches (every recipe that trains no class head:
        its losses compare the embeddings of a batch with each other)."""
        return not self.wants_head

    @property
    def model_options(self):
        """The keyword arguments of the ``model`` function (``()`` without one)."""
        if self._model is None:
            return ()
        parameters = list(inspect.signature(self.model).parameters.values())[2:]
        return tuple(p.name for p in parameters if p.default is not inspect.Parameter.empty)

    def option_map(self):
        """``{option: loss argument}`` for ``--scale``/``--margin`` (e.g. Circle: scale→gamma)."""
        return {p.option: p.name for p in self.params if p.option in OPTIONS}

    def param_default(self, param):
        """``param.default``, or the loss constructor's own default when it is None."""
        if param.default is not None:
            return param.default
        value = inspect.signature(self.loss).parameters[param.name].default
        if value is inspect.Parameter.empty:
            raise ValueError(f"Param {param.name!r}: {self.loss_name} has no default for it.")
        return float(value)

    # ----------------------------------------------------------------------------- building
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
        """A new loss object (``kwargs`` go to the loss class); None for a ``model`` recipe
        (the model computes its own loss)."""
        if self._model is not None and self._loss is None:
            if kwargs:
                raise ValueError(f"{self.loss_name} takes no loss arguments; got {sorted(kwargs)}.")
            return None
        if self._loss is None:
            import keras

            return keras.losses.SparseCategoricalCrossentropy(from_logits=True, **kwargs)
        return self.loss(**kwargs)

    def head_arguments(self, **options):
        """The head's keyword arguments: each ``head_params`` default, overridden by the
        ``options`` given (None values are left out); an option the recipe's head does not
        take raises ``ValueError`` naming it."""
        arguments = {p.name: p.default for p in self.head_params}
        for option, value in options.items():
            if value is None:
                continue
            if option not in arguments and self.head_name not in HEAD_OPTIONS.get(option, ()):
                raise ValueError(f"`{option}` does not apply to the head of {self.loss_name}.")
            arguments[option] = value
        return arguments

    def make_head(self, num_classes, name="head", **options):
        """A new head layer for ``num_classes`` classes, with ``head_arguments(**options)``
        (``ValueError`` for a recipe that trains no class head)."""
        if not self.wants_head:
            raise ValueError(f"{self.loss_name} trains no class head.")
        return make_head(self._head, num_classes, name, **self.head_arguments(**options))

    def build_model(self, backbone, num_classes, head=None, name=None, **model_options):
        """The model this recipe trains on ``backbone``: ``MarginModel(backbone, head)`` (the
        family's head unless ``head`` is given) when the loss trains a head, the backbone
        itself for a loss on the embedding, ``model(backbone, num_classes, **model_options)``
        for a ``model`` recipe."""
        unknown = set(model_options) - set(self.model_options)
        if unknown:
            raise ValueError(f"{sorted(unknown)} do not apply to {self.loss_name}.")
        if self._model is not None:
            return self.model(backbone, num_classes, **model_options)
        if not self.wants_head:
            if head is not None:
                raise ValueError(f"{self.loss_name} trains the embedding; it takes no head.")
            return backbone
        from keras_margins.models import MarginModel

        head = self.make_head(num_classes) if head is None else head
        return MarginModel(backbone, head, name=name)


def _require_subclass(value, argument, what, package, base):
    import keras

    parent = getattr(getattr(keras, package), base)
    if not (isinstance(value, type) and issubclass(value, parent)):
        raise ValueError(f"`{argument}` must be a {what}; got {value!r}.")


def make_head(head, num_classes, name="head", **options):
    """``head(num_classes, name=name, **options)`` (``head`` a class or its import path), or a
    bias-free ``Dense`` when ``head`` is None (which takes no options)."""
    head = resolve(head)
    if head is None:
        import keras

        if options:
            raise ValueError(f"{sorted(options)} do not apply to a Dense head.")
        return keras.layers.Dense(num_classes, use_bias=False, name=name)
    return head(num_classes, name=name, **options)


def paper_ensemble(backbone, num_classes, head_dim=64):
    """Zabihzadeh et al.'s four-loss ensemble on ``backbone`` (``km.models.EnsembleModel``
    with ``paper_members`` and ``PAPER_PRIOR``): one ``head_dim`` embedding head per member,
    the test embedding their weighted concatenation (4 × ``head_dim``)."""
    from keras_margins.models import EnsembleModel
    from keras_margins.models.ensemble_model import PAPER_PRIOR, paper_members

    return EnsembleModel(backbone, paper_members(num_classes), embedding_dim=head_dim,
                         prior=PAPER_PRIOR, name="ensemble_model")


def _scale(low, high, default):
    return Param("scale", low, high, default, "log")


_SAMPLE_MARGIN = Param("sample_margin_weight", 0.0, 2.0, 0.0)

#: Head choices of ``keras-margins train --head`` (None: a bias-free Dense).
HEADS = {
    "cosine": "keras_margins.layers:LargestMarginHead",
    "virtual_softmax": "keras_margins.layers:VirtualSoftmaxHead",
    "pedcc": "keras_margins.layers:PEDCCHead",
    "dense": None,
}
_COSINE = HEADS["cosine"]

# Scale ranges reach the optima reported by Musgrave et al. 2020 ("A Metric Learning Reality
# Check": s ≈ 50–220) and down to the small s that suit few classes; margins span the papers'
# defaults (ArcFace 0.5 rad, CosFace 0.35, normalised SphereFace m1 = 1.5, Circle m = 0.25 with
# γ = 256, POD δ = 0.05) with room on either side.
# The order of the tuned families is the order of the tuner's `loss` choice (kept stable so
# that seeded searches repeat).
FAMILIES = {
    "arcface": LossFamily(
        "keras_margins.losses:ArcFace", _COSINE,
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.5), _SAMPLE_MARGIN),
    ),
    "cosface": LossFamily(
        "keras_margins.losses:CosFace", _COSINE,
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.35), _SAMPLE_MARGIN),
    ),
    "sphereface": LossFamily(
        "keras_margins.losses:SphereFace", _COSINE,
        (_scale(4.0, 64.0, 30.0), Param("margin", 1.1, 2.5, 1.5), _SAMPLE_MARGIN),
    ),
    "lmsoftmax": LossFamily(
        "keras_margins.losses:LMSoftmax", _COSINE, (_scale(1.0, 64.0, 5.0), _SAMPLE_MARGIN)
    ),
    "virtual_softmax": LossFamily("keras_margins.losses:VirtualSoftmax", HEADS["virtual_softmax"]),
    # PEDCC centroids are fixed (no head learning rate). A search varies δ as a constant; the
    # train command runs the paper's δ schedule (PODDelta) from the --margin start value.
    "pod": LossFamily(
        "keras_margins.losses:POD", HEADS["pedcc"],
        (Param("delta", 0.01, 1.0, 0.05, "log", column="margin"),
         Param("decorrelation_weight", 0.1, 10.0, 1.0, "log")),
        trainable_head=False,
        train_callbacks=("keras_margins.callbacks:PODDelta",),
    ),
    "circle": LossFamily(
        "keras_margins.losses:CircleLoss", _COSINE,
        (Param("gamma", 8.0, 256.0, 64.0, "log", column="scale"),
         Param("margin", 0.1, 0.45, 0.25)),
    ),
    # NormFace has no margin; searched only when asked for (losses=("normface",)).
    "normface": LossFamily(
        "keras_margins.losses:NormFace", _COSINE, (_scale(4.0, 64.0, 16.0), _SAMPLE_MARGIN),
        tuned=False,
    ),
    # The baseline: softmax cross-entropy on a bias-free Dense head.
    "softmax": LossFamily(None, None, tuned=False),
    # Pair-wise recipes (P×K batches, no class head): Circle loss on the embedding with the
    # loss's own defaults (the paper's fine-grained retrieval setting), and the four-loss
    # ensemble of Zabihzadeh et al.
    "circle_pair": LossFamily(
        "keras_margins.losses:PairCircleLoss", None,
        (Param("gamma", 8.0, 256.0, None, "log", column="scale"), Param("margin", 0.1, 0.45)),
        tuned=False,
    ),
    "ensemble": LossFamily(None, None, tuned=False, model=paper_ensemble),
    # Later margin losses on the cosine head (docs/papers.md §8), searched only when asked for.
    # Their state (t, norm statistics, step counter, learned bias) lives in the model.
    # Sub-center ArcFace: ArcFace on the cosine head with K sub-centres per class (the
    # paper's K = 3; --sub-centers / a search over 1..5).
    "subcenter_arcface": LossFamily(
        "keras_margins.losses:SubCenterArcFace", _COSINE,
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.5)), tuned=False,
        head_params=(HeadParam("sub_centers", 1, 5, 3),),
    ),
    "curricularface": LossFamily(
        "keras_margins.losses:CurricularFace", _COSINE,
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.5)), tuned=False,
    ),
    "magface": LossFamily(
        "keras_margins.losses:MagFace", _COSINE,
        (_scale(4.0, 256.0, 30.0), Param("upper_margin", 0.5, 1.2, 0.8, column="margin"),
         Param("regularizer_weight", 5.0, 200.0, 35.0, "log")), tuned=False,
        norm_quality=True,
    ),
    "adaface": LossFamily(
        "keras_margins.losses:AdaFace", _COSINE,
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.4), Param("h", 0.1, 1.0, 0.333)),
        tuned=False, norm_quality=True,
    ),
    "elasticface": LossFamily(
        "keras_margins.losses:ElasticFace", _COSINE,
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.5), Param("std", 0.0, 0.2, 0.05)),
        tuned=False,
    ),
    "uniface": LossFamily(
        "keras_margins.losses:UniFace", _COSINE,
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.4),
         Param("negative_weight", 0.1, 10.0, 1.0, "log")), tuned=False,
    ),
}


def tuned_families(families=None):
    """Names of the families in the default search space (``tuned=True``)."""
    families = FAMILIES if families is None else families
    return tuple(name for name, family in families.items() if family.tuned)


#: Image backbones of ``km.models.image_backbone``: name -> (``keras.applications``
#: constructor, the pixel scaling it expects (``km.models.PIXEL_SCALINGS``), minimum image
#: side). The scaling is the one ``keras.applications.<family>.preprocess_input`` applies;
#: ``"raw"`` where the architecture rescales inside (EfficientNet).
IMAGE_ARCHITECTURES = {
    "resnet50": ("ResNet50", "caffe", 32),
    "resnet101": ("ResNet101", "caffe", 32),
    "resnet50_v2": ("ResNet50V2", "symmetric", 32),
    "inception_v3": ("InceptionV3", "symmetric", 75),
    "densenet121": ("DenseNet121", "imagenet", 32),
    "mobilenet_v2": ("MobileNetV2", "symmetric", 32),
    "efficientnet_b0": ("EfficientNetB0", "raw", 32),
}
#: ``km.models.image_backbone`` choices: the small CNN and the ``keras.applications`` ones.
IMAGE_BACKBONES = ("small_cnn", *IMAGE_ARCHITECTURES)

#: TFDS datasets of ``km.data.load_tfds``: name -> (label feature, number of classes, first
#: test class of the class-disjoint retrieval split, or None to keep TFDS's train/test splits).
TFDS_DATASETS = {
    "cars196": ("label", 196, 98),
    "caltech_birds2011": ("label", 200, 100),
    "stanford_online_products": ("class_id", 22634, 11318),
    "mnist": ("label", 10, None),
    "cifar10": ("label", 10, None),
    "cifar100": ("label", 100, None),
}

#: Search algorithms of ``km.tuning.make_tuner`` (``kind``): name -> KerasTuner class.
TUNERS = {"random": "keras_tuner:RandomSearch", "bayesian": "keras_tuner:BayesianOptimization"}
