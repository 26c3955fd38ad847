"""The two member losses of Zabihzadeh et al.'s ensemble in the form of the authors' code, where
it differs from the library's general losses (``paper_members(num_classes, authors=True)``):
cross-entropy with their label smoothing, and their semi-hard triplet hinge."""

import keras
from keras import ops

from keras_margins.losses._base import MarginLoss
from keras_margins.ops._numerics import poison_invalid_labels, target_mask
from keras_margins.ops._validation import (
    as_float,
    as_labels,
    check_non_negative,
    check_positive,
    check_scores,
    static_shape,
)
from keras_margins.ops.normalize import l2_normalize
from keras_margins.ops.pairs import pair_masks

#: Floor under a squared distance before the square root (finite gradient at d = 0).
_SQ_FLOOR = 1e-12


@keras.saving.register_keras_serializable(package="keras_margins")
class SmoothedCrossEntropy(MarginLoss):
    """Softmax cross-entropy of integer labels against smoothed targets, on logits (N, C):

        L_i = −Σ_j q_j log softmax(z_i)_j,   q_y = 1 − ε,   q_j = ε / (C − 1) for j ≠ y,

    the smoothing of Szegedy et al. (2016, §7) with the off-target mass spread over the C − 1
    other classes (as in the ensemble-of-losses authors' code, which uses ε = 0.15 on its
    classifier). Keras' ``CategoricalCrossentropy(label_smoothing=ε')`` puts ε'/C on every
    class instead; the two agree for ε' = ε·C/(C − 1), but Keras' sparse cross-entropy has
    no smoothing. Labels must lie in [0, C): eager calls raise ``ValueError``; under XLA an
    invalid label makes its row (and so the loss) NaN.

    Args:
        label_smoothing: ε in [0, 1) (default 0.15, the ensemble authors' value).

    Returns:
        Called as ``loss(labels, logits)``: a scalar.

    Example:
        >>> import numpy as np
        >>> from keras_margins.models.ensemble_member_losses import SmoothedCrossEntropy
        >>> loss = SmoothedCrossEntropy(label_smoothing=0.15)
        >>> logits = np.array([[2.0, 0.0, 0.0, 0.0]], "float32")
        >>> print(round(float(loss(np.array([0]), logits)), 4))  # 0.85·0.3408 + 0.15·2.3408
        0.6408

    Reference:
        Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception Architecture for
        Computer Vision", CVPR 2016 (§7, label-smoothing regularization); Zabihzadeh, Alitbi
        & Mousavirad, arXiv 2107.01130 (2021), authors' code ``Losses.py``
        (``binarize_and_smooth_labels``) and ``WEL_DML.py``.
    """

    def __init__(self, label_smoothing=0.15, **kwargs):
        check_non_negative(label_smoothing, "label_smoothing")
        if not label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1); got {label_smoothing}.")
        kwargs.setdefault("name", "smoothed_cross_entropy")
        self.label_smoothing = float(label_smoothing)
        super().__init__(**kwargs)

    def per_sample(self, labels, logits):
        logits, num_classes = check_scores(logits, "logits")
        labels = as_labels(labels, num_classes, static_shape(logits)[0])
        num_classes = num_classes or ops.shape(logits)[1]
        log_probs = logits - ops.logsumexp(logits, axis=1, keepdims=True)
        eps = self.label_smoothing
        off = eps / (ops.cast(num_classes, logits.dtype) - 1.0)
        weights = ops.where(target_mask(labels, num_classes), 1.0 - eps, off)
        loss = -ops.sum(ops.cast(weights, logits.dtype) * log_probs, axis=1)
        return poison_invalid_labels(loss, labels, num_classes)


@keras.saving.register_keras_serializable(package="keras_margins")
class SemiHardTripletHingeLoss(MarginLoss):
    """Triplet hinge over the semi-hard triplets of a batch, on embeddings (N, D):

        T = {(a, p, n): y_p = y_a, p ≠ a, y_n ≠ y_a, 0 < d_an − d_ap ≤ window},
        L = (1/|T|) Σ_T max(margin − (d_an − d_ap), 0)     (0 when T is empty),

    with d the Euclidean distance between L2-normalised embeddings. This is the triplet
    member of the ensemble-of-losses authors' code (margin 1, a triplet miner keeping
    0 < d_an − d_ap ≤ 0.1), on unit-length embeddings as there. It differs from
    ``km.losses.TripletMarginLoss(1.0, miner=km.miners.SemiHardMiner())`` (FaceNet's rule
    as TensorFlow Addons implements it: one negative per positive pair, the closest farther
    than the positive, on squared distances): here every triplet inside the window counts,
    and none outside it. The selection carries no gradient; the distances do.

    Keras averages per-sample values: the loss returns per-anchor values scaled so that their
    mean is the triplet mean above (``reduction="sum"`` gives N times it). Labels are
    compared for equality only (any integer is a valid label). Train on class-balanced
    batches (``km.data.pk_batches``) so that anchors have positives.

    Args:
        margin: the hinge's margin (default 1.0, the authors'). Must be >= 0.
        window: the semi-hard window, triplets with 0 < d_an − d_ap <= window (default 0.1,
            the authors' miner margin). Must be > 0.

    Returns:
        Called as ``loss(labels, embeddings)``: a scalar.

    Example:
        >>> import numpy as np
        >>> from keras_margins.models.ensemble_member_losses import SemiHardTripletHingeLoss
        >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.75, 0.66]], "float32")
        >>> loss = SemiHardTripletHingeLoss(margin=1.0, window=0.1)
        >>> # one triplet in the window: (a, p, n) = (0, 1, 2), d_an − d_ap = 0.7061 − 0.6325
        >>> print(round(float(loss(np.array([0, 0, 1]), emb)), 4))
        0.9264

    Reference:
        Schroff, Kalenichenko & Philbin, "FaceNet", CVPR 2015 (Eq. 1, semi-hard triplets);
        Zabihzadeh, Alitbi & Mousavirad, arXiv 2107.01130 (2021), authors' code
        ``Losses.py`` (``Trip_hinge_loss``) and ``Miner.py`` (``TripletMiner``).
    """

    needs = "embedding"

    def __init__(self, margin=1.0, window=0.1, **kwargs):
        check_non_negative(margin, "margin")
        check_positive(window, "window")
        kwargs.setdefault("name", "semi_hard_triplet_hinge_loss")
        self.margin = float(margin)
        self.window = float(window)
        super().__init__(**kwargs)

    def per_sample(self, labels, embeddings):
        embeddings = as_float(embeddings, "embeddings", 2, "(N, D)")
        labels = as_labels(labels, batch_size=static_shape(embeddings)[0])
        unit = l2_normalize(embeddings, axis=1)
        cos = ops.clip(ops.matmul(unit, ops.transpose(unit)), -1.0, 1.0)
        distances = ops.sqrt(ops.maximum(2.0 - 2.0 * cos, _SQ_FLOOR))
        pos, neg = pair_masks(labels)
        gap = ops.expand_dims(distances, 1) - ops.expand_dims(distances, 2)  # [a, p, n]: d_an − d_ap
        in_window = ops.logical_and(gap > 0.0, gap <= self.window)
        selected = ops.logical_and(
            ops.logical_and(ops.expand_dims(pos, 2), ops.expand_dims(neg, 1)), in_window
        )
        hinge = ops.where(selected, ops.relu(self.margin - gap), 0.0)
        count = ops.sum(ops.cast(selected, hinge.dtype))
        n = ops.cast(ops.shape(hinge)[0], hinge.dtype)
        return ops.sum(hinge, axis=(1, 2)) * n / ops.maximum(count, 1.0)
