"""Every valid pair (no mining)."""

import keras

from keras_margins.miners._base import Miner


@keras.saving.register_keras_serializable(package="keras_margins")
class AllPairsMiner(Miner):
    """All in-batch pairs: positives = same label except self, negatives = other labels.

    The default of the pair-wise Circle loss (SPEC §2.1); equal to ``km.ops.pair_masks``.

    Example:
        >>> pos, neg = km.miners.AllPairsMiner()(labels, embeddings)
        >>> pos.shape, neg.shape   # (N, N), (N, N) boolean
    """

    def mine(self, pos, neg, sim):
        return pos, neg
