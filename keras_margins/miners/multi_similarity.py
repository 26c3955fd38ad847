"""Multi-similarity mining (Wang et al. 2019, CVPR, Eq. 5-6)."""

import keras
from keras import ops

from keras_margins.miners._base import Miner
from keras_margins.ops._common import NEG_LARGE


@keras.saving.register_keras_serializable(package="keras_margins")
class MultiSimilarityMiner(Miner):
    """Keeps the informative pairs of the multi-similarity paper (ε = ``epsilon``, default 0.1):

        negative (a, n) if  s_an + ε > min_p s_ap     (harder than the anchor's hardest positive)
        positive (a, p) if  s_ap − ε < max_n s_an     (harder than the anchor's hardest negative)

    Anchors without positives keep no negatives and vice versa.

    Example:
        >>> miner = km.miners.MultiSimilarityMiner(epsilon=0.1)
        >>> pos, neg = miner(labels, embeddings)
        >>> loss = km.losses.PairCircleLoss(miner=miner)
    """

    def __init__(self, epsilon=0.1):
        if not epsilon >= 0:
            raise ValueError(f"`epsilon` must be >= 0; got {epsilon}.")
        self.epsilon = float(epsilon)

    def mine(self, pos, neg, sim):
        hardest_pos = ops.min(ops.where(pos, sim, -NEG_LARGE), axis=1, keepdims=True)
        hardest_neg = ops.max(ops.where(neg, sim, NEG_LARGE), axis=1, keepdims=True)
        neg_out = ops.logical_and(neg, sim + self.epsilon > hardest_pos)
        pos_out = ops.logical_and(pos, sim - self.epsilon < hardest_neg)
        return pos_out, neg_out

    def get_config(self):
        return {"epsilon": self.epsilon}
