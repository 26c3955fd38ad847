"""Base class of the pair miners (private).

A miner maps (labels, embeddings) to two static-shape boolean masks ``(pos_mask, neg_mask)``
of shape (N, N): which (anchor, positive) and (anchor, negative) pairs a pair loss should use.
Masks are built only from comparisons, ``argmin``/``argmax`` and reductions (no
``boolean_mask``, no data-dependent shapes), so every miner runs under ``jit_compile=True``.
Mined masks are always subsets of the label masks (``km.ops.pair_masks``).
"""

from keras import ops

from keras_margins._arguments import reject_unknown
from keras_margins.ops._validation import as_labels
from keras_margins.ops.pairs import pair_masks, pairwise_cosine


class Miner:
    """Base of ``km.miners``: subclasses implement ``mine(pos, neg, sim)``.

    ``__call__(labels, embeddings)`` works on the cosine similarity of the L2-normalised
    embeddings and returns ``(pos_mask, neg_mask)``, two (N, N) boolean tensors that are
    subsets of the label masks (``km.ops.pair_masks``); ``masks_from_similarity(labels, sim)``
    reuses a similarity matrix a loss has already computed (``PairCircleLoss`` does this).
    ``mine(pos, neg, sim)`` receives the label masks and the float32 (N, N) similarities.
    An unknown keyword argument is a ``TypeError`` naming the closest valid argument
    (subclasses pass their ``**kwargs`` on to ``Miner.__init__``).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    >>> labels = [0, 0, 0, 1, 1]
    >>> pos, neg = km.miners.AllPairsMiner()(labels, emb)
    >>> np.asarray(pos).shape, np.asarray(neg).dtype
    ((5, 5), dtype('bool'))
    """

    def __init__(self, **kwargs):
        reject_unknown(type(self), kwargs, accepted=())

    def __call__(self, labels, embeddings):
        sim = pairwise_cosine(embeddings)
        labels = as_labels(labels, batch_size=sim.shape[0])
        return self.masks_from_similarity(labels, sim)

    def masks_from_similarity(self, labels, sim):
        pos, neg = pair_masks(labels)
        return self.mine(pos, neg, ops.cast(sim, "float32"))

    def mine(self, pos, neg, sim):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
