"""POD loss for PEDCC heads (Zhu & Zu, arXiv:2111.15449)."""

import keras
from keras import ops

from keras_margins.losses._base import MarginLoss, ModelLoss
from keras_margins.ops import pod_terms
from keras_margins.ops._numerics import EPS, safe_norm
from keras_margins.protocols import class_vectors, head_score_kind


@keras.saving.register_keras_serializable(package="keras_margins")
class POD(ModelLoss, MarginLoss):
    """POD loss: NaC term + ``decorrelation_weight`` · decorrelation term.

        NaC_i = (1 − x_i·c_{y_i}/sqrt(||x_i||² + δ²))²,
        L_sc = Σ_{a≠b} Σ_ab² / (D−1), Σ = RᵀR/(B−1), r_i = x_i/||x_i|| − c_{y_i},

    on the embedding x (before any normalisation) and the fixed centroids of a
    ``km.layers.PEDCCHead``. Softmax-free. It needs the embedding and the head, so it is a
    ``km.losses.ModelLoss`` that runs in ``km.models.MarginModel``. δ is a non-trainable
    variable of the model (created by ``build_state``, saved with it), starting at ``delta``;
    the ``km.callbacks.PODDelta`` callback applies the authors' schedule using the per-epoch
    mean norms this loss accumulates in training steps. With sample weights each sample's
    share of the batch loss (NaC_i + weight·L_sc) is weighted.

    Args:
        delta: initial δ >= 0 (default 0.05, the authors' value for the first epoch).
        decorrelation_weight: weight of L_sc, >= 0 (default 1.0, as in the authors' code).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = km.models.MarginModel(backbone, km.layers.PEDCCHead(10))
        >>> model.compile("adam", loss=km.losses.POD(delta=0.05), metrics=["accuracy"])
        >>> model.fit(x, y, epochs=30, callbacks=[km.callbacks.PODDelta()])

    Reference:
        - Zhu & Zu, 2021. POD loss on predefined evenly-distributed class centroids, [arXiv:2111.15449](https://arxiv.org/abs/2111.15449).
    """

    needs = "model"

    def __init__(self, delta=0.05, decorrelation_weight=1.0, **kwargs):
        if not delta >= 0:
            raise ValueError(f"`delta` must be >= 0; got {delta}.")
        if not decorrelation_weight >= 0:
            raise ValueError(f"`decorrelation_weight` must be >= 0; got {decorrelation_weight}.")
        kwargs.setdefault("name", "pod")
        self.delta = float(delta)
        self.decorrelation_weight = float(decorrelation_weight)
        super().__init__(**kwargs)
        self.state = None

    @property
    def delta_variable(self):
        """The model variable holding the current δ (None before ``build_state``)."""
        return None if self.state is None else self.state["delta"]

    # ------------------------------------------------------------ state owned by the model
    def build_state(self, model):
        """δ (starting at ``delta``) and the running sums of ||x·C|| and ||x|| over the epoch;
        checks that the head gives its class centroids."""
        class_vectors(model.head, "`model.head`", "POD")

        def weight(name, value, aggregation):
            return model.add_weight(
                name=name,
                shape=(),
                initializer=keras.initializers.Constant(value),
                trainable=False,
                aggregation=aggregation,
            )

        self.state = {
            "delta": weight("pod_delta", self.delta, "only_first_replica"),
            "logit_norm_sum": weight("pod_logit_norm_sum", 0.0, "sum"),
            "feature_norm_sum": weight("pod_feature_norm_sum", 0.0, "sum"),
            "count": weight("pod_norm_count", 0.0, "sum"),
        }

    def _accumulate_norms(self, features, centroids, cosines=None):
        """Adds Σ_i ||x_i·C||, Σ_i ||x_i|| and N to the epoch sums (no gradient).

        With the head's cosines cos_ij = x_i·c_j / (||x_i||·||c_j||) at hand (a PEDCCHead
        output), ||x_i·C||² = ||x_i||² Σ_j cos_ij² ||c_j||² needs no second (N, C) product.
        """
        feature_norm = safe_norm(features, 1)
        if cosines is None:
            logit_norm = safe_norm(ops.matmul(features, centroids), 1)
        else:
            column_sq = ops.maximum(ops.sum(ops.square(centroids), axis=0), EPS * EPS)
            weighted = ops.sum(ops.square(ops.stop_gradient(cosines)) * column_sq, axis=1)
            logit_norm = feature_norm * ops.sqrt(ops.maximum(weighted, EPS * EPS))
        self.state["logit_norm_sum"].assign_add(ops.sum(logit_norm))
        self.state["feature_norm_sum"].assign_add(ops.sum(feature_norm))
        self.state["count"].assign_add(ops.cast(ops.shape(features)[0], "float32"))

    # ----------------------------------------------------------------------------- the loss
    def compute_model_loss(self, y, outputs, model, sample_weight=None, training=True):
        head = model.head
        # float32 (also under mixed precision), or float64 when the loss is asked for float64
        dtype = "float64" if self.dtype == "float64" else "float32"
        features = ops.cast(outputs["embedding"], dtype)
        centroids = ops.cast(class_vectors(head, "`model.head`", "POD"), dtype)
        if self.state is None:
            delta = self.delta
        else:
            delta = ops.convert_to_tensor(self.state["delta"])
            if training:
                cosines = outputs.get("scores") if head_score_kind(head) == "cosine" else None
                if cosines is not None:
                    cosines = ops.cast(cosines, "float32")
                self._accumulate_norms(ops.stop_gradient(ops.cast(features, "float32")),
                                       ops.cast(centroids, "float32"), cosines)
        packed = {"features": features, "centroids": centroids, "delta": delta}
        return self(y, packed, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        return MarginLoss.call(self, y_true, y_pred)

    def per_sample(self, labels, y_pred):
        if not isinstance(y_pred, dict):
            raise ValueError(
                "POD needs the embedding and the head's centroids: compile it on a "
                "km.models.MarginModel(backbone, km.layers.PEDCCHead(C)), not a keras.Sequential."
            )
        nac, decorrelation = pod_terms(labels, y_pred["features"], y_pred["centroids"], y_pred["delta"])
        return nac + self.decorrelation_weight * decorrelation
