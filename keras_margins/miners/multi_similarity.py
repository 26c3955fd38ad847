"""Multi-similarity mining (Wang et al. 2019, CVPR, Eq. 5-6)."""

import keras
from keras import ops

from keras_margins.miners._base import Miner
from keras_margins.ops._numerics import NEG_LARGE


@keras.saving.register_keras_serializable(package="keras_margins")
class MultiSimilarityMiner(Miner):
    """Keeps the informative pairs of the multi-similarity paper.

        negative (a, n) if  s_an + ε > min_p s_ap     (harder than the anchor's hardest positive)
        positive (a, p) if  s_ap − ε < max_n s_an     (harder than the anchor's hardest negative)

    Anchors without positives keep no negatives and vice versa.

    Args:
        epsilon: ε >= 0 (default 0.1, the paper's value).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    >>> labels = [0, 0, 0, 1, 1]
    >>> pos, neg = km.miners.MultiSimilarityMiner(epsilon=0.1)(labels, emb)
    >>> print(np.asarray(neg).astype(int))
    [[0 0 0 1 0]
     [0 0 0 1 0]
     [0 0 0 1 1]
     [1 1 1 0 0]
     [0 0 1 0 0]]
    >>> loss = km.losses.PairCircleLoss(miner=km.miners.MultiSimilarityMiner())

    Reference:
        - Wang et al., 2019. [Multi-Similarity Loss with General Pair Weighting for Deep Metric
          Learning](https://arxiv.org/abs/1904.06627), CVPR 2019 (pair mining).
    """

    def __init__(self, epsilon=0.1, **kwargs):
        super().__init__(**kwargs)
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
