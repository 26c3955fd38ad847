"""Cosine classification head with learnable class centres (Zhou et al. 2022)."""

import keras
from keras import ops

from keras_margins import ops as kmops
from keras_margins.layers._base import KERNEL_LAYOUTS, PrototypeHead


@keras.saving.register_keras_serializable(package="keras_margins")
class LargestMarginHead(PrototypeHead):
    """Cosine head: (N, D) features -> (N, C) cosines cos θ_ij between ``x_i/||x_i||`` and
    ``w_j/||w_j||``. Pair it with any cosine loss (``LMSoftmax``, ``ArcFace``,
    ``CosFace``, ``SphereFace``, ``NormFace``, ``MarginSoftmax``, ``CircleLoss``): margins are
    applied in the loss, on the target column only, so ``predict`` returns plain cosines whose
    argmax is the class.

    The prototypes are read at ``.kernel`` with shape (D, C) (one column per class) and at
    ``.centers`` with shape (C, D) (one row per class), whatever the storage. ``kernel_layout``
    chooses how the trainable variable is stored:

    * ``"class_major"`` (default): a (C, D) variable, ``.centers`` is that variable and
      ``.kernel`` its (D, C) transpose (a tensor: assign through ``.centers``). Every class is
      a contiguous row, so a step that touches a few classes (``km.losses.PartialFC``)
      updates rows instead of scattering into a dense (D, C) gradient
      (``benchmarks/scale_classes.py``; figures in ``benchmarks/RESULTS.md``);
    * ``"feature_major"``: a (D, C) variable, ``.kernel`` is that variable
      (``head.kernel.assign(...)`` works) and ``.centers`` its transpose.

    Both layouts give the same outputs, and ``kernel_regularizer`` / ``kernel_constraint``
    always see the (D, C) view. Files saved with either layout load as saved; files saved
    before this option load as ``"feature_major"``.

    Args:
        num_classes: C >= 2.
        kernel_initializer: initialiser of the (D, C) prototypes (default ``"glorot_normal"``;
            class-major storage draws the same (D, C) values and stores their transpose).
        kernel_regularizer: e.g. ``km.regularizers.ZeroCentroid(5.0)`` for imbalanced data
            (default None).
        kernel_constraint: optional constraint (default None).
        kernel_layout: ``"class_major"`` (default, (C, D) storage) or ``"feature_major"``
            ((D, C) storage).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.ArcFace(), jit_compile=True)
        >>> model.fit(x, y)
        >>> big = km.layers.LargestMarginHead(1_000_000)   # (C, D) rows: cheap sampled steps

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (cosine head with learnable prototypes).
    """

    score_kind = "cosine"

    def call(self, inputs):
        features = self._check_features(inputs)
        if self.class_major:
            # XLA folds the transpose into the matmul: no (D, C) copy is made.
            return kmops.cosine_similarity(features, ops.transpose(self.storage))
        return kmops.cosine_similarity(features, self.storage)


__all__ = ["KERNEL_LAYOUTS", "LargestMarginHead"]
