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

Family names match ``keras-margins train --loss`` (the recipes that train a class head).
Every model is a ``km.models.MarginModel`` compiled with ``jit_compile=True`` and a
``km.optimizers.LayerLRAdam`` optimizer (Adam whose updates of the head's variables use the
multiplied learning rate). ``keras-margins tune`` runs a search from the command line.

One module per job: ``keras_margins.tuning.hypermodel`` (the search space),
``keras_margins.tuning.search`` (objective, callbacks, tuner, table of trials) and
``keras_margins.tuning.digits`` (the digits demo's splits and held-out score).
"""

from keras_margins.optimizers import LayerLRAdam
from keras_margins.registry import FAMILIES, LossFamily, Param
from keras_margins.tuning.digits import digits_search_data, held_out_score
from keras_margins.tuning.hypermodel import HEAD_NAME, MarginHyperModel
from keras_margins.tuning.search import (
    TUNERS,
    BackboneRetrievalEvaluation,
    format_trials,
    make_tuner,
    objective_and_callbacks,
    trial_rows,
)

__all__ = [
    "FAMILIES", "HEAD_NAME", "TUNERS", "BackboneRetrievalEvaluation", "LayerLRAdam",
    "LossFamily", "MarginHyperModel", "Param", "digits_search_data", "format_trials",
    "held_out_score", "make_tuner", "objective_and_callbacks", "trial_rows",
]
