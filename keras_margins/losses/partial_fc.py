"""Partial FC: train a cosine head on a sample of its classes (An et al., ICCVW 2021)."""

import math
import random

import keras
from keras import ops

from keras_margins.losses._base import ModelLoss
from keras_margins.losses.circle import CircleLoss
from keras_margins.losses.largest_margin_softmax import LargestMarginSoftmax
from keras_margins.losses.margin_softmax import MarginSoftmax
from keras_margins.ops._common import as_labels, static_shape
from keras_margins.ops.cosine import cosine_similarity
from keras_margins.ops.sampling import sample_classes

#: Losses on the (N, C) cosines of a cosine head that Partial FC can wrap.
COSINE_LOSSES = (MarginSoftmax, LargestMarginSoftmax, CircleLoss)


def num_sampled_classes(num_classes, batch_size, sample_rate):
    """K = max(ceil(sample_rate·C), N), at most C: the columns a Partial FC step keeps."""
    return min(num_classes, max(int(math.ceil(sample_rate * num_classes - 1e-9)), batch_size))


def _cosine_head(model):
    """The model's cosine head, or a ValueError naming ``model.head``."""
    # Local imports: the layers package imports the losses' ops, not the other way round.
    from keras_margins.layers.largest_margin_head import LargestMarginHead
    from keras_margins.layers.pedcc_head import PEDCCHead
    from keras_margins.layers.virtual_softmax_head import VirtualSoftmaxHead

    head = getattr(model, "head", None)
    if not isinstance(head, (LargestMarginHead, PEDCCHead)) or isinstance(head, VirtualSoftmaxHead):
        got = "no head" if head is None else type(head).__name__
        raise ValueError(
            "`model.head`: PartialFC needs a km.models.MarginModel(backbone, head) whose head is "
            f"a cosine head (km.layers.LargestMarginHead or PEDCCHead); got {got}."
        )
    return head


def _centers_of(head, class_ids):
    """(K, D) prototypes of ``class_ids``: rows of a class-major head, else columns."""
    if hasattr(head, "gather_centers"):
        return head.gather_centers(class_ids)
    return ops.transpose(ops.take(head.kernel, class_ids, axis=1))


@keras.saving.register_keras_serializable(package="keras_margins")
class PartialFC(ModelLoss):
    """Partial FC: each training step applies ``loss`` to a sample of the head's classes.

    With millions of classes the head's (N, C) cosines and the gradient of its (D, C)
    prototypes dominate a training step. Partial FC (An et al. 2021) keeps, per training step,
    every class present in the batch plus uniformly sampled other classes, K =
    max(⌈sample_rate·C⌉, N) columns in all (a static shape: it compiles under XLA), remaps the
    labels to the sampled columns, computes the cosines of those K columns only (the head's
    fused cosine op, ``km.ops.cosine_similarity``) and applies the wrapped ``loss`` to them.
    The other classes' prototypes get no gradient in that step: with plain SGD they do not
    change; optimizers with momentum or moments still move them by their slots. Classes are
    drawn with ``km.ops.sample_classes`` (a new sample every step from ``seed`` and a step
    counter that the model saves).

    ``evaluate`` and ``predict`` use the full head (all C classes). ``sample_rate=1.0`` gives
    exactly the wrapped loss. Training steps skip the full (N, C) head output unless compiled
    metrics need it: for speed at large C compile no training metrics and evaluate on
    validation data instead.

    Use it in a ``km.models.MarginModel(backbone, head)`` whose head is a
    ``km.layers.LargestMarginHead`` (or ``PEDCCHead``). Store the head's prototypes class-major
    (``LargestMarginHead(C, kernel_layout="class_major")``): a sampled step then updates
    contiguous rows; with the default (D, C) storage the sparse update becomes a dense column
    scatter and the step saves little. Measured (``benchmarks/scale_classes.py``, class-major,
    SGD with momentum 0.9, XLA, N = 256, D = 128, rate 0.1): 0.15× the full head's step at
    C = 100k and 0.12× at C = 1M, 1.01× the floor of the sampled matmuls plus one dense
    momentum pass over the centres.

    Under XLA, a label outside [0, C) makes the loss NaN (it is never mapped to a sampled
    column); in eager mode it raises a ``ValueError``.

    Args:
        loss: the cosine-head loss to apply on the sampled columns: ``km.losses.MarginSoftmax``
            or a preset (``NormFace``, ``SphereFace``, ``CosFace``, ``ArcFace``),
            ``LMSoftmax`` or ``CircleLoss``.
        sample_rate: fraction of the classes kept per step, in (0, 1] (default 0.1; the
            paper's ablation shows 0.1 matching the full head on face recognition).
        seed: int seed of the class sampler (default None: a random seed drawn once).
        name: name of the loss (default ``"partial_fc"``).

    Returns:
        A ``km.losses.ModelLoss``: the training loss is ``loss`` on the sampled cosines, the
        evaluation loss ``loss`` on the full head's cosines.

    Example:
        >>> head = km.layers.LargestMarginHead(100_000, kernel_layout="class_major")
        >>> model = km.models.MarginModel(backbone, head)
        >>> model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
        ...               loss=km.losses.PartialFC(km.losses.ArcFace(), sample_rate=0.1),
        ...               jit_compile=True)
        >>> model.fit(x, y, batch_size=256); model.predict(x).shape    # (N, 100000)

    Reference:
        An, Zhu, Feng, Yang, Xu, Wang, Zhang, Fu: "Partial FC: Training 10 Million Identities
        on a Single Machine", ICCV Workshops 2021 (positive classes plus uniformly sampled
        negatives, Sec. 3.2).
    """

    needs = "model"
    #: MarginModel may skip the full (N, C) head output in training steps.
    needs_training_scores = False

    def __init__(self, loss, sample_rate=0.1, seed=None, name="partial_fc", **kwargs):
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        if not isinstance(loss, COSINE_LOSSES):
            raise ValueError(
                "`loss` must be a loss on the cosines of a cosine head (km.losses.MarginSoftmax, "
                "NormFace, SphereFace, CosFace, ArcFace, LMSoftmax or CircleLoss); "
                f"got {loss!r}."
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
        self._seed_value = seed if seed is not None else random.randrange(2**31)
        self._step = None

    # ---------------------------------------------------------------- state (owned by model)
    def build_state(self, model):
        """Checks the model's head and creates the step counter that seeds the sampler."""
        _cosine_head(model)
        self._step = model.add_weight(
            name="partial_fc_step",
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    def num_sampled(self, num_classes, batch_size):
        """K = max(⌈sample_rate·C⌉, N) (at most C) for a head of C classes and a batch of N."""
        return num_sampled_classes(num_classes, batch_size, self.sample_rate)

    def sample(self, labels, num_classes, step=0, class_offset=0):
        """``(class_ids, sampled_labels)`` of the training step number ``step``: the K =
        ``num_sampled(C, N)`` classes it trains and each label's column among them
        (``km.ops.sample_classes`` seeded by ``seed`` and ``step``; −1 for a label outside
        ``class_offset … class_offset + C − 1``). For a class-sharded head, call it per shard
        with the shard's C and offset (then K is computed from the shard's C)."""
        labels = as_labels(labels)
        num_sampled = self.num_sampled(num_classes, static_shape(labels)[0])
        seed = ops.cast(step, "int32") + _wrap_int32(self._seed_value * 0x9E3779B1)
        return sample_classes(labels, num_classes, num_sampled, seed, class_offset=class_offset)

    def block_sampler(self, step=0):
        """``sample_block(block_labels, block_size, shard)`` for a class-sharded head
        (``km.distribution.sharded_partial_cosines``): each shard keeps
        ``num_sampled(B, N)`` of its B classes, with this loss's seed, the step and the shard
        index (a different sample on every shard and every step)."""
        from keras_margins.distribution import SHARD_SEED_STRIDE

        def sample_block(block_labels, block_size, shard):
            block_labels = as_labels(block_labels)
            keep = self.num_sampled(block_size, static_shape(block_labels)[0])
            seed = (ops.cast(step, "int32") + _wrap_int32(self._seed_value * 0x9E3779B1)
                    + ops.cast(shard, "int32") * SHARD_SEED_STRIDE)
            return sample_classes(block_labels, block_size, keep, seed)

        return sample_block

    # ----------------------------------------------------------------------------- the loss
    def compute_model_loss(self, y, outputs, model, sample_weight=None, training=True):
        head = _cosine_head(model)
        embedding = outputs["embedding"]
        num_classes = head.num_classes
        batch = static_shape(embedding)[0]
        labels = as_labels(y, num_classes, batch_size=batch)
        valid = ops.logical_and(labels >= 0, labels < num_classes)
        invalid = ops.logical_not(ops.all(valid))
        if batch is None:
            raise ValueError("PartialFC needs a static batch size (the sampled K depends on N).")
        num_sampled = self.num_sampled(num_classes, batch)
        if not training or num_sampled >= num_classes:
            scores = outputs.get("scores")
            if scores is None:
                scores = head(embedding)
            value = self.loss(ops.where(valid, labels, 0), scores, sample_weight)
        else:
            step = ops.convert_to_tensor(self._step) if self._step is not None else 0
            # A class-sharded head (km.distribution.class_parallel, JAX) samples per shard.
            from keras_margins.distribution import sharded_partial_cosines

            sharded = sharded_partial_cosines(head, embedding, labels, self.block_sampler(step))
            if sharded is not None:
                cos, sampled = sharded
            else:
                class_ids, sampled = self.sample(labels, num_classes, step)
                centers = _centers_of(head, class_ids)
                cos = cosine_similarity(embedding, ops.transpose(centers))
            value = self.loss(ops.maximum(sampled, 0), cos, sample_weight)
            if self._step is not None:
                self._step.assign_add(1)
        # A label outside [0, C) must never pass for a valid column: the loss becomes NaN.
        return ops.where(invalid, float("nan"), value)

    def get_config(self):
        config = super().get_config()
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


def _wrap_int32(value):
    """A Python int folded into the int32 range (two's complement)."""
    return ((int(value) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000
