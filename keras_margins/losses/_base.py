"""Base class of the library's losses (private).

Like Keras' own ``LossFunctionWrapper``: a loss is a per-sample function from ``km.ops`` plus
a small class holding hyper-parameters. ``get_config`` returns exactly the constructor
arguments (plus Keras' ``name``/``reduction``/``dtype``). The loss never owns weights.
Losses compute in float32 (``dtype="float32"``) even under mixed precision.
"""

import inspect

import keras

#: What a loss can ask ``km.models.MarginModel`` for (the ``needs`` attribute).
NEEDS = ("scores", "embedding", "model")


class MarginLoss(keras.losses.Loss):
    """A loss on (labels, class scores) defined by a per-sample ``km.ops`` function.

    Subclasses set ``self._hparams`` (a dict of constructor arguments) and implement
    ``per_sample(labels, y_pred)`` returning (N,). ``y_true`` may be (N,) or (N, 1) integers.

    ``needs`` tells ``km.models.MarginModel`` what the loss consumes: ``"scores"`` (the head's
    output: works in a plain ``keras.Sequential``), ``"embedding"`` (the backbone output) or
    ``"model"`` (``compute_model_loss(y, outputs, model, sample_weight)`` with the embedding, the
    scores and the model, e.g. POD and LossEnsemble).
    """

    needs = "scores"

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype="float32", **hparams):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._hparams = dict(hparams)

    def __getattr__(self, item):
        hparams = self.__dict__.get("_hparams", {})
        if item in hparams:
            return hparams[item]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {item!r}")

    def call(self, y_true, y_pred):
        return self.per_sample(y_true, y_pred)

    def per_sample(self, labels, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(self._hparams)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def compute_model_loss(loss, y, outputs, model, sample_weight=None, training=True):
    """Call ``loss.compute_model_loss`` (a ``needs="model"`` loss), passing ``training`` only
    to implementations that accept it."""
    kwargs = {}
    if "training" in inspect.signature(loss.compute_model_loss).parameters:
        kwargs["training"] = training
    return loss.compute_model_loss(y, outputs, model, sample_weight, **kwargs)
