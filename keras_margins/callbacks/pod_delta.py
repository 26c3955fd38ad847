"""δ schedule of the POD loss (Zhu & Zu, arXiv:2111.15449; the authors' training script)."""

import keras

from keras_margins._arguments import reject_unknown
from keras_margins.losses._base import ModelLoss
from keras_margins.losses.pod import POD

_SOURCES = {"logits": "logit_norm_sum", "features": "feature_norm_sum"}


class PODDelta(keras.callbacks.Callback):
    """Sets the POD loss's δ after each epoch e (0-based): δ = α·(e+1)·mean_norm.

    δ keeps its initial value (the loss's ``delta``, 0.05 by default) during epoch 0.
    ``mean_norm`` is the mean over the epoch's training samples of ||x·C|| (``norm_source=
    "logits"``, what the authors' script computes: the norm of the logit vector against the
    centroids) or of ||x|| (``"features"``). The norms are accumulated by ``km.losses.POD``
    inside the training step (no extra pass over the data). Adds ``pod_delta`` to the logs.

    Args:
        alpha: the schedule's α > 0 (default 0.01, the authors' script).
        norm_source: ``"logits"`` (default, the authors' script) or ``"features"``.
        loss: the ``POD`` loss (default None: the model's compiled loss, or the POD it wraps,
            e.g. a member of a ``LossEnsemble`` or the loss of a ``SampleMarginRegularizer``).
        **kwargs: none accepted; an unknown keyword is a ``TypeError`` naming the closest
            valid argument.

    Example:
        >>> model.compile("adam", loss=km.losses.POD(), metrics=["accuracy"])
        >>> model.fit(x, y, epochs=30, callbacks=[km.callbacks.PODDelta(alpha=0.01)])

    Reference:
        - Zhu & Zu, 2021. POD loss on predefined evenly-distributed class centroids,
          [arXiv:2111.15449](https://arxiv.org/abs/2111.15449) (δ schedule of the authors' public training
          code).
    """

    def __init__(self, alpha=0.01, norm_source="logits", loss=None, **kwargs):
        reject_unknown(type(self), kwargs, accepted=())
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"`alpha` must be > 0; got {alpha}.")
        if norm_source not in _SOURCES:
            raise ValueError(f"`norm_source` must be one of {tuple(_SOURCES)}; got {norm_source!r}.")
        self.alpha = float(alpha)
        self.norm_source = norm_source
        self.loss = loss

    def _pod(self):
        loss = self.loss
        if loss is None:  # the model's loss (MarginModel keeps it as a loss object)
            loss = getattr(self.model, "objective", None) or getattr(self.model, "loss", None)
        candidates = loss.state_losses() if isinstance(loss, ModelLoss) else [loss]
        for candidate in candidates:
            if isinstance(candidate, POD) and candidate.delta_variable is not None:
                return candidate
        raise ValueError(
            "PODDelta needs a km.losses.POD compiled on a km.models.MarginModel "
            "(its δ variable is created at compile time); pass it as `loss=` if nested."
        )

    def on_train_begin(self, logs=None):
        self._pod()  # fail early

    def on_epoch_begin(self, epoch, logs=None):
        for key in ("logit_norm_sum", "feature_norm_sum", "count"):
            self._pod().state[key].assign(0.0)

    def on_epoch_end(self, epoch, logs=None):
        state = self._pod().state
        count = float(keras.ops.convert_to_numpy(state["count"]))
        if count > 0:
            mean_norm = float(keras.ops.convert_to_numpy(state[_SOURCES[self.norm_source]])) / count
            state["delta"].assign(self.alpha * (epoch + 1) * mean_norm)
        if logs is not None:
            logs["pod_delta"] = float(keras.ops.convert_to_numpy(state["delta"]))
