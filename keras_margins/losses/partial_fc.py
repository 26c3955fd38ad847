"""Partial FC: train a cosine head on a sample of its classes (An et al., ICCVW 2021).

The two rules of the sample live here once, for a head on one device and for a head whose
classes are split over devices (``partial_fc_sharded``): how many classes a step keeps
(``num_sampled_classes``) and which seed draws them (``sampling_seed``).
"""

import math
import random

import keras
from keras import ops

from keras_margins import protocols
from keras_margins.losses._base import ModelLoss
from keras_margins.losses.partial_fc_sharded import class_sharding, sharded_partial_cosines
from keras_margins.ops._validation import as_labels, static_shape
from keras_margins.ops.sampling import sample_classes

#: Spreads the user's seed over the int32 range (2³²/φ).
SEED_MULTIPLIER = 0x9E3779B1
#: Added to the seed once per shard index, so that every shard draws its own sample.
SHARD_SEED_STRIDE = 0x3C6EF372


#: A batch whose size is known only when the step runs (TensorFlow's ``fit`` on a sample
#: count that is not a multiple of the batch size, or on a ``tf.data`` pipeline batched
#: without ``drop_remainder``) is assumed to have at most this many rows.
UNKNOWN_BATCH_BOUND = 2048


def num_sampled_classes(num_classes, batch_size, sample_rate):
    """K = max(⌈sample_rate·C⌉, N), at most C: the classes a Partial FC step keeps, for a
    head (or one shard's block) of C classes and a batch of N.

    ``batch_size`` None (N known only when the step runs) stands for N =
    min(C, ``UNKNOWN_BATCH_BOUND``): K stays static.
    """
    if batch_size is None:
        batch_size = min(num_classes, UNKNOWN_BATCH_BOUND)
    return min(num_classes, max(int(math.ceil(sample_rate * num_classes - 1e-9)), batch_size))


def sampling_seed(seed, step, shard=0):
    """The int32 seed of the sample of training step ``step`` on shard ``shard``:
    step + seed·0x9E3779B1 + shard·0x3C6EF372, in wrapping int32 arithmetic (shard 0 on a
    head that is not split)."""
    return (ops.cast(step, "int32") + _wrap_int32(seed * SEED_MULTIPLIER)
            + ops.cast(shard, "int32") * SHARD_SEED_STRIDE)


def _wrap_int32(value):
    """A Python int folded into the int32 range (two's complement)."""
    return ((int(value) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000


@keras.saving.register_keras_serializable(package="keras_margins")
class PartialFC(ModelLoss):
    """Partial FC: each training step applies ``loss`` to a sample of the head's classes.

    With millions of classes the head's (N, C) cosines and the gradient of its (D, C)
    prototypes dominate a training step. Partial FC (An et al. 2021) keeps, per training step,
    every class present in the batch plus uniformly sampled other classes, remaps the labels
    to the sampled columns, computes the cosines of those columns only (the head's fused
    cosine op, ``km.ops.cosine_similarity``) and applies the wrapped ``loss`` to them. The
    other classes' prototypes get no gradient in that step: with plain SGD they do not change;
    optimizers with momentum or moments still move them by their slots (the paper's
    implementation kept their momentum frozen, ``docs/papers.md`` §7.3).

    The sample of a step has K = max(⌈sample_rate·C⌉, N) classes (at most C), N the batch
    size: a shape fixed by the batch, so it compiles under XLA (the paper keeps
    ⌊sample_rate·C⌋, or only the batch's classes when they are more). Any number of samples
    trains. JAX compiles a step per batch size. TensorFlow compiles one step for an unknown
    batch size when the sample count is not a multiple of the batch size (or a ``tf.data``
    pipeline is batched without ``drop_remainder``); its K takes N = min(C,
    ``UNKNOWN_BATCH_BOUND``) (2048), so batches up to that size train as above, and a larger
    batch with more classes than K makes the loss NaN. Classes are drawn
    with ``km.ops.sample_classes`` seeded by ``sampling_seed(seed, step)`` = step +
    seed·0x9E3779B1 (int32), ``step`` the counter at ``step_variable`` that the model saves:
    a new sample every step, and with a ``seed`` the same samples after a reload.

    On a head whose classes are split over devices (``km.distribution.class_parallel``, JAX)
    every device samples its own block of B = C / n classes: max(⌈sample_rate·B⌉, N) of
    them, every class of the batch it holds among them, with the seed
    ``sampling_seed(seed, step, shard)`` (+ shard·0x3C6EF372: a different sample on every
    device); the head's prototypes never leave their devices.

    ``evaluate`` and ``predict`` use the full head (all C classes). ``sample_rate=1.0`` gives
    exactly the wrapped loss. Training steps skip the full (N, C) head output unless compiled
    metrics need it: for speed at large C compile no training metrics and evaluate on
    validation data instead.

    Use it in a ``km.models.MarginModel(backbone, head)`` whose head is a cosine head
    (``score_kind = "cosine"`` with class vectors: ``km.layers.LargestMarginHead``,
    ``PEDCCHead`` or a user's head declaring itself, ``docs/extend.md``). A head that gathers
    class rows itself (``gather_class_vectors``, e.g. ``LargestMarginHead``'s default
    class-major storage) makes a sampled step update only those rows; with a (D, C) storage
    (``kernel_layout="feature_major"``) the sparse update becomes a dense column scatter and
    the step saves much less (``benchmarks/scale_classes.py --feature-major``, figures in
    ``benchmarks/RESULTS.md``).

    On a head with K sub-centres per class (``LargestMarginHead(C, sub_centers=K)``,
    sub-center ArcFace) a step gathers all K sub-centres of each sampled class and takes
    their max (the head's ``class_cosines``); a class-split head with sub-centres is sampled
    as a whole (not shard by shard).

    Under XLA, a label outside [0, C) makes the loss NaN (it is never mapped to a sampled
    column); in eager mode it raises a ``ValueError``.

    Args:
        loss: the loss applied to the sampled cosines: any loss that declares
            ``score_kind = "cosine"`` and takes the scores (``km.losses.MarginSoftmax`` and
            its presets ``NormFace``, ``SphereFace``, ``CosFace``, ``ArcFace``,
            ``SubCenterArcFace``; ``LMSoftmax``, ``CircleLoss``, ``ProxyNCALoss``), or a
            model-aware loss declaring it (``CurricularFace``, ``MagFace``, ``AdaFace``,
            ``ElasticFace``, ``UniFace``): PartialFC builds its state on the model, shows its
            logs, and hands it the sampled (N, K) cosines as ``outputs["scores"]`` with the
            remapped labels and the step's embedding (whose norms MagFace and AdaFace read).
        sample_rate: fraction of the classes kept per step, in (0, 1] (default 0.1; the
            paper's ablation shows 0.1 matching the full head on face recognition).
        seed: int seed of the class sampler (default None: a random seed drawn once, at
            ``effective_seed``).
        name: name of the loss (default ``"partial_fc"``).

    Returns:
        A ``km.losses.ModelLoss``: the training loss is ``loss`` on the sampled cosines, the
        evaluation loss ``loss`` on the full head's cosines.

    Example:
        >>> head = km.layers.LargestMarginHead(100_000)
        >>> model = km.models.MarginModel(backbone, head)
        >>> model.compile(keras.optimizers.Adam(1e-3),
        ...               loss=km.losses.PartialFC(km.losses.ArcFace(), sample_rate=0.1),
        ...               jit_compile=True)
        >>> model.fit(x, y, batch_size=256); model.predict(x).shape    # (N, 100000)

    Reference:
        An, Zhu, Feng, Yang, Xu, Wang, Zhang, Fu: "Partial FC: Training 10 Million Identities
        on a Single Machine", ICCV Workshops 2021 (positive classes plus uniformly sampled
        negatives, Sec. 3.2; each GPU samples from its own class centres, Sec. 3).
    """

    needs = "model"
    #: MarginModel may skip the full (N, C) head output in training steps.
    needs_training_scores = False

    def __init__(self, loss, sample_rate=0.1, seed=None, name="partial_fc", **kwargs):
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        if not isinstance(loss, keras.losses.Loss) or not protocols.loss_reads_cosines(loss):
            raise ValueError(
                "`loss` must be a loss on the cosines of a cosine head (score_kind='cosine': "
                "km.losses.MarginSoftmax, NormFace, SphereFace, CosFace, ArcFace, "
                "SubCenterArcFace, LMSoftmax, CircleLoss, ProxyNCALoss, or the model-aware "
                f"CurricularFace, MagFace, AdaFace, ElasticFace, UniFace...); got {loss!r}."
            )
        if (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float))
                or not 0.0 < sample_rate <= 1.0):
            raise ValueError(f"`sample_rate` must be a number in (0, 1]; got {sample_rate!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be None or an integer; got {seed!r}.")
        kwargs.setdefault("dtype", "float32")
        super().__init__(name=name, **kwargs)
        self.loss = loss
        self.sample_rate = float(sample_rate)
        self.seed = seed
        #: The seed the sampler uses: ``seed``, or the one drawn when ``seed`` is None.
        self.effective_seed = seed if seed is not None else random.randrange(2**31)
        #: The step counter (int32, a model weight named ``partial_fc_step``), made by
        #: ``build_state``; None before.
        self.step_variable = None

    def wrapped_losses(self):
        """The loss applied to the sampled cosines."""
        return [self.loss]

    def logs(self, model):
        """The wrapped model-aware loss's logs (e.g. CurricularFace's ``curricular_t``)."""
        return self.loss.logs(model) if isinstance(self.loss, ModelLoss) else {}

    # ---------------------------------------------------------------- state (owned by model)
    def build_state(self, model):
        """Checks the model's head and creates the step counter that seeds the sampler."""
        protocols.require_cosine_head(getattr(model, "head", None), user="PartialFC")
        self.step_variable = model.add_weight(
            name="partial_fc_step",
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        if isinstance(self.loss, ModelLoss):  # its state (t, norm statistics, bias...)
            self.loss.build_state(model)

    def num_sampled(self, num_classes, batch_size):
        """K = max(⌈sample_rate·C⌉, N) (at most C) for a head of C classes and a batch of N
        (``num_sampled_classes``)."""
        return num_sampled_classes(num_classes, batch_size, self.sample_rate)

    def sample(self, labels, num_classes, step=0, shard=0):
        """``(class_ids, sampled_labels)`` of training step ``step``: the K =
        ``num_sampled(C, N)`` classes it trains (ids in ``0 … C − 1``) and each label's
        column among them (``km.ops.sample_classes`` with ``sampling_seed(seed, step,
        shard)``; −1 for a label outside ``0 … C − 1``). A shard of a class-split head calls
        it with its block's labels (shifted to the block), its size B as C and its index."""
        labels = as_labels(labels)
        num_sampled = self.num_sampled(num_classes, static_shape(labels)[0])
        seed = sampling_seed(self.effective_seed, step, shard)
        return sample_classes(labels, num_classes, num_sampled, seed)

    def block_sampler(self, step=0):
        """``sample_block(block_labels, block_size, shard) -> (class_ids, sampled_labels)``
        for a class-split head: ``sample`` on the block's labels (already shifted to the
        block), its size and the shard index."""

        def sample_block(block_labels, block_size, shard):
            return self.sample(block_labels, block_size, step, shard)

        return sample_block

    # ----------------------------------------------------------------------------- the loss
    def compute_model_loss(self, y, outputs, model, sample_weight=None, training=True):
        head = protocols.require_cosine_head(getattr(model, "head", None), user="PartialFC")
        embedding = outputs["embedding"]
        num_classes = head.num_classes
        batch = static_shape(embedding)[0]
        labels = as_labels(y, num_classes, batch_size=batch)
        valid = ops.logical_and(labels >= 0, labels < num_classes)
        invalid = ops.logical_not(ops.all(valid))

        def full_head():
            scores = outputs.get("scores")
            if scores is None:
                scores = head(embedding)
            return self._wrapped(ops.where(valid, labels, 0), scores, embedding, model,
                                 sample_weight, training)

        if not training:
            return ops.where(invalid, float("nan"), full_head())
        if self.num_sampled(num_classes, batch) >= num_classes:
            value = full_head()
        else:
            step = 0 if self.step_variable is None else ops.convert_to_tensor(self.step_variable)
            sharding = class_sharding(head)
            if sharding is not None:  # each device samples its own block of classes
                cos, sampled = sharded_partial_cosines(
                    sharding, embedding, labels, self.block_sampler(step))
            else:
                class_ids, sampled = self.sample(labels, num_classes, step)
                # (N, K): a row gather of the sampled classes' vectors (with sub-centres,
                # all K of each sampled class, max-pooled by the head)
                cos = protocols.sampled_class_cosines(head, embedding, class_ids)
            value = self._wrapped(ops.maximum(sampled, 0), cos, embedding, model,
                                  sample_weight, training)
            # A class of the batch without a column (an unknown batch size above K) must
            # not pass silently either.
            invalid = ops.logical_or(invalid, ops.any(ops.logical_and(valid, sampled < 0)))
        if self.step_variable is not None:
            self.step_variable.assign_add(1)
        # A label outside [0, C) must never pass for a valid column: the loss becomes NaN.
        return ops.where(invalid, float("nan"), value)

    def _wrapped(self, labels, cosines, embedding, model, sample_weight, training):
        outputs = {"scores": cosines, "embedding": embedding}
        return protocols.loss_value(self.loss, labels, outputs, model, sample_weight,
                                    training=training)

    def get_config(self):
        config = keras.losses.Loss.get_config(self)
        config.update(
            {
                "loss": keras.saving.serialize_keras_object(self.loss),
                "sample_rate": self.sample_rate,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
