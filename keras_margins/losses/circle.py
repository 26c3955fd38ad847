"""Circle loss classes (Sun et al., CVPR 2020)."""

import keras

from keras_margins._compat import set_keras_mask
from keras_margins.losses._base import MarginLoss
from keras_margins.miners._base import Miner
from keras_margins.ops._distribute import gather_across_replicas
from keras_margins.ops._validation import as_labels
from keras_margins.ops.circle import check_circle_hparams, circle_class_level, circle_pairwise


@keras.saving.register_keras_serializable(package="keras_margins")
class CircleLoss(MarginLoss):
    """Class-level Circle loss on the (N, C) cosines of a cosine head (Eq. 6 of Sun et al.
    2020 with one positive s_p = cos θ_y and the C − 1 negatives cos θ_j).

    Defaults m = 0.25, γ = 256 (the paper's face-recognition setting); numerically safe at
    γ = 256 (softplus of two log-sum-exps, never the product of exponentials).

    This is not pytorch-metric-learning's ``CircleLoss``: that one is pair-wise on (N, D)
    embeddings, which is ``km.losses.PairCircleLoss`` here. Given values outside [−1, 1]
    (embeddings instead of cosines) in eager mode, this loss raises a ``ValueError``.

    Args:
        margin: relaxation m in [0, 1) (default 0.25, the paper's face-recognition setting).
        gamma: scale γ > 0 (default 256.0, idem).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.CircleLoss(margin=0.25, gamma=256.0))
        >>> model.fit(x, y)

    Reference:
        - Sun et al., 2020. [Circle Loss: A Unified Perspective of Pair Similarity
          Optimization](https://arxiv.org/abs/2002.10857), CVPR 2020, Eq. 6 (class-level labels).
    """

    score_kind = "cosine"

    def __init__(self, margin=0.25, gamma=256.0, **kwargs):
        check_circle_hparams(margin, gamma)
        kwargs.setdefault("name", "circle_loss")
        self.margin = float(margin)
        self.gamma = float(gamma)
        super().__init__(**kwargs)

    def per_sample(self, labels, cos):
        return circle_class_level(labels, cos, self.margin, self.gamma)


@keras.saving.register_keras_serializable(package="keras_margins")
class PairCircleLoss(MarginLoss):
    """Pair-wise Circle loss on embeddings (N, D) (Sun et al. 2020, Eq. 6).

    In-batch cosine similarities; positives = same label except self, negatives = other
    labels, optionally restricted by a ``km.miners`` miner. The batch loss is the mean over
    the anchors that have at least one positive and one negative (0 when none has), as in
    pytorch-metric-learning. This is the loss pytorch-metric-learning calls ``CircleLoss``
    (same defaults); ``km.losses.CircleLoss`` is the class-level form. Defaults m = 0.4,
    γ = 80 (the paper's fine-grained retrieval setting). ``needs = "embedding"``: use it on a
    headless ``km.models.MarginModel`` or any model whose output is the embedding. Train with
    class-balanced batches
    (``km.data.pk_batches``) so that anchors have positives. Labels are only compared for
    equality, so any integer is a valid class id here (−1, or ids far above the number of
    classes); unlike the class-level losses, nothing is out of range.

    It gives the same value as ``keras.losses.Circle`` on L2-normalised embeddings when every
    anchor has a positive and a negative; the differences (stop-gradient weights α, built-in
    normalisation, which anchors are averaged, empty sets) are explained in
    ``docs/papers.md`` §4.3.

    ``cross_replica=True`` (for ``tf.distribute`` strategies, e.g. ``MirroredStrategy``):
    each replica normally sees only its slice of the batch, so pairs are mined within a
    replica. With this option the embeddings and labels of all replicas are all-gathered
    and each local anchor is compared with the whole global batch (its positives and
    negatives on every replica), the usual large-batch metric-learning practice. Gathered
    rows of other replicas are constants (stop-gradient); the local rows keep their
    gradients. Each replica averages over its valid anchors and Keras averages the replicas,
    so with equal valid-anchor counts the loss equals the single-device loss on the global
    batch. A no-op outside a multi-replica context and on other backends.

    Args:
        margin: relaxation m in [0, 1) (default 0.4, the paper's fine-grained retrieval
            setting).
        gamma: scale γ > 0 (default 80.0, idem).
        miner: optional ``km.miners`` object restricting the pairs (default None: all pairs).
        cross_replica: mine pairs over the global batch under ``tf.distribute`` (default False).
        **kwargs: ``keras.losses.Loss`` arguments (``name``, ``reduction``, ``dtype``).

    Example:
        >>> model = keras.Sequential([backbone])              # outputs embeddings (N, D)
        >>> model.compile("adam", loss=km.losses.PairCircleLoss(miner=km.miners.MultiSimilarityMiner()))
        >>> model.fit(km.data.pk_batches((x, y), p=8, k=4, seed=0), epochs=5)

    Reference:
        - Sun et al., 2020. [Circle Loss: A Unified Perspective of Pair Similarity
          Optimization](https://arxiv.org/abs/2002.10857), CVPR 2020, Eq. 6 (pair-wise labels).
    """

    needs = "embedding"

    def __init__(self, margin=0.4, gamma=80.0, miner=None, cross_replica=False, **kwargs):
        check_circle_hparams(margin, gamma)
        if isinstance(miner, dict):
            miner = keras.saving.deserialize_keras_object(miner)
        if miner is not None and not isinstance(miner, Miner):
            raise ValueError(
                f"`miner` must be None or a km.miners object (e.g. km.miners.BatchHardMiner()); "
                f"got {miner!r}."
            )
        if not isinstance(cross_replica, bool):
            raise ValueError(f"`cross_replica` must be True or False; got {cross_replica!r}.")
        kwargs.setdefault("name", "pair_circle_loss")
        self.margin = float(margin)
        self.gamma = float(gamma)
        self.miner = miner
        self.cross_replica = cross_replica
        super().__init__(**kwargs)

    def call(self, y_true, y_pred):
        references = {}
        if self.cross_replica:
            gathered = gather_across_replicas(y_pred, as_labels(y_true))
            if gathered is not None:
                references = dict(zip(("ref_embeddings", "ref_labels", "self_offset"), gathered))
        loss, valid = circle_pairwise(
            y_true, y_pred, self.margin, self.gamma, miner=self.miner, return_valid=True,
            **references,
        )
        set_keras_mask(loss, valid)  # Keras' reduction then averages over valid anchors.
        return loss

    def get_config(self):
        config = super().get_config()
        config["miner"] = (
            None if self.miner is None else keras.saving.serialize_keras_object(self.miner)
        )
        return config
