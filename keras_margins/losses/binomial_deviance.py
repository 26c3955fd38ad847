"""Binomial deviance loss on embeddings (Yi, Lei, Liao & Li, ICPR 2014)."""

import keras
from keras import ops

from keras_margins.losses._base import MarginLoss
from keras_margins.ops._validation import as_float, as_labels, check_positive, static_shape
from keras_margins.ops.pairs import pair_masks, pairwise_cosine


def _masked_mean(values, mask):
    """Row means of ``values`` over ``mask`` (N, M) -> (N,), 0 for an empty row."""
    mask = ops.cast(mask, values.dtype)
    return ops.sum(values * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="keras_margins")
class BinomialDevianceLoss(MarginLoss):
    """Binomial deviance on in-batch cosine similarities s_ij of the L2-normalised embeddings.

    Yi et al. (2014) score a pair by ln(1 + exp(−α (s_ij − β) m_ij)) with m_ij = 1 for a
    positive pair and m_ij = −C for a negative one. Per anchor i, with P(i) the other samples
    of its class and N(i) the samples of other classes:

        L_i = mean_{p ∈ P(i)} softplus(−α (s_ip − β)) + mean_{n ∈ N(i)} softplus(α C (s_in − β))

    (an empty set contributes 0), and the loss is the mean of L_i over the batch: the
    per-anchor normalisation of the ensemble-of-losses authors' ``BinomialLoss`` (Zabihzadeh
    et al.), which with slopes 2 and 25 is ``alpha=2, beta=0.5, cost=12.5``. Labels are
    compared for equality only: any integer is a valid label. pytorch-metric-learning has no
    binomial deviance loss.

    Args:
        alpha: slope α of the positive term (default 2.0, Yi et al.). Must be > 0.
        beta: similarity threshold β (default 0.5, Yi et al.).
        cost: C, the extra weight of negative pairs; their slope is α·C (default 25.0, the
            value of Opitz et al.'s BIER code). Must be > 0.

    Returns:
        Called as ``loss(labels, embeddings)``: a scalar.

    Example:
        >>> model = keras.Sequential([backbone])                # outputs embeddings (N, D)
        >>> model.compile("adam", loss=km.losses.BinomialDevianceLoss(alpha=2.0, beta=0.5, cost=25.0))
        >>> model.fit(km.data.pk_batches((x, y), p=8, k=4, seed=0), epochs=5)

    Reference:
        Yi, Lei, Liao & Li, "Deep Metric Learning for Person Re-Identification", ICPR 2014
        (binomial deviance, Eq. 5); Zabihzadeh, Alitbi & Mousavirad, "Ensemble of Loss
        Functions to Improve Generalizability of Deep Metric Learning Methods", 2021.
    """

    needs = "embedding"

    def __init__(self, alpha=2.0, beta=0.5, cost=25.0, **kwargs):
        check_positive(alpha, "alpha")
        check_positive(cost, "cost")
        if not -1.0 <= beta <= 1.0:
            raise ValueError(f"`beta` (a cosine threshold) must be in [-1, 1]; got {beta}.")
        kwargs.setdefault("name", "binomial_deviance_loss")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.cost = float(cost)
        super().__init__(**kwargs)

    def per_sample(self, labels, embeddings):
        # float32, or float64 when the loss is asked for float64 (half precision is promoted)
        embeddings = as_float(embeddings, "embeddings", 2, "(N, D)")
        labels = as_labels(labels, batch_size=static_shape(embeddings)[0])
        sim = pairwise_cosine(embeddings)
        pos, neg = pair_masks(labels)
        shifted = sim - self.beta
        positive = _masked_mean(ops.softplus(-self.alpha * shifted), pos)
        negative = _masked_mean(ops.softplus(self.alpha * self.cost * shifted), neg)
        return positive + negative
