"""``MarginModel``: backbone + head task model for losses that need the embedding or the
model (the ``needs`` protocol of ``km.losses.MarginLoss`` / ``km.losses.ModelLoss``; the design
is described in ``docs/design.md``)."""

import keras

from keras_margins._arguments import LAYER_ARGUMENTS, reject_unknown
from keras_margins._compat import StateAfterBuild
from keras_margins.losses._base import ModelLoss
from keras_margins.metrics.last_value import LastValue
from keras_margins.models.one_pass import OnePassOutputs
from keras_margins.protocols import as_loss, check_composition, complete_outputs, loss_value


def _known_input_shape(backbone):
    """The backbone's input shape (batch dim included) when it was built on one
    ``keras.Input`` (functional / Sequential with an Input), else None."""
    try:
        inputs = backbone.inputs
    except (AttributeError, ValueError):
        return None
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 1:
        return None
    shape = getattr(inputs[0], "shape", None)
    return None if shape is None else tuple(shape)


@keras.saving.register_keras_serializable(package="keras_margins")
class MarginModel(OnePassOutputs, StateAfterBuild, keras.Model):
    """A ``keras.Model`` made of ``backbone`` (inputs -> embedding (N, D)) and an optional
    ``head`` (embedding -> class scores (N, C)), which routes the embedding, the scores and
    the labels to the compiled loss with a single backbone pass per step.

    Every head and loss of the library works inside it: the loss's ``needs`` attribute
    (default ``"scores"``, see ``km.losses.MarginLoss``) selects what it receives:

    * ``"scores"``: ``loss(y, scores, sample_weight)`` (cosine-head losses, VirtualSoftmax,
      any Keras loss or loss name);
    * ``"embedding"``: ``loss(y, embedding, sample_weight)`` (pair-wise losses);
    * ``"model"``: a ``km.losses.ModelLoss`` (POD, loss ensembles); the model calls
      ``loss.compute_model_loss(y, outputs, model, sample_weight, training=...)`` with
      ``outputs = {"embedding": e, "scores": s or None}``. It returns the scalar
      ``Loss.__call__`` would (reduced, scaled for ``tf.distribute`` like
      ``keras.losses.Loss`` does). A loss with ``needs="model"`` that is not a ``ModelLoss``
      is rejected at ``compile``.

    Regulariser and ``add_loss`` terms (``self.losses``) are added as Keras does. A
    ``ModelLoss`` gets ``build_state(model)`` called once per loss object at ``compile`` (also
    on reload, before weights and optimizer slots are restored): it creates its variables with
    ``model.add_weight`` so the model trains and saves them. The values of its
    ``logs(model)`` (``{name: scalar}``) are added to the fit/evaluate logs: read in
    ``compute_loss`` (the values the step used, before the optimizer update) and kept in
    metrics, so it works on every backend (JAX passes only metric variables to
    ``compute_metrics``). Compiled metrics
    (e.g. ``"accuracy"``) see the scores, or the embedding when there is no head.

    One backbone pass per step: in training (and, through a switch, in ``evaluate``) the model
    returns ``{"embedding", "scores"}`` to Keras' own train step, which hands it to the
    overridden ``compute_loss`` / ``compute_metrics``; ``predict`` and ``model(x)`` return the
    plain (N, C) scores (or the (N, D) embedding without a head). The reasoning is in
    ``docs/design.md`` ("How MarginModel shares one forward pass").

    Built at construction when the backbone has a known input shape (a functional model or
    a ``Sequential`` starting with ``keras.Input``), as ``keras.Sequential`` is; otherwise on
    its first call. ``keras.callbacks.BackupAndRestore`` needs a built model: a preempted
    run resumed from its backup ends exactly as the uninterrupted run, including the loss
    state (``LossEnsemble``'s weights and running means, ``POD``'s δ and norm sums — list
    ``km.callbacks.PODDelta`` before ``BackupAndRestore`` so the saved δ is the updated one).

    Args:
        backbone: a Keras layer or model mapping inputs to embeddings (N, D).
        head: optional head layer mapping embeddings to (N, C) class scores.
        **kwargs: ``keras.Model`` arguments (``name``, ``trainable``, ``dtype``, ...); any other
            keyword is a ``TypeError`` naming the closest valid argument.

    Example:
        >>> model = km.models.MarginModel(backbone, km.layers.PEDCCHead(10))
        >>> model.compile("adam", loss=km.losses.POD(), metrics=["accuracy"], jit_compile=True)
        >>> model.fit(x, y, callbacks=[km.callbacks.PODDelta()]); model.predict(x)  # (N, 10)
    """

    def __init__(self, backbone, head=None, **kwargs):
        reject_unknown(type(self), kwargs, accepted=LAYER_ARGUMENTS)
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(
                f"`backbone` must be a Keras layer or model producing (N, D) embeddings; "
                f"got {type(backbone).__name__}."
            )
        if head is not None and not isinstance(head, keras.layers.Layer):
            raise ValueError(f"`head` must be a Keras layer or None; got {type(head).__name__}.")
        self.backbone = backbone
        self.head = head
        self._dict_in_inference = False
        self._stateful_losses = ()
        self._loss_logs = {}
        self.objective = None
        self.compiled_loss_argument = None
        self.has_compiled_metrics = False
        # Like keras.Sequential with an Input: build now when the input shape is known, so
        # the model has its weights before fit (keras.callbacks.BackupAndRestore needs that).
        # Loss state (build_state) is still added at compile, after these weights.
        input_shape = _known_input_shape(backbone)
        if input_shape is not None:
            self.build(input_shape)

    # ----------------------------------------------------------------------------- forward
    def build(self, input_shape):
        embedding = self.backbone(keras.KerasTensor(tuple(input_shape)))
        if self.head is not None:
            self.head(embedding)

    def call(self, inputs, training=None):
        embedding = self.backbone(inputs, training=training)
        if self.head is None or (training and not self._training_needs_scores()):
            outputs = {"embedding": embedding}
        else:
            outputs = {"embedding": embedding, "scores": self.head(embedding, training=training)}
        if training or self._dict_in_inference:
            return outputs
        return outputs.get("scores", embedding)

    def _training_needs_scores(self):
        """False when the compiled loss trains without the full (N, C) head output (it
        declares ``needs_training_scores = False``, e.g. ``km.losses.PartialFC``) and no
        compiled metric reads it: the training step then never computes the (N, C) scores."""
        if getattr(self.objective, "needs_training_scores", True):
            return True
        return self.has_compiled_metrics

    # ------------------------------------------------------------------------ loss routing
    def compile(self, optimizer="rmsprop", loss=None, *args, metrics=None, weighted_metrics=None,
                **kwargs):
        """``keras.Model.compile``; the loss is kept by the model (``objective``) and applied
        by ``compute_loss`` through ``km.protocols.loss_value``."""
        objective = None if loss is None else as_loss(loss)
        if objective is not None:
            check_composition(objective, self.head)
        super().compile(optimizer, None, *args, metrics=metrics, weighted_metrics=weighted_metrics,
                        **kwargs)
        self.loss = loss
        self.objective = objective
        self.compiled_loss_argument = loss
        self.has_compiled_metrics = bool(metrics) or bool(weighted_metrics)
        self._build_loss_state()

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self.compiled_loss_argument is not None:
            config = dict(config)
            config["loss"] = keras.saving.serialize_keras_object(self.compiled_loss_argument)
        return config

    def compile_from_config(self, config):
        # The overridden compile() is not called by Keras' loader: same steps, with the loss
        # state created before the optimizer slots so their order matches the file.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _build_loss_state(self):
        loss = self.objective
        if not isinstance(loss, ModelLoss):
            return
        if not any(loss is s for s in self._stateful_losses):
            loss.build_state(self)
            self._stateful_losses = self._stateful_losses + (loss,)
        # loss.logs(model) may read model variables; on JAX only metric variables reach
        # compute_metrics, so compute_loss copies the values into these metrics.
        if not self._loss_logs:
            self._loss_logs = {name: LastValue(name) for name in loss.logs(self)}

    def _routed_outputs(self, x, y_pred):
        """{"embedding", "scores"} from the step's forward pass (see class docstring); the
        embedding is recomputed only when a model-aware or embedding loss needs it and the
        pass did not keep it."""
        if isinstance(y_pred, dict):
            outputs = {"embedding": y_pred["embedding"], "scores": y_pred.get("scores")}
        elif self.head is None:
            outputs = {"embedding": y_pred, "scores": None}
        else:
            outputs = {"embedding": None, "scores": y_pred}
        if self.head is None:
            # Without a head a loss on "scores" (any Keras loss) is applied to the embedding.
            outputs["scores"] = outputs["embedding"]
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = self.objective
        if loss is None:
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        outputs = complete_outputs(loss, self._routed_outputs(x, y_pred),
                                   lambda: self.backbone(x, training=training))
        total = loss_value(loss, y, outputs, self, sample_weight, training=training)
        if self.losses:  # regulariser / add_loss terms, aggregated by Keras itself
            total = total + super().compute_loss(x, y, None, sample_weight, training=training)
        if self._loss_logs:
            for name, value in loss.logs(self).items():
                self._loss_logs[name].update_state(value)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        outputs = self._routed_outputs(x, y_pred)
        # Without the (N, C) output (a training step of PartialFC with no compiled metric)
        # nothing reads it: hand the embedding on rather than run the backbone again.
        scores = outputs["scores"] if outputs["scores"] is not None else outputs["embedding"]
        if scores is None:
            scores = self.backbone(x, training=False)
        results = super().compute_metrics(x, y, scores, sample_weight=sample_weight)
        if self._loss_logs:
            results = dict(results)
            results.update({name: tracker.result() for name, tracker in self._loss_logs.items()})
        return results

    # ---------------------------------------------------------------------- serialisation
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "head": None if self.head is None else keras.saving.serialize_keras_object(self.head),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        head = config.pop("head", None)
        head = None if head is None else keras.saving.deserialize_keras_object(head)
        return cls(backbone, head, **config)
