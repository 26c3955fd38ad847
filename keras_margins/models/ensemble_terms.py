"""The two terms ``km.models.EnsembleModel`` adds to its loss ensemble (Zabihzadeh et al.'s
WEDL and WEDL_C): the diversity of the member embeddings and the distance-matching loss of the
compressed embedding."""

from keras import ops

from keras_margins.ops.normalize import l2_normalize

#: Threshold of the diversity hinge: relu(2 − mean distance), 2 being the largest distance
#: between unit vectors (authors' code).
DIVERSITY_THRESHOLD = 2.0
#: Floor under a squared distance (or norm) before the square root (finite gradient at 0).
_SQ_FLOOR = 1e-12


def diversity_term(embeddings):
    """R_div = relu(2 − D̄) of m >= 2 member embeddings (each (N, D)), with

        D̄ = 2 / (m (m − 1)) · Σ_{k<l} (1/N) Σ_i ‖ê_k,i − ê_l,i‖₂

    on the L2-normalised rows ê: the mean distance between two members' embeddings of the
    same sample. A scalar (float32).

    Reference:
        Zabihzadeh, Alitbi & Mousavirad, arXiv 2107.01130 (2021); authors' code
        ``WEL_DML.py`` (``DistLoss``).
    """
    if len(embeddings) < 2:
        raise ValueError(f"`embeddings` must hold at least 2 member embeddings; got {len(embeddings)}.")
    units = [l2_normalize(ops.cast(e, "float32"), axis=1) for e in embeddings]
    total, pairs = 0.0, 0
    for k in range(len(units)):
        for l in range(k + 1, len(units)):
            sq = ops.sum(ops.square(units[k] - units[l]), axis=1)
            total = total + ops.mean(ops.sqrt(ops.maximum(sq, _SQ_FLOOR)))
            pairs += 1
    return ops.relu(DIVERSITY_THRESHOLD - total / pairs)


def _normalised_sq_distances(v):
    sq = ops.sum(ops.square(v), axis=1)
    d = ops.maximum(sq[:, None] + sq[None, :] - 2.0 * ops.matmul(v, ops.transpose(v)), 0.0)
    return d / ops.maximum(ops.sum(d), _SQ_FLOOR)


def distance_matching_loss(compressed, z):
    """L = N² · ‖S(g) − S(z)‖_F of a compressed embedding g (N, d) and the embedding z (N, d')
    it reproduces, with S(v) the (N, N) squared-distance matrix of the rows of v divided by
    its sum. A scalar (float32).

    Reference:
        Zabihzadeh, Alitbi & Mousavirad, arXiv 2107.01130 (2021); authors' code
        ``WEL_DML.py`` (``Last_Embedding.distance_loss``).
    """
    compressed = ops.cast(compressed, "float32")
    z = ops.cast(z, "float32")
    n = ops.cast(ops.shape(z)[0], "float32")
    diff = _normalised_sq_distances(compressed) - _normalised_sq_distances(z)
    return n * n * ops.sqrt(ops.maximum(ops.sum(ops.square(diff)), _SQ_FLOOR))
