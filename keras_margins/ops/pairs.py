"""In-batch pair masks and similarities (the building blocks of pair losses and miners).

All masks are static-shape boolean (N, M) tensors built by comparisons (no
``boolean_mask``, no dynamic shapes), so they compile under XLA.
"""

from keras import ops

from keras_margins.ops._common import as_float, as_labels, l2_normalize, static_shape
from keras_margins.ops.cosine import normalized_matmul


def pair_masks(labels, ref_labels=None, remove_diagonal=True, self_offset=None):
    """Positive / negative pair masks, each (N, M) boolean.

    pos[i, j] = labels[i] == ref_labels[j] (excluding i == j when ``ref_labels`` is None and
    ``remove_diagonal``), neg[i, j] = labels[i] != ref_labels[j] (SPEC §2.1, pair-wise form).
    When the references contain the anchors themselves at rows ``self_offset + i`` (a global
    batch gathered across replicas), pass ``self_offset`` (int or scalar tensor) to exclude
    those self-pairs from the positives.

    Example:
        >>> pos, neg = km.ops.pair_masks([0, 0, 1])
        >>> pos.shape, neg.shape   # (3, 3), (3, 3); pos[0, 1] and neg[0, 2] are True
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

    Zero vectors give similarity 0 (never NaN). ``ref_embeddings`` defaults to ``embeddings``.

    Example:
        >>> sim = km.ops.pairwise_cosine(np.random.rand(8, 16))
        >>> sim.shape   # (8, 8), ones on the diagonal
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
