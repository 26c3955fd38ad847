"""Semi-hard mining (Schroff et al. 2015, FaceNet), projected onto pairs."""

import keras
from keras import ops

from keras_margins.miners._base import Miner


@keras.saving.register_keras_serializable(package="keras_margins")
class SemiHardMiner(Miner):
    """Pairs taking part in at least one semi-hard triplet (a, p, n):

        s_ap − margin < s_an < s_ap     (cosine similarity; in distances d_ap < d_an < d_ap + margin)

    ``pos_mask[a, p]`` is True when some negative makes (a, p, n) semi-hard, ``neg_mask[a, n]``
    when some positive does. ``margin`` is on cosine similarity (default 0.2). The triplet
    test is an (N, N, N) boolean reduced at once (XLA fuses it); keep batches to a few hundred.

    Example:
        >>> miner = km.miners.SemiHardMiner(margin=0.2)
        >>> pos, neg = miner(labels, embeddings)
        >>> loss = km.losses.PairCircleLoss(miner=miner)
    """

    def __init__(self, margin=0.2):
        if not margin > 0:
            raise ValueError(f"`margin` must be > 0; got {margin}.")
        self.margin = float(margin)

    def mine(self, pos, neg, sim):
        s_ap = ops.expand_dims(sim, 2)  # (a, p, 1)
        s_an = ops.expand_dims(sim, 1)  # (a, 1, n)
        semi_hard = ops.logical_and(s_an < s_ap, s_an > s_ap - self.margin)
        triplet = ops.logical_and(
            ops.logical_and(ops.expand_dims(pos, 2), ops.expand_dims(neg, 1)), semi_hard
        )
        return ops.any(triplet, axis=2), ops.any(triplet, axis=1)

    def get_config(self):
        return {"margin": self.margin}
