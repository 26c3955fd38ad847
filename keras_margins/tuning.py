"""KerasTuner search over the loss choice, the margin scale s and the margin m.

The optimum (s, m) moves a lot between datasets (Musgrave et al. 2020, "A Metric Learning
Reality Check": CosFace m 0.34–0.62 with s 88–161, ArcFace m 18.6°–23.2° with s 49–220 across
CUB/Cars/SOP), so ``MarginHyperModel`` makes them searchable with KerasTuner:

    hypermodel = km.tuning.MarginHyperModel(build_backbone, num_classes=10)
    objective, callbacks = km.tuning.objective_and_callbacks("classification")
    tuner = keras_tuner.RandomSearch(hypermodel, objective=objective, max_trials=8)
    tuner.search(x, y, validation_data=(xv, yv), epochs=10, callbacks=callbacks)

Search space (one entry of ``FAMILIES`` per loss family; add or narrow a family by passing
``families=``). ``loss`` is a Choice; every other hyperparameter lives in a
``hp.conditional_scope("loss", ...)`` so a trial only sees the hyperparameters of its loss:

    loss                         Choice over ``losses``
    learning_rate                log-uniform, shared by every loss
    head_lr_multiplier           log-uniform; the head's learning rate is lr × this (losses
                                 whose head is trainable: every one but PEDCC+POD)
    <loss>_scale, <loss>_margin, <loss>_sample_margin_weight, <loss>_gamma, <loss>_delta, ...
                                 the loss constructor's own arguments, per-loss ranges

Family names match ``keras-margins train --loss``. Every model is compiled with
``jit_compile=True`` and a ``LayerLRAdam`` optimizer (Adam whose updates of the head's
variables use the multiplied learning rate; Adam is invariant to gradient scaling, so scaling
gradients could not do this). ``keras-margins tune`` runs a search from the command line.
"""

import dataclasses
import inspect

import keras
import keras_tuner

from keras_margins import layers as km_layers
from keras_margins import losses as km_losses
from keras_margins.callbacks import RetrievalEvaluation
from keras_margins.data import digits_classification, digits_zero_shot
from keras_margins.export import export_embedding_model, split_head
from keras_margins.metrics import retrieval_scores
from keras_margins.models import MarginModel

HEAD_NAME = "margin_head"


@dataclasses.dataclass(frozen=True)
class Param:
    """A float constructor argument of a loss, searched in [min_value, max_value].

    ``column`` is the name under which ``trial_rows`` reports it ("scale" for Circle's gamma).
    """

    name: str
    min_value: float
    max_value: float
    default: float
    sampling: str = "linear"
    column: str = None


@dataclasses.dataclass(frozen=True)
class LossFamily:
    """One searchable loss: its ``km.losses`` class, its ``km.layers`` head and its Params.

    Example:
        >>> fam = km.tuning.LossFamily("CosFace", "LargestMarginHead",
        ...                            (km.tuning.Param("scale", 8, 64, 30, "log"),))
        >>> families = {**km.tuning.FAMILIES, "cosface": fam}  # narrower CosFace scale
        >>> hm = km.tuning.MarginHyperModel(build, 10, families=families)
    """

    loss: str
    head: str
    params: tuple = ()
    trainable_head: bool = True

    def missing(self):
        """The names this family needs that the installed package lacks (empty: usable)."""
        return [
            f"km.{module.__name__.rsplit('.', 1)[-1]}.{name}"
            for module, name in ((km_losses, self.loss), (km_layers, self.head))
            if not hasattr(module, name)
        ]


def _scale(low, high, default):
    return Param("scale", low, high, default, "log")


_SAMPLE_MARGIN = Param("sample_margin_weight", 0.0, 2.0, 0.0)

# Scale ranges reach the Reality Check's optima (s ≈ 50–220) and down to the small s that suit
# few classes; margins span the papers' defaults (ArcFace 0.5 rad, CosFace 0.35, normalised
# SphereFace m1 = 1.5, Circle m = 0.25 with γ = 256, POD δ = 0.05) with room either side.
FAMILIES = {
    "arcface": LossFamily(
        "ArcFace", "LargestMarginHead",
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.5), _SAMPLE_MARGIN),
    ),
    "cosface": LossFamily(
        "CosFace", "LargestMarginHead",
        (_scale(4.0, 256.0, 30.0), Param("margin", 0.05, 0.7, 0.35), _SAMPLE_MARGIN),
    ),
    "sphereface": LossFamily(
        "SphereFace", "LargestMarginHead",
        (_scale(4.0, 64.0, 30.0), Param("margin", 1.1, 2.5, 1.5), _SAMPLE_MARGIN),
    ),
    "lmsoftmax": LossFamily(
        "LMSoftmax", "LargestMarginHead", (_scale(1.0, 64.0, 5.0), _SAMPLE_MARGIN)
    ),
    "virtual_softmax": LossFamily("VirtualSoftmax", "VirtualSoftmaxHead"),
    # PEDCC centroids are fixed (no head learning rate). δ is searched as a constant, reported
    # in the "margin" column as by `keras-margins train --margin`; no PODDelta schedule runs.
    "pod": LossFamily(
        "POD", "PEDCCHead",
        (Param("delta", 0.01, 1.0, 0.05, "log", column="margin"),
         Param("decorrelation_weight", 0.1, 10.0, 1.0, "log")),
        trainable_head=False,
    ),
    "circle": LossFamily(
        "CircleLoss", "LargestMarginHead",
        (Param("gamma", 8.0, 256.0, 64.0, "log", column="scale"),
         Param("margin", 0.1, 0.45, 0.25)),
    ),
}


def available_losses(families=None):
    """Names of the families whose loss and head exist in this installation."""
    families = FAMILIES if families is None else families
    return tuple(name for name, family in families.items() if not family.missing())


@keras.saving.register_keras_serializable(package="keras_margins")
class LayerLRAdam(keras.optimizers.Adam):
    """Adam with per-layer learning-rate multipliers.

    A variable whose path (``"model/margin_head/kernel"``) has a segment named in
    ``layer_lr_multipliers`` is updated with ``learning_rate × multiplier``; every other
    variable with ``learning_rate``. Works on the TensorFlow and JAX backends, under XLA.

    Example:
        >>> opt = km.tuning.LayerLRAdam(1e-3, layer_lr_multipliers={"margin_head": 10.0})
        >>> model.compile(opt, loss=km.losses.ArcFace(), jit_compile=True)
        >>> model.fit(x, y)
    """

    def __init__(self, learning_rate=0.001, layer_lr_multipliers=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        multipliers = dict(layer_lr_multipliers or {})
        for name, value in multipliers.items():
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(
                    "`layer_lr_multipliers` values must be positive numbers; "
                    f"got {name!r}: {value!r}."
                )
        self.layer_lr_multipliers = {name: float(v) for name, v in multipliers.items()}

    def _multiplier(self, variable):
        if not self.layer_lr_multipliers:
            return 1.0
        keras_variable = self._trainable_variables[self._get_variable_index(variable)]
        for segment in keras_variable.path.split("/")[:-1]:
            if segment in self.layer_lr_multipliers:
                return self.layer_lr_multipliers[segment]
        return 1.0

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier(variable)
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["layer_lr_multipliers"] = dict(self.layer_lr_multipliers)
        return config


class MarginHyperModel(keras_tuner.HyperModel):
    """A ``keras_tuner.HyperModel`` over the margin losses, their scale and margin.

    Args:
        build_backbone: callable returning a fresh embedding model (N, ...) -> (N, D) with a
            known input shape; called as ``build_backbone(hp)`` if it takes an argument (so the
            backbone can be tuned too), else ``build_backbone()``.
        num_classes: C, the number of training classes.
        losses: names from ``families`` (default: every family available here, see
            ``available_losses``). An unknown or unavailable name raises ValueError.
        learning_rate: (min, max) of the log-uniform base learning rate.
        head_lr_multiplier: (min, max) of the log-uniform head multiplier, or None to disable.
        metrics: passed to ``compile`` (computed on the head's class scores).
        families: the table of ``LossFamily`` entries (default ``FAMILIES``).

    ``build(hp)`` returns a compiled model (``jit_compile=True``): ``keras.Sequential([backbone,
    head])`` for losses on class scores, ``km.models.MarginModel(backbone, head)`` for losses
    that need more (POD). The head layer is named ``HEAD_NAME``; ``km.export.split_head(model)``
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
        losses = available_losses(self.families) if losses is None else tuple(losses)
        if not losses:
            raise ValueError("`losses` must name at least one loss family.")
        for loss in losses:
            if loss not in self.families:
                raise ValueError(
                    f"`losses` has unknown family {loss!r}; known: {sorted(self.families)}."
                )
            missing = self.families[loss].missing()
            if missing:
                raise ValueError(
                    f"`losses` has {loss!r}, which needs {', '.join(missing)}, not in this "
                    "installation of keras_margins."
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
        head = getattr(km_layers, family.head)(self.num_classes, name=HEAD_NAME)
        loss_object = getattr(km_losses, family.loss)(**loss_args)
        if getattr(loss_object, "needs", "scores") == "scores":
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
        text = f"{self.families[loss].loss}(" + ", ".join(
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
    embedding model cannot be fixed in advance; ``km.export.split_head`` finds it.

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
        columns = {p.column or p.name: args.get(p.name) for p in hypermodel.families[loss].params}
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


# ----------------------------------------------------------------------------- command line
def add_cli(subparsers):
    """Register ``keras-margins tune`` (a search on the embedded digits data) on ``subparsers``."""
    parser = subparsers.add_parser(
        "tune",
        help="search loss, scale and margin with KerasTuner on digits",
        description=(
            "KerasTuner search over the margin losses, their scale s and margin m on the "
            "embedded digits data (XLA). Prints the table of trials, the best configuration "
            "and its score on an untouched test split, then exports the best embedding model "
            "for TF Serving."
        ),
    )
    parser.add_argument("--dataset", choices=tuple(_CLI_TASKS), default="digits-zero-shot",
                        help="digits-zero-shot: train on 0-4, objective val_map_at_r on 5-9; "
                             "digits: 10 classes, objective val_accuracy")
    parser.add_argument("--losses", default=None,
                        help=f"comma-separated families (default: all available; known: "
                             f"{', '.join(FAMILIES)})")
    parser.add_argument("--tuner", choices=sorted(TUNERS), default="random")
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--embedding-dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--directory", default="tuner_runs", help="KerasTuner directory")
    parser.add_argument("--project-name", default=None, help="default: the dataset name")
    parser.add_argument("--resume", action="store_true",
                        help="continue the search in the directory instead of starting over")
    parser.add_argument("--export-dir", default="saved_models/tuned_digits",
                        help="TF Serving model folder of the best embedding model ('' skips)")
    parser.set_defaults(func=run_cli, command="tune")
    return parser


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


_CLI_TASKS = {"digits-zero-shot": "retrieval", "digits": "classification"}


def run_cli(args):
    """Run ``keras-margins tune`` from parsed arguments."""
    from keras_margins.cli import build_backbone

    keras.utils.set_random_seed(args.seed)
    task = _CLI_TASKS[args.dataset]
    train, validation, test, num_classes = digits_search_data(task, args.seed)
    losses = args.losses.split(",") if args.losses else None
    hypermodel = MarginHyperModel(
        lambda: build_backbone(train[0].shape[1], args.embedding_dim, hidden=128),
        num_classes, losses=losses,
    )
    objective, callbacks = objective_and_callbacks(task, validation)
    tuner = make_tuner(
        hypermodel, objective, args.tuner, args.max_trials, args.seed,
        directory=args.directory, project_name=args.project_name or args.dataset,
        overwrite=not args.resume,
    )
    print(f"searching {args.max_trials} trials ({args.tuner}) over {', '.join(hypermodel.losses)}"
          f" on {args.dataset}, objective {objective.name} ...", flush=True)
    # Retrieval validates held-out classes through the callback only (the head knows 0-4).
    tuner.search(*train, validation_data=validation if task == "classification" else None,
                 epochs=args.epochs, batch_size=args.batch_size, callbacks=callbacks, verbose=0)
    print(format_trials(trial_rows(tuner), objective.name))
    best = tuner.get_best_hyperparameters(1)[0]
    print(f"best: {hypermodel.describe(best.values)}")
    model = tuner.get_best_models(num_models=1)[0]
    name, value = held_out_score(model, task, test)
    print(f"best model on the untouched test split: {name} = {value:.4f}")
    if args.export_dir:
        print(f"exported the best embedding model to "
              f"{export_embedding_model(model, args.export_dir)}")
    return 0


def held_out_score(model, task, test):
    """``("accuracy", value)`` of the head, or ``("map_at_r", value)`` of the embedding
    (leave-one-out on ``test``), for a model built by ``MarginHyperModel``."""
    x, y = test
    if task == "classification":
        scores = model.predict(x, verbose=0)
        return "accuracy", float((scores.argmax(axis=-1) == y).mean())
    embeddings = split_head(model)[0].predict(x, verbose=0)
    return "map_at_r", float(retrieval_scores(embeddings, y)["map_at_r"])
