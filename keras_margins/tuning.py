"""KerasTuner search over the loss choice, the margin scale s and the margin m.

The optimum (s, m) moves a lot between datasets (Musgrave et al. 2020, "A Metric Learning
Reality Check": CosFace m 0.34–0.62 with s 88–161, ArcFace m 18.6°–23.2° with s 49–220 across
CUB/Cars/SOP), so ``MarginHyperModel`` makes them searchable with KerasTuner:

    hypermodel = km.tuning.MarginHyperModel(build_backbone, num_classes=10)
    objective, callbacks = km.tuning.objective_and_callbacks("classification")
    tuner = keras_tuner.RandomSearch(hypermodel, objective=objective, max_trials=8)
    tuner.search(x, y, validation_data=(xv, yv), epochs=10, callbacks=callbacks)

Search space (one entry of ``FAMILIES``, the table in ``keras_margins.registry`` that the
command line reads too, per loss family; add or narrow a family by passing ``families=``).
``loss`` is a Choice; every other hyperparameter lives in a
``hp.conditional_scope("loss", ...)`` so a trial only sees the hyperparameters of its loss:

    loss                         Choice over ``losses``
    learning_rate                log-uniform, shared by every loss
    head_lr_multiplier           log-uniform; the head's learning rate is lr × this (losses
                                 whose head is trainable: every one but PEDCC+POD)
    <loss>_scale, <loss>_margin, <loss>_sample_margin_weight, <loss>_gamma, <loss>_delta, ...
                                 the loss constructor's own arguments, per-loss ranges

Family names match ``keras-margins train --loss``. Every model is compiled with
``jit_compile=True`` and a ``km.optimizers.LayerLRAdam`` optimizer (Adam whose updates of the
head's variables use the multiplied learning rate). ``keras-margins tune`` runs a search from
the command line.
"""

import inspect

import keras
import keras_tuner

from keras_margins.callbacks import RetrievalEvaluation
from keras_margins.data import digits_classification, digits_zero_shot
from keras_margins.metrics import retrieval_scores
from keras_margins.models import MarginModel, split_head
from keras_margins.optimizers import LayerLRAdam
from keras_margins.registry import FAMILIES, LossFamily, Param, tuned_families

__all__ = [
    "FAMILIES", "HEAD_NAME", "TUNERS", "BackboneRetrievalEvaluation", "LayerLRAdam",
    "LossFamily", "MarginHyperModel", "Param", "digits_search_data", "format_trials",
    "held_out_score", "make_tuner", "objective_and_callbacks", "trial_rows",
]

HEAD_NAME = "margin_head"


class MarginHyperModel(keras_tuner.HyperModel):
    """A ``keras_tuner.HyperModel`` over the margin losses, their scale and margin.

    Args:
        build_backbone: callable returning a fresh embedding model (N, ...) -> (N, D) with a
            known input shape; called as ``build_backbone(hp)`` if it takes an argument (so the
            backbone can be tuned too), else ``build_backbone()``.
        num_classes: C, the number of training classes.
        losses: names from ``families``. Default None: the families with ``tuned=True``
            (ArcFace, CosFace, SphereFace, LM-Softmax, Virtual Softmax, PEDCC+POD,
            class-level Circle). An unknown name raises ValueError.
        learning_rate: (min, max) of the log-uniform base learning rate.
        head_lr_multiplier: (min, max) of the log-uniform head multiplier, or None to disable.
        metrics: passed to ``compile`` (computed on the head's class scores).
        families: ``{name: LossFamily}`` (default ``FAMILIES`` of ``keras_margins.registry``).

    ``build(hp)`` returns a compiled model (``jit_compile=True``): ``keras.Sequential([backbone,
    head])`` for losses on class scores, ``km.models.MarginModel(backbone, head)`` for losses
    that need more (POD). The head layer is named ``HEAD_NAME``; ``km.models.split_head(model)``
    gives the embedding part.

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
        loss_args = {}
        for name in self.losses:  # register every family's hyperparameters, in its own scope
            with hp.conditional_scope("loss", [name]):
                values = {
                    p.name: hp.Float(
                        f"{name}_{p.name}", p.min_value, p.max_value,
                        sampling=p.sampling, default=p.default,
                    )
                    for p in self.families[name].params
                }
            if name == loss:
                loss_args = values
        multiplier = 1.0
        trainable = [n for n in self.losses if self.families[n].trainable_head]
        if self.head_lr_multiplier and trainable:
            with hp.conditional_scope("loss", trainable):
                value = hp.Float(
                    "head_lr_multiplier", *self.head_lr_multiplier, sampling="log",
                    default=_clip(1.0, self.head_lr_multiplier),
                )
            multiplier = value if loss in trainable else 1.0
        return self.compile_model(loss, loss_args, learning_rate, multiplier, self._backbone(hp))

    def compile_model(self, loss, loss_args, learning_rate, head_lr_multiplier=1.0, backbone=None):
        """The compiled model for one point of the space (``build`` calls this).

        Example:
            >>> model = hm.compile_model("arcface", {"scale": 30.0, "margin": 0.4}, 1e-3)
            >>> model.fit(x, y, epochs=5)
        """
        if loss not in self.families:
            raise ValueError(f"`loss` must be one of {sorted(self.families)}; got {loss!r}.")
        family = self.families[loss]
        if backbone is None:  # a backbone that takes hp gets its defaults
            backbone = self._backbone(keras_tuner.HyperParameters())
        head = family.make_head(self.num_classes, name=HEAD_NAME)
        loss_object = family.make_loss(**loss_args)
        if family.needs == "scores":
            model = keras.Sequential([backbone, head], name=f"{loss}_model")
        else:
            model = MarginModel(backbone, head, name=f"{loss}_model")
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

    def describe(self, values):
        """One line for a trial: ``ArcFace(scale=.., margin=..) lr=.. head_lr×..``."""
        loss, args = self.loss_values(values)
        text = f"{self.families[loss].loss_name}(" + ", ".join(
            f"{k}={_fmt(v)}" for k, v in args.items()
        ) + f") learning_rate={_fmt(values['learning_rate'])}"
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


def objective_and_callbacks(task="classification", validation_data=None, **callback_kwargs):
    """The ``keras_tuner.Objective`` and the callbacks a search needs for ``task``.

    ``"classification"``: ``val_accuracy`` (pass ``validation_data`` to ``tuner.search``).
    ``"retrieval"``: ``val_map_at_r``, written into the epoch logs by a
    ``km.callbacks.RetrievalEvaluation(validation_data, **callback_kwargs)`` that embeds with
    the backbone of whichever trial model it is attached to (e.g. classes held out of
    training; leave-one-out MAP@R, Musgrave et al. 2020).

    Example:
        >>> objective, callbacks = km.tuning.objective_and_callbacks("retrieval", (xv, yv))
        >>> tuner = keras_tuner.RandomSearch(hm, objective=objective, max_trials=4)
        >>> tuner.search(x, y, epochs=5, callbacks=callbacks)
    """
    if task == "classification":
        return keras_tuner.Objective("val_accuracy", "max"), []
    if task == "retrieval":
        if validation_data is None:
            raise ValueError("`validation_data` (x, y) is needed for task='retrieval'.")
        return keras_tuner.Objective("val_map_at_r", "max"), [
            BackboneRetrievalEvaluation(validation_data, **callback_kwargs)
        ]
    raise ValueError(f"`task` must be 'classification' or 'retrieval'; got {task!r}.")


class BackboneRetrievalEvaluation(RetrievalEvaluation):
    """``RetrievalEvaluation`` on the backbone of whichever model it is attached to.

    KerasTuner copies the search callbacks into every trial, whose model is new, so the
    embedding model cannot be fixed in advance; ``km.models.split_head`` finds it.

    Example:
        >>> cb = km.tuning.BackboneRetrievalEvaluation((xv, yv))
        >>> tuner.search(x, y, epochs=5, callbacks=[cb])   # objective "val_map_at_r"
    """

    def set_model(self, model):
        super().set_model(model)
        self.embedding_model = split_head(model)[0]


# ----------------------------------------------------------------------------- running a search
TUNERS = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization}


def make_tuner(hypermodel, objective, kind="random", max_trials=6, seed=0, **kwargs):
    """``keras_tuner.RandomSearch`` (``kind="random"``) or ``BayesianOptimization``
    (``"bayesian"``) over ``hypermodel``; ``kwargs`` go to the tuner (``directory``,
    ``project_name``, ``overwrite``, ...). KerasTuner's Bayesian default of 3 random points
    per hyperparameter (about 50 here) would make a small budget a pure random search, so
    ``num_initial_points`` defaults to half of ``max_trials`` (at least 2).

    Example:
        >>> tuner = km.tuning.make_tuner(hm, "val_accuracy", "bayesian", 8, directory="runs")
    """
    if kind not in TUNERS:
        raise ValueError(f"`kind` must be one of {sorted(TUNERS)}; got {kind!r}.")
    if kind == "bayesian":
        kwargs.setdefault("num_initial_points", max(2, max_trials // 2))
    return TUNERS[kind](hypermodel, objective=objective, max_trials=max_trials, seed=seed, **kwargs)


def trial_rows(tuner):
    """One dict per finished trial, best first: ``trial``, ``loss``, ``scale``, ``margin``,
    ``objective`` and ``config`` (the full configuration, ``MarginHyperModel.describe``).
    ``scale``/``margin`` are None for losses without them (Virtual Softmax has neither, POD
    has no scale and reports δ as its margin)."""
    hypermodel = tuner.hypermodel
    sign = 1.0 if tuner.oracle.objective.direction == "max" else -1.0
    rows = []
    for trial in tuner.oracle.trials.values():
        if trial.score is None:
            continue
        values = trial.hyperparameters.values
        loss, args = hypermodel.loss_values(values)
        columns = {p.option: args.get(p.name) for p in hypermodel.families[loss].params}
        rows.append({
            "trial": trial.trial_id,
            "loss": loss,
            "scale": columns.get("scale"),
            "margin": columns.get("margin"),
            "objective": float(trial.score),
            "config": hypermodel.describe(values),
        })
    return sorted(rows, key=lambda row: -sign * row["objective"])


def format_trials(rows, objective_name="objective"):
    """A plain-text table (Markdown pipes) of ``trial_rows``."""
    header = ["trial", "loss", "scale", "margin", objective_name]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["trial"], row["loss"], _cell(row["scale"]), _cell(row["margin"]),
                 f"{row['objective']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value):
    return "-" if value is None else f"{value:.3g}"


# ----------------------------------------------------------------------------- digits
def digits_search_data(task="retrieval", seed=0):
    """Splits of the embedded digits data for a search: ``(train, validation, test,
    num_classes)``, each split an ``(x, y)`` pair.

    ``"classification"``: 10 classes; the stratified training split is cut again into
    train/validation (80/20), the test split stays untouched. ``"retrieval"``: train on digits
    0–4; digits 5–9 are halved (stratified) into validation and test retrieval sets.
    """
    from sklearn.model_selection import train_test_split

    if task == "classification":
        (x, y), test = digits_classification(seed=seed)
        xa, xb, ya, yb = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
        return (xa, ya), (xb, yb), test, 10
    if task == "retrieval":
        train, (xt, yt) = digits_zero_shot(seed=seed)
        xa, xb, ya, yb = train_test_split(xt, yt, test_size=0.5, stratify=yt, random_state=seed)
        return train, (xa, ya), (xb, yb), 5
    raise ValueError(f"`task` must be 'classification' or 'retrieval'; got {task!r}.")


def held_out_score(model, task, test):
    """``("accuracy", value)`` of the head, or ``("map_at_r", value)`` of the embedding
    (leave-one-out on ``test``), for a model built by ``MarginHyperModel``."""
    x, y = test
    if task == "classification":
        scores = model.predict(x, verbose=0)
        return "accuracy", float((scores.argmax(axis=-1) == y).mean())
    embeddings = split_head(model)[0].predict(x, verbose=0)
    return "map_at_r", float(retrieval_scores(embeddings, y)["map_at_r"])
