"""Running a search: its objective and callbacks, the tuner, and the table of its trials."""

import keras_tuner

from keras_margins.callbacks import RetrievalEvaluation
from keras_margins.models import split_head
from keras_margins.registry import TUNERS as REGISTRY_TUNERS
from keras_margins.registry import resolve


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
#: ``kind`` of ``make_tuner`` -> KerasTuner class (the names are ``keras_margins.registry.TUNERS``).
TUNERS = {kind: resolve(reference) for kind, reference in REGISTRY_TUNERS.items()}


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
