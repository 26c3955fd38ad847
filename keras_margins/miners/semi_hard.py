"""Semi-hard mining (Schroff et al. 2015, FaceNet), projected onto pairs."""

import keras
from keras import ops

from keras_margins.miners._base import Miner


@keras.saving.register_keras_serializable(package="keras_margins")
class SemiHardMiner(Miner):
    """Pairs taking part in at least one semi-hard triplet (a, p, n).

        s_ap − margin < s_an < s_ap     (cosine similarity; in distances d_ap < d_an < d_ap + margin)

    ``pos_mask[a, p]`` is True when some negative makes (a, p, n) semi-hard, ``neg_mask[a, n]``
    when some positive does. The triplet test is an (N, N, N) boolean reduced at once (XLA
    fuses it); keep batches to a few hundred.

    Args:
        margin: margin > 0 on cosine similarity (default 0.2).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    >>> labels = [0, 0, 0, 1, 1]
    >>> pos, neg = km.miners.SemiHardMiner(margin=0.5)(labels, emb)
    >>> print(np.asarray(neg).astype(int))
    [[0 0 0 1 0]
     [0 0 0 0 0]
     [0 0 0 0 0]
     [0 0 0 0 0]
     [1 1 0 0 0]]

    Reference:
        - Schroff, Kalenichenko & Philbin, 2015. [FaceNet](https://arxiv.org/abs/1503.03832), CVPR 2015
          (semi-hard negatives).
    """

    def __init__(self, margin=0.2, **kwargs):
        super().__init__(**kwargs)
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
