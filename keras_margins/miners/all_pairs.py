"""Every valid pair (no mining)."""

import keras

from keras_margins.miners._base import Miner


@keras.saving.register_keras_serializable(package="keras_margins")
class AllPairsMiner(Miner):
    """All in-batch pairs: positives = same label except self, negatives = other labels.

    The default of the pair-wise Circle loss; equal to ``km.ops.pair_masks``.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    >>> labels = [0, 0, 0, 1, 1]
    >>> pos, neg = km.miners.AllPairsMiner()(labels, emb)
    >>> print(np.asarray(pos).astype(int))
    [[0 1 1 0 0]
     [1 0 1 0 0]
     [1 1 0 0 0]
     [0 0 0 0 1]
     [0 0 0 1 0]]

    Reference:
        - Sun et al., 2020. [Circle Loss: A Unified Perspective of Pair Similarity
          Optimization](https://arxiv.org/abs/2002.10857), CVPR 2020 (all pairs of a batch with pair-wise
          labels).
    """

    def mine(self, pos, neg, sim):
        return pos, neg
