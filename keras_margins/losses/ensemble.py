"""Learned-weight ensemble of losses (Zabihzadeh et al., "Ensemble of loss functions to improve
generalizability of deep metric learning methods", 2021/2023)."""

import math

import keras
from keras import ops

from keras_margins._compat import scale_loss_for_distribution
from keras_margins.losses._base import ModelLoss
from keras_margins.ops._validation import check_positive
from keras_margins.protocols import as_loss, loss_value

#: Floor of the running mean in the normalisation ratio (a loss that is exactly 0).
_MEAN_FLOOR = 1e-12
#: Smallest initial a_k: a_k = 0 is a stationary point of c_k = a_k² + 1/(4m).
_MIN_A = 1e-3


def _unique_names(losses):
    names = []
    for k, loss in enumerate(losses):
        name = loss.name
        names.append(name if name not in names else f"{name}_{k}")
    return names


@keras.saving.register_keras_serializable(package="keras_margins")
class LossEnsemble(ModelLoss):
    """Several losses on one embedding / head with learned weights (Zabihzadeh et al.):

        L = Σ_k c_k · (mean_j L̄_j / L̄_k) · L_k + penalty_scale · η · (Σ_k c_k − 1)²,
        c_k = a_k² + 1/(4m),

    where m = ``len(losses)``, the a_k are trainable (initialised so that c_k = prior_k / Σ prior),
    and L̄_k is the running mean of |L_k| over the training steps so far (a constant in the
    gradient), which puts all losses on one scale. Each member gets what its ``needs`` asks
    (``"scores"``: the head output, ``"embedding"``: the backbone output, ``"model"``:
    ``compute_model_loss``). Use it through ``km.models.MarginModel``, which calls
    ``build_state(model)``: the a_k and the running means become variables of the model,
    trained by its optimizer and saved in ``.keras``; every c_k appears in the fit/evaluate
    logs as ``c_<loss name>`` (the value used in the epoch's last step, through model
    metrics, so it works on the JAX backend too). ``.coefficients`` gives the current c_k
    (K,) (None before ``build_state``).

    The running mean uses |L_k| (equal to the paper's for non-negative losses, and keeps the
    ratio positive for losses such as LM-Softmax that can go negative); it is updated only in
    training steps. ``penalty_scale`` (100) × ``eta`` (100) is the published penalty weight.
    Deviations from the paper, with reasons: ``docs/papers.md`` §5.

    Args:
        losses: non-empty list of ``keras.losses.Loss`` objects (any ``needs``).
        prior: optional positive weights, one per loss, giving the initial c_k (default None:
            uniform).
        eta: η > 0 of the sum-to-one penalty (default 100.0, the authors' value).
        penalty_scale: factor > 0 in front of η (default 100.0, the authors' code).
        normalize_by_running_mean: scale each loss by mean_j L̄_j / L̄_k (default True).
        name: loss name (default ``"loss_ensemble"``).
        **kwargs: other ``keras.losses.Loss`` arguments.

    Example:
        >>> model = km.models.MarginModel(backbone, km.layers.LargestMarginHead(10))
        >>> model.compile(
        ...     "adam", loss=km.losses.LossEnsemble([km.losses.ArcFace(), km.losses.PairCircleLoss()])
        ... )
        >>> model.fit(km.data.pk_batches((x, y), p=8, k=4, seed=0), epochs=5)   # logs c_arc_face, ...

    Reference:
        - Zabihzadeh, Alitbi & Mousavirad, 2021. [Ensemble of Loss Functions to Improve Generalizability of
          Deep Metric Learning Methods](https://arxiv.org/abs/2107.01130); Multimedia Tools and Applications,
          2023.
    """

    needs = "model"

    def __init__(
        self,
        losses,
        prior=None,
        eta=100.0,
        penalty_scale=100.0,
        normalize_by_running_mean=True,
        name="loss_ensemble",
        **kwargs,
    ):
        if not isinstance(losses, (list, tuple)) or not losses:
            raise ValueError(f"`losses` must be a non-empty list of losses; got {losses!r}.")
        self.members = [as_loss(loss, "`losses`") for loss in losses]
        if prior is not None:
            prior = [float(p) for p in prior]
            if len(prior) != len(self.members) or not all(p > 0 for p in prior):
                raise ValueError(
                    f"`prior` must hold {len(self.members)} positive numbers (one per loss); "
                    f"got {prior}."
                )
        check_positive(eta, "eta")
        check_positive(penalty_scale, "penalty_scale")
        self.prior = prior
        self.eta = float(eta)
        self.penalty_scale = float(penalty_scale)
        self.normalize_by_running_mean = bool(normalize_by_running_mean)
        super().__init__(name=name, **kwargs)
        self.names = _unique_names(self.members)
        self.a_variable = self.running_mean_variable = self.steps_variable = None

    # ---------------------------------------------------------------- state (owned by model)
    def initial_a(self):
        """a_k with a_k² + 1/(4m) = prior_k / Σ prior (floored at 1e-3), as a list."""
        count = len(self.members)
        prior = self.prior or [1.0] * count
        floor = 1.0 / (4.0 * count)
        return [max(math.sqrt(max(p / sum(prior) - floor, 0.0)), _MIN_A) for p in prior]

    def build_state(self, model):
        """Create a_k (trainable) and the running means (non-trainable) on ``model``, in the
        loss's dtype (float32 unless the ensemble was built with ``dtype="float64"``)."""
        count = len(self.members)
        self.a_variable = model.add_weight(
            shape=(count,),
            dtype=self.dtype,
            initializer=keras.initializers.Constant(self.initial_a()),
            trainable=True,
            name="loss_ensemble_a",
        )
        self.running_mean_variable = model.add_weight(
            shape=(count,), initializer="zeros", trainable=False, dtype=self.dtype,
            name="loss_ensemble_running_mean", aggregation="mean",
        )
        self.steps_variable = model.add_weight(
            shape=(), initializer="zeros", trainable=False, dtype=self.dtype,
            name="loss_ensemble_steps", aggregation="only_first_replica",
        )
        for member in self.members:
            if isinstance(member, ModelLoss):
                member.build_state(model)

    @property
    def coefficients(self):
        """Current c_k = a_k² + 1/(4m), shape (K,); None until ``build_state`` ran."""
        if self.a_variable is None:
            return None
        return ops.square(ops.convert_to_tensor(self.a_variable)) + 1.0 / (4.0 * len(self.members))

    def wrapped_losses(self):
        return list(self.members)

    def logs(self, model):
        """{"c_<loss name>": c_k} read from the coefficient variables (the model logs the
        values its step used); then the logs of model-aware members."""
        coefficients = self.coefficients
        logs = {f"c_{name}": coefficients[k] for k, name in enumerate(self.names)}
        for member in self.members:
            if isinstance(member, ModelLoss):
                logs.update(member.logs(model))
        return logs

    # ----------------------------------------------------------------------------- the loss
    def _normaliser(self, values, training):
        """mean_j L̄_j / L̄_k (no gradient), updating the running means in training."""
        current = ops.stop_gradient(ops.abs(values))
        if training:
            steps = self.steps_variable + 1.0
            mean = self.running_mean_variable + (current - self.running_mean_variable) / steps
            self.running_mean_variable.assign(mean)
            self.steps_variable.assign(steps)
        else:  # evaluation: use the training means (the batch itself before any training)
            mean = ops.where(self.steps_variable > 0,
                             ops.convert_to_tensor(self.running_mean_variable), current)
        mean = ops.maximum(mean, _MEAN_FLOOR)
        # sum / K, not ops.mean: Keras' JAX mean accumulates float64 in float32
        return ops.stop_gradient(ops.sum(mean) / len(self.members) / mean)

    def compute_model_loss(self, y, outputs, model, sample_weight=None, training=True):
        if self.a_variable is None:
            raise ValueError(
                "LossEnsemble has no coefficient variables: use it through "
                "km.models.MarginModel (which calls build_state(model) at compile)."
            )
        # Every member's value in the ensemble's dtype (float32 by default, float64 kept).
        values = ops.stack(
            [
                ops.cast(loss_value(m, y, outputs, model, sample_weight, training), self.dtype)
                for m in self.members
            ]
        )
        coefficients = ops.cast(self.coefficients, self.dtype)
        if self.normalize_by_running_mean:
            values = values * self._normaliser(values, training)
        penalty = self.penalty_scale * self.eta * ops.square(ops.sum(coefficients) - 1.0)
        return ops.sum(coefficients * values) + scale_loss_for_distribution(penalty)

    def call(self, y_true, y_pred):
        raise ValueError(
            "LossEnsemble combines losses on the embedding and on the head: compile it on a "
            "km.models.MarginModel (it has needs='model'), not on a plain keras.Model."
        )

    # ------------------------------------------------------------------------ serialisation
    def get_config(self):
        config = super().get_config()
        config["losses"] = [keras.saving.serialize_keras_object(m) for m in self.members]
        return config

    @property
    def losses(self):
        """The member losses (the constructor argument)."""
        return self.members
