"""ProxyNCA loss on the cosines of a proxy head (Movshovitz-Attias et al., ICCV 2017)."""

import keras
from keras import ops

from keras_margins.losses._base import MarginLoss
from keras_margins.ops._numerics import masked_logsumexp, poison_invalid_labels, target_mask
from keras_margins.ops._validation import as_labels, check_non_negative, check_positive, check_scores


@keras.saving.register_keras_serializable(package="keras_margins")
class ProxyNCALoss(MarginLoss):
    """ProxyNCA: NCA between each embedding and one learned proxy per class.

    The proxies live in the head, not in the loss: use ``km.layers.LargestMarginHead(C)``,
    whose (D, C) kernel columns are the proxies p_j and whose output is cos θ_j between the
    L2-normalised embedding x̂ and p̂_j. With the embedding scaled by a and the proxies by b,
    the squared distance is ‖a x̂ − b p̂_j‖² = a² + b² − 2ab cos θ_j, so the NCA logits
    −t · ‖a x̂ − b p̂_j‖² equal z_j = 2 t a b cos θ_j up to a constant that cancels:

        L = −Σ_j q_j log softmax(z)_j,   q_y = 1 − ε,  q_j = ε / (C − 1) for j ≠ y,

    or, with ``exclude_positive=True`` (the paper's Eq. 4, positive proxy left out of the
    denominator), L = −z_y + log Σ_{j≠y} exp z_j.

    Configurations: the defaults equal pytorch-metric-learning's
    ``ProxyNCALoss(num_classes, embedding_size, softmax_scale=1)`` (its ``LpDistance(power=2)``
    on normalised embeddings and proxies, positive proxy included, mean over the batch); the
    ensemble-of-losses authors' ProxyNCA is ``proxy_scale=3, label_smoothing=0.1``.
    Labels must lie in [0, C): eager calls raise ``ValueError``; under XLA an invalid label
    makes its row (and so the loss) NaN.

    Args:
        softmax_scale: t (default 1.0). Must be > 0.
        embedding_scale: a, the length of the normalised embedding (default 1.0). Must be > 0.
        proxy_scale: b, the length of the normalised proxies (default 1.0). Must be > 0.
        label_smoothing: ε in [0, 1) (default 0.0).
        exclude_positive: leave the label's proxy out of the denominator (default False).

    Returns:
        Called as ``loss(labels, cos)`` with cos (N, C) from a cosine head: a scalar.

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.ProxyNCALoss(proxy_scale=3.0, label_smoothing=0.1))
        >>> model.fit(x, y)

    Reference:
        Movshovitz-Attias, Toshev, Leung, Ioffe & Singh, "No Fuss Distance Metric Learning
        using Proxies", ICCV 2017 (Eq. 4).
    """

    score_kind = "cosine"

    def __init__(
        self,
        softmax_scale=1.0,
        embedding_scale=1.0,
        proxy_scale=1.0,
        label_smoothing=0.0,
        exclude_positive=False,
        **kwargs,
    ):
        check_positive(softmax_scale, "softmax_scale")
        check_positive(embedding_scale, "embedding_scale")
        check_positive(proxy_scale, "proxy_scale")
        check_non_negative(label_smoothing, "label_smoothing")
        if not label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1); got {label_smoothing}.")
        if not isinstance(exclude_positive, bool):
            raise ValueError(f"`exclude_positive` must be True or False; got {exclude_positive!r}.")
        if exclude_positive and label_smoothing > 0:
            raise ValueError(
                "`exclude_positive=True` is the paper's hard-target loss: it cannot be "
                f"combined with `label_smoothing` > 0; got {label_smoothing}."
            )
        kwargs.setdefault("name", "proxy_nca_loss")
        self.softmax_scale = float(softmax_scale)
        self.embedding_scale = float(embedding_scale)
        self.proxy_scale = float(proxy_scale)
        self.label_smoothing = float(label_smoothing)
        self.exclude_positive = exclude_positive
        super().__init__(**kwargs)

    def per_sample(self, labels, cos):
        cos, num_classes = check_scores(cos)  # float32, or float64 for a float64 loss
        labels = as_labels(labels, num_classes, cos.shape[0])
        num_classes = num_classes or ops.shape(cos)[1]
        scale = 2.0 * self.softmax_scale * self.embedding_scale * self.proxy_scale
        logits = scale * cos
        is_target = target_mask(labels, num_classes)
        z_y = ops.sum(ops.where(is_target, logits, 0.0), axis=1)
        if self.exclude_positive:
            lse, _ = masked_logsumexp(logits, ops.logical_not(is_target), axis=1)
            loss = lse - z_y
        else:
            log_probs = logits - ops.logsumexp(logits, axis=1, keepdims=True)
            eps = self.label_smoothing
            off = eps / (ops.cast(num_classes, cos.dtype) - 1.0)
            weights = ops.where(is_target, 1.0 - eps, off)
            loss = -ops.sum(weights * log_probs, axis=1)
        # Under XLA label values cannot be checked: an invalid label (no target column) -> NaN,
        # value and gradient (a `where` would drop the NaN cotangent and train on).
        return poison_invalid_labels(loss, labels, num_classes)
