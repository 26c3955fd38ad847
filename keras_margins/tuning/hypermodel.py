"""``MarginHyperModel``: the KerasTuner search space over the loss families of
``keras_margins.registry``, their scale s and margin m."""

import inspect

import keras
import keras_tuner

from keras_margins.optimizers import LayerLRAdam
from keras_margins.registry import FAMILIES, tuned_families

HEAD_NAME = "margin_head"


class MarginHyperModel(keras_tuner.HyperModel):
    """A ``keras_tuner.HyperModel`` over the margin losses, their scale and margin.

    Args:
        build_backbone: callable returning a fresh embedding model (N, ...) -> (N, D) with a
            known input shape; called as ``build_backbone(hp)`` if it takes an argument (so the
            backbone can be tuned too), else ``build_backbone()``.
        num_classes: C, the number of training classes.
        losses: names from ``families`` whose loss trains a class head
            (``km.protocols.wants_head``). Default None: the families with ``tuned=True``
            (ArcFace, CosFace, SphereFace, LM-Softmax, Virtual Softmax, PEDCC+POD,
            class-level Circle). An unknown name, or a recipe without a class head
            (``circle_pair``, ``ensemble``), raises ValueError.
        learning_rate: (min, max) of the log-uniform base learning rate.
        head_lr_multiplier: (min, max) of the log-uniform head multiplier, or None to disable.
        metrics: passed to ``compile`` (computed on the head's class scores).
        families: ``{name: LossFamily}`` (default ``FAMILIES`` of ``keras_margins.registry``).

    ``build(hp)`` returns a compiled ``km.models.MarginModel(backbone, head)``
    (``jit_compile=True``; ``LossFamily.build_model``), which hands every loss what it declares
    it needs. The head layer is named ``HEAD_NAME``; ``km.models.split_head(model)`` (or
    ``model.backbone``) gives the embedding part.

    Example:
        >>> hm = km.tuning.MarginHyperModel(make_backbone, 10, losses=("arcface", "cosface"))
        >>> tuner = keras_tuner.RandomSearch(hm, objective="val_accuracy", max_trials=4)
        >>> tuner.search(x, y, validation_data=(xv, yv), epochs=5)
    """

    def __init__(
        self,
        build_backbone,
        num_classes,
        losses=None,
        learning_rate=(1e-4, 1e-2),
        head_lr_multiplier=(0.1, 10.0),
        metrics=("accuracy",),
        families=None,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        if not callable(build_backbone):
            raise ValueError(f"`build_backbone` must be callable; got {build_backbone!r}.")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2; got {num_classes!r}.")
        self.families = dict(FAMILIES if families is None else families)
        losses = tuned_families(self.families) if losses is None else tuple(losses)
        if not losses:
            raise ValueError("`losses` must name at least one loss family.")
        for loss in losses:
            if loss not in self.families:
                raise ValueError(
                    f"`losses` has unknown family {loss!r}; known: {sorted(self.families)}."
                )
            if not self.families[loss].wants_head:
                raise ValueError(
                    f"`losses`: {loss!r} trains no class head (a pair-wise recipe); "
                    "MarginHyperModel searches losses that train one."
                )
        self.build_backbone = build_backbone
        self.num_classes = num_classes
        self.losses = losses
        self.learning_rate = _check_range(learning_rate, "learning_rate")
        self.head_lr_multiplier = (
            None if head_lr_multiplier is None
            else _check_range(head_lr_multiplier, "head_lr_multiplier")
        )
        self.metrics = list(metrics)

    def build(self, hp):
        loss = hp.Choice("loss", list(self.losses))
        learning_rate = hp.Float(
            "learning_rate", *self.learning_rate, sampling="log",
            default=_clip(1e-3, self.learning_rate),
        )
        loss_args, head_args = {}, {}
        for name in self.losses:  # register every family's hyperparameters, in its own scope
            with hp.conditional_scope("loss", [name]):
                family = self.families[name]
                values = {
                    p.name: hp.Float(
                        f"{name}_{p.name}", p.min_value, p.max_value,
                        sampling=p.sampling, default=family.param_default(p),
                    )
                    for p in family.params
                }
                head_values = {  # integer head arguments (sub-center ArcFace's K)
                    p.name: hp.Int(f"{name}_{p.name}", p.min_value, p.max_value,
                                   default=p.default)
                    for p in family.head_params
                }
            if name == loss:
                loss_args, head_args = values, head_values
        multiplier = 1.0
        trainable = [n for n in self.losses if self.families[n].trainable_head]
        if self.head_lr_multiplier and trainable:
            with hp.conditional_scope("loss", trainable):
                value = hp.Float(
                    "head_lr_multiplier", *self.head_lr_multiplier, sampling="log",
                    default=_clip(1.0, self.head_lr_multiplier),
                )
            multiplier = value if loss in trainable else 1.0
        return self.compile_model(loss, loss_args, learning_rate, multiplier, self._backbone(hp),
                                  head_args=head_args)

    def compile_model(self, loss, loss_args, learning_rate, head_lr_multiplier=1.0, backbone=None,
                      head_args=None):
        """The compiled model for one point of the space (``build`` calls this).

        ``head_args``: the head's integer arguments (``{"sub_centers": 3}``; default: the
        family's ``head_params`` defaults).

        Example:
            >>> model = hm.compile_model("arcface", {"scale": 30.0, "margin": 0.4}, 1e-3)
            >>> model.fit(x, y, epochs=5)
        """
        if loss not in self.families:
            raise ValueError(f"`loss` must be one of {sorted(self.families)}; got {loss!r}.")
        family = self.families[loss]
        if backbone is None:  # a backbone that takes hp gets its defaults
            backbone = self._backbone(keras_tuner.HyperParameters())
        head = family.make_head(self.num_classes, name=HEAD_NAME, **(head_args or {}))
        loss_object = family.make_loss(**loss_args)
        model = family.build_model(backbone, self.num_classes, head=head, name=f"{loss}_model")
        _build(model, backbone)
        multipliers = {HEAD_NAME: float(head_lr_multiplier)} if head_lr_multiplier != 1.0 else {}
        model.compile(
            optimizer=LayerLRAdam(learning_rate, layer_lr_multipliers=multipliers),
            loss=loss_object,
            metrics=list(self.metrics),
            jit_compile=True,
        )
        # Optimizer slots now, so a tuner's checkpoint (weights + slots) loads without warnings.
        model.optimizer.build(model.trainable_variables)
        return model

    def _backbone(self, hp):
        try:
            takes_hp = len(inspect.signature(self.build_backbone).parameters) > 0
        except (TypeError, ValueError):
            takes_hp = True
        return self.build_backbone(hp) if takes_hp else self.build_backbone()

    def loss_values(self, values):
        """``(loss_name, {argument: value})`` of a trial's ``hyperparameters.values``."""
        loss = values["loss"]
        return loss, {
            p.name: values[f"{loss}_{p.name}"]
            for p in self.families[loss].params
            if f"{loss}_{p.name}" in values
        }

    def head_values(self, values):
        """``{argument: value}`` of the head arguments in a trial's ``hyperparameters.values``
        (``{"sub_centers": 3}`` for sub-center ArcFace; ``{}`` for most losses)."""
        loss = values["loss"]
        return {p.name: values[f"{loss}_{p.name}"] for p in self.families[loss].head_params
                if f"{loss}_{p.name}" in values}

    def describe(self, values):
        """One line for a trial: ``ArcFace(scale=.., margin=..) lr=.. head_lr×..``."""
        loss, args = self.loss_values(values)
        text = f"{self.families[loss].loss_name}(" + ", ".join(
            f"{k}={_fmt(v)}" for k, v in args.items()
        ) + ")" + "".join(f" {k}={v}" for k, v in self.head_values(values).items())
        text += f" learning_rate={_fmt(values['learning_rate'])}"
        if "head_lr_multiplier" in values:
            text += f" head_lr_multiplier={_fmt(values['head_lr_multiplier'])}"
        return text


def _check_range(value, name):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a (min, max) pair; got {value!r}.") from None
    if not 0 < low < high:
        raise ValueError(f"`{name}` must satisfy 0 < min < max; got {value!r}.")
    return low, high


def _clip(value, bounds):
    return min(max(value, bounds[0]), bounds[1])


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _build(model, backbone):
    """Create the weights now, so a tuner can load a checkpoint into ``build(hp)``'s model."""
    if model.built and all(layer.built for layer in model.layers):
        return
    shape = getattr(backbone, "input_shape", None)
    if isinstance(shape, tuple) and shape and all(d is not None for d in shape[1:]):
        model(keras.ops.zeros((1,) + tuple(shape[1:])))
