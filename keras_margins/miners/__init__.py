"""Pair miners: static-shape boolean (pos_mask, neg_mask) of shape (N, N), XLA-safe."""

from keras_margins.miners._base import Miner
from keras_margins.miners.all_pairs import AllPairsMiner
from keras_margins.miners.batch_hard import BatchHardMiner
from keras_margins.miners.multi_similarity import MultiSimilarityMiner
from keras_margins.miners.semi_hard import SemiHardMiner
