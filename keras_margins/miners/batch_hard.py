"""Batch-hard mining (Hermans et al. 2017, "In defense of the triplet loss")."""

import keras
from keras import ops

from keras_margins.miners._base import Miner
from keras_margins.ops._numerics import NEG_LARGE


def _one_hot_rows(index, like):
    """(N, M) boolean with one True per row at ``index`` (N,), shaped like ``like``."""
    cols = ops.arange(ops.shape(like)[1], dtype="int32")
    return ops.equal(ops.expand_dims(ops.cast(index, "int32"), 1), ops.expand_dims(cols, 0))


@keras.saving.register_keras_serializable(package="keras_margins")
class BatchHardMiner(Miner):
    """For each anchor, its hardest positive (lowest cosine) and hardest negative (highest
    cosine) in the batch; anchors lacking a positive or a negative get empty rows.

    Ties go to the lowest index. Masks have at most one True per row.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    >>> labels = [0, 0, 0, 1, 1]
    >>> pos, neg = km.miners.BatchHardMiner()(labels, emb)
    >>> print(np.asarray(pos).astype(int))
    [[0 0 1 0 0]
     [0 0 1 0 0]
     [1 0 0 0 0]
     [0 0 0 0 1]
     [0 0 0 1 0]]
    >>> print(np.asarray(neg).argmax(axis=1))   # hardest negative of each anchor
    [3 3 3 1 2]
    >>> loss = km.losses.PairCircleLoss(miner=km.miners.BatchHardMiner())

    Reference:
        - Hermans, Beyer & Leibe, 2017. [In Defense of the Triplet Loss for Person Re-Identification](https://arxiv.org/abs/1703.07737).
    """

    def mine(self, pos, neg, sim):
        valid = ops.logical_and(ops.any(pos, axis=1), ops.any(neg, axis=1))
        hardest_pos = ops.argmin(ops.where(pos, sim, -NEG_LARGE), axis=1)
        hardest_neg = ops.argmax(ops.where(neg, sim, NEG_LARGE), axis=1)
        keep = ops.expand_dims(valid, 1)
        pos_out = ops.logical_and(_one_hot_rows(hardest_pos, sim), keep)
        neg_out = ops.logical_and(_one_hot_rows(hardest_neg, sim), keep)
        return pos_out, neg_out
