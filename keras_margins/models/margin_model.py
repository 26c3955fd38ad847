"""``MarginModel``: backbone + head task model for losses that need the embedding or the
model (the ``needs`` protocol of ``km.losses.MarginLoss`` / ``km.losses.ModelLoss``; the design
is described in ``docs/design.md``)."""

import keras

from keras_margins.losses._base import NEEDS, ModelLoss
from keras_margins.metrics.last_value import LastValue
from keras_margins.models.one_pass import OnePassOutputs


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
class MarginModel(OnePassOutputs, keras.Model):
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

    Example:
        >>> model = km.models.MarginModel(backbone, km.layers.PEDCCHead(10))
        >>> model.compile("adam", loss=km.losses.POD(), metrics=["accuracy"], jit_compile=True)
        >>> model.fit(x, y, callbacks=[km.callbacks.PODDelta()]); model.predict(x)  # (N, 10)
    """

    def __init__(self, backbone, head=None, **kwargs):
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
        """False when the compiled loss trains without the full (N, C) head output (e.g.
        ``km.losses.PartialFC``: ``needs_training_scores = False``) and no compiled metric
        reads it: the training step then never computes the (N, C) scores."""
        loss = getattr(self, "loss", None)
        if getattr(loss, "needs_training_scores", True):
            return True
        return getattr(self, "_compile_metrics", None) is not None

    def _lock_state(self):
        # Like Keras' Functional/Sequential: losses may add their state (build_state) after
        # the model is built, at compile time.
        pass

    # ------------------------------------------------------------------------ loss routing
    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        self._build_loss_state()

    def compile_from_config(self, config):
        # Trainer.compile_from_config skips overridden compile(); same steps, with the
        # loss state created before the optimizer slots so their order matches the file.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def _build_loss_state(self):
        loss = getattr(self, "loss", None)
        needs = getattr(loss, "needs", "scores")
        if needs not in NEEDS:
            raise ValueError(f"`loss.needs` must be one of {NEEDS}; got {needs!r}.")
        if not isinstance(loss, ModelLoss):
            if needs == "model":
                raise ValueError(
                    f"`loss`: {type(loss).__name__} has needs='model' but does not subclass "
                    "km.losses.ModelLoss (build_state / compute_model_loss / logs)."
                )
            return
        if not any(loss is s for s in self._stateful_losses):
            loss.build_state(self)
            self._stateful_losses = self._stateful_losses + (loss,)
        # loss.logs(model) may read model variables; on JAX only metric variables reach
        # compute_metrics, so compute_loss copies the values into these metrics.
        if not self._loss_logs:
            self._loss_logs = {name: LastValue(name) for name in loss.logs(self)}

    def _routed_outputs(self, x, y_pred):
        """{"embedding", "scores"} from the step's forward pass (see class docstring)."""
        if isinstance(y_pred, dict):
            return {"embedding": y_pred["embedding"], "scores": y_pred.get("scores")}
        if self.head is None:
            return {"embedding": y_pred, "scores": None}
        return {"embedding": None, "scores": y_pred}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        outputs = self._routed_outputs(x, y_pred)
        loss = getattr(self, "loss", None)
        needs = getattr(loss, "needs", "scores")
        if needs != "scores" and outputs["embedding"] is None:
            outputs["embedding"] = self.backbone(x, training=training)
        terms = []
        if needs == "scores":
            if self._compile_loss is not None:
                scores = outputs["scores"] if self.head is not None else outputs["embedding"]
                value = self._compile_loss(y, scores, sample_weight)
                if value is not None:
                    terms.append(value)
        elif needs == "embedding":
            terms.append(loss(y, outputs["embedding"], sample_weight))
        else:
            terms.append(
                loss.compute_model_loss(y, outputs, self, sample_weight, training=training)
            )
        terms.extend(self._aggregate_additional_loss(extra) for extra in self.losses)
        if self._loss_logs:
            for name, value in loss.logs(self).items():
                self._loss_logs[name].update_state(value)
        if not terms:
            raise ValueError("No loss to compute. Provide a `loss` argument in `compile()`.")
        return terms[0] if len(terms) == 1 else keras.ops.sum(keras.ops.stack(terms))

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        outputs = self._routed_outputs(x, y_pred)
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
