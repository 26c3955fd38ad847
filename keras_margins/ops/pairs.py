"""In-batch pair masks and similarities (the building blocks of pair losses and miners).

All masks are static-shape boolean (N, M) tensors built by comparisons (no
``boolean_mask``, no dynamic shapes), so they compile under XLA.
"""

from keras import ops

from keras_margins.ops._validation import as_float, as_labels, static_shape
from keras_margins.ops.cosine import normalized_matmul
from keras_margins.ops.normalize import l2_normalize


def pair_masks(labels, ref_labels=None, remove_diagonal=True, self_offset=None):
    """Positive and negative pair masks of a batch, each (N, M) boolean.

    pos[i, j] = labels[i] == ref_labels[j] and neg[i, j] = labels[i] != ref_labels[j]. Without
    ``ref_labels`` the batch is compared with itself and, with ``remove_diagonal``, an anchor
    is not its own positive. When the references contain the anchors at rows
    ``self_offset + i`` (a batch gathered across replicas), those self-pairs are excluded from
    the positives.

    Args:
        labels: (N,) or (N, 1) integer class ids; compared for equality only, so any
            integer (negative ones included) is a valid id.
        ref_labels: optional (M,) class ids of the references (default: ``labels``).
        remove_diagonal: exclude i == j from the positives when ``ref_labels`` is None
            (default True).
        self_offset: optional int or scalar tensor, row of anchor 0 among the references
            (default None).

    Returns:
        ``(pos, neg)``, two (N, M) boolean tensors.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> pos, neg = km.ops.pair_masks([0, 0, 1])
    >>> print(np.asarray(pos).astype(int))
    [[0 1 0]
     [1 0 0]
     [0 0 0]]
    >>> print(np.asarray(neg).astype(int))
    [[0 0 1]
     [0 0 1]
     [1 1 0]]

    Reference:
        - Sun et al., 2020. [Circle Loss: A Unified Perspective of Pair Similarity
          Optimization](https://arxiv.org/abs/2002.10857), CVPR 2020 (pair-wise labels).
    """
    labels = as_labels(labels)
    same_set = ref_labels is None
    ref = labels if same_set else as_labels(ref_labels, name="ref_labels")
    same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(ref, 0))
    neg = ops.logical_not(same)
    if same_set and remove_diagonal:
        n = static_shape(labels)[0]
        n = ops.shape(labels)[0] if n is None else n
        same = ops.logical_and(same, ops.logical_not(ops.eye(n, dtype="bool")))
    elif self_offset is not None:
        rows = ops.arange(ops.shape(labels)[0], dtype="int32") + ops.cast(self_offset, "int32")
        cols = ops.arange(ops.shape(ref)[0], dtype="int32")
        is_self = ops.equal(ops.expand_dims(rows, 1), ops.expand_dims(cols, 0))
        same = ops.logical_and(same, ops.logical_not(is_self))
    return same, neg


def pairwise_cosine(embeddings, ref_embeddings=None):
    """(N, M) cosine similarities between L2-normalised rows, clipped to [-1, 1].

    Zero vectors give similarity 0 (never NaN). Against explicit references the fused cosine
    op of the heads is used, so class-level and pair-wise Circle losses see identical
    similarities.

    Args:
        embeddings: (N, D) float tensor.
        ref_embeddings: optional (M, D) references (default: ``embeddings``).

    Returns:
        (N, M) float tensor.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> e = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> print(np.round(np.asarray(km.ops.pairwise_cosine(e)), 4))
    [[1.     0.     0.7071]
     [0.     1.     0.7071]
     [0.7071 0.7071 1.    ]]
    """
    embeddings = as_float(embeddings, "embeddings", 2, "(N, D)")
    if ref_embeddings is None:
        # In-batch (N, N): normalise once and let autodiff differentiate both sides; the
        # fused op would keep extra N×N buffers for its backward (measured: +25 % memory of
        # the compiled pair-loss step, no speed gain).
        unit = l2_normalize(embeddings, axis=1)
        return ops.clip(ops.matmul(unit, ops.transpose(unit)), -1.0, 1.0)
    ref_embeddings = as_float(ref_embeddings, "ref_embeddings", 2, "(M, D)")
    d_x, d_r = static_shape(embeddings)[1], static_shape(ref_embeddings)[1]
    if d_x is not None and d_r is not None and d_x != d_r:
        raise ValueError(
            f"`ref_embeddings` has D={d_r} but `embeddings` has D={d_x}; they must match."
        )
    # Against references (class weights as proxies, gathered replicas): the cosine head's
    # fused op, so class-level and pair-wise Circle compute identical similarities.
    return normalized_matmul(embeddings, ops.transpose(ref_embeddings))
