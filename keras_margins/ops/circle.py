"""Circle loss (Sun et al., CVPR 2020), class-level and pair-wise forms.

Both forms share one per-anchor core, :func:`circle_from_similarity`: given an anchor's
similarities to a set of positives and a set of negatives (selected by boolean masks),

    α_p = [1 + m − s_p]_+,   α_n = [s_n + m]_+          (stop-gradient)
    L   = softplus( LSE_p(−γ·α_p·(s_p − (1 − m))) + LSE_n(γ·α_n·(s_n − m)) )

which equals log[1 + Σ_n e^{γ α_n (s_n − Δ_n)} · Σ_p e^{−γ α_p (s_p − Δ_p)}] (the paper's
Eq. 6) without ever forming the overflowing product. The LSEs are masked (no −inf
arithmetic); anchors without a positive or without a negative get 0 and finite gradients.
Details and the comparison with ``keras.losses.Circle``: ``docs/papers.md`` §4.
"""

from keras import ops

from keras_margins.ops._numerics import masked_logsumexp, poison_invalid_labels, target_mask
from keras_margins.ops._validation import as_float, as_labels, check_positive, check_scores, static_shape
from keras_margins.ops.pairs import pair_masks, pairwise_cosine


def check_circle_hparams(margin, gamma):
    """ValueError unless γ > 0 and the relaxation m is in [0, 1) (shared by the ops and the
    loss classes, which check at construction)."""
    check_positive(gamma, "gamma")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"`margin` (relaxation m) must be in [0, 1); got {margin}.")


def _as_mask(mask, shape, name):
    """Boolean (N, M) pair mask whose static shape matches the similarity matrix."""
    mask = ops.cast(mask, "bool")
    got = static_shape(mask)
    clash = any(g is not None and s is not None and g != s for g, s in zip(got, shape))
    if len(got) != 2 or clash:
        raise ValueError(f"`{name}` must be a boolean (N, M) mask of shape {shape}; got {got}.")
    return mask


def circle_from_similarity(sim, pos_mask, neg_mask, margin, gamma):
    """Per-row Circle loss of a similarity matrix (N, M) and whether each row was valid.

    Args:
        sim: (N, M) similarities (cosines).
        pos_mask: (N, M) boolean, each row's positives.
        neg_mask: (N, M) boolean, each row's negatives.
        margin: relaxation m in [0, 1).
        gamma: scale γ > 0.

    Returns:
        ``(loss, valid)``, both (N,): float32 losses, 0 where ``valid`` is False (a row
        without a positive or without a negative).

    Example:

    >>> import numpy as np, keras_margins as km
    >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    >>> pos, neg = km.ops.pair_masks([0, 0, 1, 1])
    >>> loss, valid = km.ops.circle_from_similarity(
    ...     km.ops.pairwise_cosine(emb), pos, neg, margin=0.4, gamma=80.0)
    >>> print(np.round(np.asarray(loss), 2), np.asarray(valid))
    [0.  6.4 6.4 0. ] [ True  True  True  True]

    Reference:
        - Sun et al., 2020. [Circle Loss: A Unified Perspective of Pair Similarity
          Optimization](https://arxiv.org/abs/2002.10857), CVPR 2020, Eq. 6.
    """
    check_circle_hparams(margin, gamma)
    sim = as_float(sim, "sim", 2, "(N, M) of similarities")  # float32 (float64 kept)
    pos_mask = _as_mask(pos_mask, static_shape(sim), "pos_mask")
    neg_mask = _as_mask(neg_mask, static_shape(sim), "neg_mask")
    alpha_p = ops.stop_gradient(ops.relu(1.0 + margin - sim))
    alpha_n = ops.stop_gradient(ops.relu(sim + margin))
    logit_p = -gamma * alpha_p * (sim - (1.0 - margin))
    logit_n = gamma * alpha_n * (sim - margin)
    lse_p, has_p = masked_logsumexp(logit_p, pos_mask, axis=1)
    lse_n, has_n = masked_logsumexp(logit_n, neg_mask, axis=1)
    valid = ops.logical_and(has_p, has_n)
    loss = ops.where(valid, ops.softplus(lse_p + lse_n), 0.0)
    return loss, valid


def circle_class_level(labels, cos, margin=0.25, gamma=256.0):
    """Per-sample class-level Circle loss on the (N, C) cosines of a cosine head.

    One positive similarity s_p = cos θ_y and the C − 1 negatives s_n = cos θ_j (j ≠ y). It
    equals :func:`circle_pairwise` of the features against the class weights used as
    reference embeddings.

    Args:
        labels: (N,) or (N, 1) integer class ids in [0, C).
        cos: (N, C) cosines, C >= 2.
        margin: relaxation m in [0, 1) (default 0.25, the paper's face-recognition setting).
        gamma: scale γ > 0 (default 256.0, idem).

    Returns:
        (N,) float32 per-sample losses.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> cos = np.array([[0.9, 0.1, -0.2], [0.3, 0.6, 0.2]])
    >>> print(np.round(np.asarray(km.ops.circle_class_level([0, 1], cos)), 2))
    [ 0. 32.]

    Reference:
        - Sun et al., 2020. [Circle Loss: A Unified Perspective of Pair Similarity
          Optimization](https://arxiv.org/abs/2002.10857), CVPR 2020, Eq. 6 (class-level labels).
    """
    check_circle_hparams(margin, gamma)
    cos, num_classes = check_scores(cos)
    labels = as_labels(labels, num_classes, cos.shape[0])
    is_target = target_mask(labels, cos.shape[1])
    loss, _ = circle_from_similarity(cos, is_target, ops.logical_not(is_target), margin, gamma)
    # An invalid label selects no positive (loss 0, through a `where` that drops the row's
    # cotangent): make its value NaN and, through the anchor cos[:, 0], its gradient too.
    return poison_invalid_labels(loss, labels, cos.shape[1], anchor=cos[:, 0])


def circle_pairwise(
    labels,
    embeddings,
    margin=0.4,
    gamma=80.0,
    pos_mask=None,
    neg_mask=None,
    return_valid=False,
    miner=None,
    ref_embeddings=None,
    ref_labels=None,
    self_offset=None,
):
    """Per-anchor pair-wise Circle loss on in-batch cosine similarity, shape (N,).

    For anchor i the positives are the other samples of its class, the negatives the samples
    of other classes; similarities are cosines of the L2-normalised embeddings. An anchor
    without a positive or a negative gets 0.

    Args:
        labels: (N,) or (N, 1) integer class ids.
        embeddings: (N, D) float tensor.
        margin: relaxation m in [0, 1) (default 0.4, the paper's fine-grained retrieval
            setting).
        gamma: scale γ > 0 (default 80.0, idem).
        pos_mask: optional (N, M) boolean mask AND-ed with the label positives (default None).
        neg_mask: optional (N, M) boolean mask AND-ed with the label negatives (default None).
        return_valid: also return the (N,) mask of anchors that have both (default False).
        miner: optional ``km.miners`` object computing the masks from the same similarity
            matrix; exclusive with ``pos_mask``/``neg_mask`` (default None).
        ref_embeddings: optional (M, D) references compared with the anchors instead of each
            other (default None; pass with ``ref_labels``).
        ref_labels: optional (M,) class ids of the references (default None).
        self_offset: row of anchor 0 among the references when they contain the anchors (a
            batch gathered across replicas), so self-pairs are not positives (default None).

    Returns:
        (N,) float32 losses, or ``(loss, valid)`` with ``return_valid=True``.

    Example:

    >>> import numpy as np, keras_margins as km
    >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
    >>> print(np.round(np.asarray(km.ops.circle_pairwise([0, 0, 1, 1], emb)), 2))
    [0.  6.4 6.4 0. ]
    >>> print(np.asarray(km.ops.circle_pairwise([0, 1], np.eye(2))))   # no positive pair
    [0. 0.]

    Reference:
        - Sun et al., 2020. [Circle Loss: A Unified Perspective of Pair Similarity
          Optimization](https://arxiv.org/abs/2002.10857), CVPR 2020, Eq. 6 (pair-wise labels).
    """
    check_circle_hparams(margin, gamma)
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("Pass both `ref_embeddings` and `ref_labels`, or neither.")
    sim = pairwise_cosine(embeddings, ref_embeddings)
    labels = as_labels(labels, batch_size=sim.shape[0])
    if ref_labels is not None:
        ref_labels = as_labels(ref_labels, batch_size=sim.shape[1], name="ref_labels")
    pos, neg = pair_masks(labels, ref_labels, self_offset=self_offset)
    if miner is not None:
        if not hasattr(miner, "mine"):
            raise ValueError(
                f"`miner` must be None or a km.miners object (e.g. km.miners.BatchHardMiner()); "
                f"got {miner!r}."
            )
        if pos_mask is not None or neg_mask is not None:
            raise ValueError("Pass either `miner` or `pos_mask`/`neg_mask`, not both.")
        pos_mask, neg_mask = miner.mine(pos, neg, ops.cast(sim, "float32"))
    if pos_mask is not None:
        pos = ops.logical_and(pos, _as_mask(pos_mask, static_shape(sim), "pos_mask"))
    if neg_mask is not None:
        neg = ops.logical_and(neg, _as_mask(neg_mask, static_shape(sim), "neg_mask"))
    loss, valid = circle_from_similarity(sim, pos, neg, margin, gamma)
    return (loss, valid) if return_valid else loss
