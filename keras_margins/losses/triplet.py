"""Triplet margin loss on embeddings (Weinberger & Saul 2009; Schroff et al. 2015, FaceNet).

Two conventions, each reproducing a reference library value for value:

* all triplets (default, or any ``km.miners`` pair miner): pytorch-metric-learning's
  ``TripletMarginLoss`` (Euclidean distance of L2-normalised embeddings, mean over the
  triplets with a positive loss);
* ``miner=km.miners.SemiHardMiner()``: TensorFlow Addons' ``TripletSemiHardLoss`` with
  ``distance_metric="squared-L2"`` (squared Euclidean distance, one semi-hard negative per
  positive pair, mean over positive pairs). TF Addons' own default, "L2", has been the plain
  Euclidean distance since TF Addons 0.11; ``squared=False`` reproduces that one.
"""

import keras
from keras import ops

from keras_margins.losses._base import MarginLoss
from keras_margins.miners._base import Miner
from keras_margins.miners.semi_hard import SemiHardMiner
from keras_margins.ops._validation import as_float, as_labels, static_shape
from keras_margins.ops.normalize import l2_normalize
from keras_margins.ops.pairs import pair_masks

#: Floor under a squared distance before the square root (finite gradient at d = 0).
_SQ_FLOOR = 1e-12
#: Stand-in for +inf in a masked minimum over distances (distances are at most 2, or 4).
_LARGE = 1e9


def _pair_labels(labels, batch_size):
    """(N,) int32 labels of a pair loss: compared for equality only (any integer is valid)."""
    return as_labels(labels, batch_size=batch_size)


def _distances(embeddings, squared):
    """(N, N) Euclidean (or squared) distances of the L2-normalised rows, and the cosines."""
    unit = l2_normalize(embeddings, axis=1)
    cos = ops.clip(ops.matmul(unit, ops.transpose(unit)), -1.0, 1.0)
    sq = ops.maximum(2.0 - 2.0 * cos, 0.0)
    return (sq if squared else ops.sqrt(ops.maximum(sq, _SQ_FLOOR))), cos


def _spread_over_anchors(per_anchor_sum, count):
    """(N,) values whose mean is sum(per_anchor_sum) / count (0 when count is 0).

    Keras reduces a loss's per-sample values by their mean; a triplet loss is a mean over
    triplets (or positive pairs), so each anchor carries N · (its share of the numerator).
    """
    n = ops.cast(ops.shape(per_anchor_sum)[0], per_anchor_sum.dtype)
    return per_anchor_sum * n / ops.maximum(count, 1.0)


def triplet_all(labels, embeddings, margin, squared=False, pos_mask=None, neg_mask=None):
    """Per-anchor values of the all-triplets loss (pytorch-metric-learning convention).

    Over every triplet (a, p, n) with y_p = y_a, p ≠ a, y_n ≠ y_a (and, when given,
    ``pos_mask[a, p]`` and ``neg_mask[a, n]``): ℓ_apn = max(d_ap − d_an + margin, 0);
    the loss is Σ ℓ_apn / #{ℓ_apn > 0} (0 when no triplet violates the margin).
    """
    distances, _ = _distances(embeddings, squared)
    pos, neg = pair_masks(labels)
    if pos_mask is not None:
        pos = ops.logical_and(pos, pos_mask)
    if neg_mask is not None:
        neg = ops.logical_and(neg, neg_mask)
    d_ap = ops.expand_dims(distances, 2)  # (a, p, 1)
    d_an = ops.expand_dims(distances, 1)  # (a, 1, n)
    valid = ops.logical_and(ops.expand_dims(pos, 2), ops.expand_dims(neg, 1))
    violation = ops.where(valid, ops.relu(d_ap - d_an + margin), 0.0)
    count = ops.sum(ops.cast(violation > 0.0, violation.dtype))
    return _spread_over_anchors(ops.sum(violation, axis=(1, 2)), count)


def triplet_semi_hard(labels, embeddings, margin, squared=True):
    """Per-anchor values of FaceNet's semi-hard triplet loss (TF Addons convention; with
    ``squared=True`` its ``distance_metric="squared-L2"``, with False its "L2").

    For each positive pair (a, p) the negative is the closest one *farther* than p,
    n* = argmin {d_an : y_n ≠ y_a, d_an > d_ap}; if there is none, the farthest negative
    (0 if the anchor has no negative at all, as in TF Addons). ℓ_ap = max(d_ap − d_an* +
    margin, 0); the loss is the mean of ℓ_ap over all positive pairs (0 when there is none;
    TF Addons returns NaN there).
    """
    distances, _ = _distances(embeddings, squared)
    pos, neg = pair_masks(labels)
    d_ap = ops.expand_dims(distances, 2)  # (a, p, 1)
    d_an = ops.expand_dims(distances, 1)  # (a, 1, n)
    farther = ops.logical_and(ops.expand_dims(neg, 1), d_an > d_ap)  # (a, p, n)
    closest_farther = ops.min(ops.where(farther, d_an, _LARGE), axis=2)  # (a, p)
    farthest = ops.max(ops.where(neg, distances, 0.0), axis=1, keepdims=True)  # (a, 1)
    chosen = ops.where(ops.any(farther, axis=2), closest_farther, farthest)
    loss = ops.where(pos, ops.relu(distances - chosen + margin), 0.0)
    count = ops.sum(ops.cast(pos, loss.dtype))
    return _spread_over_anchors(ops.sum(loss, axis=1), count)


@keras.saving.register_keras_serializable(package="keras_margins")
class TripletMarginLoss(MarginLoss):
    """Triplet margin loss on embeddings (N, D): max(d_ap − d_an + margin, 0).

    Distances are Euclidean between L2-normalised embeddings (``squared=True``: squared
    Euclidean, 2 − 2 cos). Labels are compared for equality only, so any integer is a valid
    label (negative ones too); anchors without a positive contribute nothing, nor (all
    triplets) do anchors without a negative (semi-hard mode follows TF Addons there: the
    negative distance is taken as 0).

    * ``miner=None`` (or any ``km.miners`` pair miner, which keeps the triplets whose
      (anchor, positive) and (anchor, negative) pairs it selects): every triplet, mean over
      the triplets with a positive loss. With the defaults this is pytorch-metric-learning's
      ``TripletMarginLoss()`` (margin 0.05, ``LpDistance()``, ``AvgNonZeroReducer``).
    * ``miner=km.miners.SemiHardMiner()``: FaceNet's semi-hard mining as TensorFlow Addons
      implements it: each positive pair (a, p) takes the closest negative farther than p
      (else the farthest negative), and the loss is the mean over all positive pairs.
      Squared distances by default, so ``TripletMarginLoss(1.0, miner=SemiHardMiner())``
      equals ``tfa.losses.TripletSemiHardLoss(margin=1.0, distance_metric="squared-L2")``
      on L2-normalised embeddings (the input TF Addons asks for). TF Addons' default
      ``distance_metric="L2"`` is the plain Euclidean distance (since TF Addons 0.11;
      0.10 and earlier called the squared distance "L2"): that one is
      ``TripletMarginLoss(1.0, miner=SemiHardMiner(), squared=False)``. The miner's own
      ``margin`` plays no role here.

    Keras averages per-sample values; this loss returns per-anchor values scaled so that their
    mean is the triplet mean above (so ``reduction="sum"`` gives N times the loss). Train on
    class-balanced batches (``km.data.pk_batches``) so that anchors have positives.

    Args:
        margin: margin of the hinge (default 0.05, pytorch-metric-learning's; TF Addons'
            default is 1.0). Must be >= 0.
        miner: None or a ``km.miners`` object (see above).
        squared: None (default: False, or True with ``SemiHardMiner``), or a bool choosing
            squared Euclidean distances.

    Returns:
        Called as ``loss(labels, embeddings)``: a scalar.

    Example:
        >>> model = keras.Sequential([backbone])                # outputs embeddings (N, D)
        >>> model.compile("adam", loss=km.losses.TripletMarginLoss(1.0, miner=km.miners.SemiHardMiner()))
        >>> model.fit(km.data.pk_batches((x, y), p=8, k=4, seed=0), epochs=5)

    Reference:
        Schroff, Kalenichenko & Philbin, "FaceNet", CVPR 2015 (Eq. 1, semi-hard negatives);
        Weinberger & Saul, "Distance Metric Learning for Large Margin Nearest Neighbor
        Classification", JMLR 2009.
    """

    needs = "embedding"

    def __init__(self, margin=0.05, miner=None, squared=None, **kwargs):
        if not isinstance(margin, (int, float)) or isinstance(margin, bool) or not margin >= 0:
            raise ValueError(f"`margin` must be a number >= 0; got {margin!r}.")
        if isinstance(miner, dict):
            miner = keras.saving.deserialize_keras_object(miner)
        if miner is not None and not isinstance(miner, Miner):
            raise ValueError(
                f"`miner` must be None or a km.miners object (e.g. km.miners.SemiHardMiner()); "
                f"got {miner!r}."
            )
        if squared is not None and not isinstance(squared, bool):
            raise ValueError(f"`squared` must be None, True or False; got {squared!r}.")
        kwargs.setdefault("name", "triplet_margin_loss")
        self.margin = float(margin)
        self.miner = miner
        self.squared = squared
        super().__init__(**kwargs)

    @property
    def semi_hard(self):
        """True when the loss follows FaceNet / TF Addons semi-hard mining."""
        return isinstance(self.miner, SemiHardMiner)

    def call(self, y_true, y_pred):
        # float32, or float64 when the loss is asked for float64 (half precision is promoted)
        embeddings = as_float(y_pred, "embeddings", 2, "(N, D)")
        labels = _pair_labels(y_true, static_shape(embeddings)[0])
        squared = self.squared if self.squared is not None else self.semi_hard
        if self.semi_hard:
            return triplet_semi_hard(labels, embeddings, self.margin, squared)
        pos_mask = neg_mask = None
        if self.miner is not None:
            _, cos = _distances(embeddings, squared)
            pos_mask, neg_mask = self.miner.mine(*pair_masks(labels), cos)
        return triplet_all(labels, embeddings, self.margin, squared, pos_mask, neg_mask)

    def get_config(self):
        config = super().get_config()
        config["miner"] = (
            None if self.miner is None else keras.saving.serialize_keras_object(self.miner)
        )
        return config
