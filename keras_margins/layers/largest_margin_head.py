"""Cosine classification head with learnable class centres (Zhou et al. 2022)."""

import keras
import numpy as np
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
        sub_centers: K >= 1 sub-centres per class (default 1: one prototype per class).
            With K > 1 (sub-center ArcFace, Deng et al. 2020) the output is
            cos θ_j = max_k cos θ_{j,k} over the sub-centres of class j that are in use.

    Sub-centres (K > 1): the trainable variable ``class_centers`` has shape (C·K, D), the K
    sub-centres of class j in rows j·K … j·K + K − 1 (class-major storage only), and a
    non-trainable (C, K) mask ``subcenter_mask`` marks the sub-centres in use (all, until
    ``drop_subcenters(dominant)`` keeps one per class). ``subcenters`` is the (C, K, D)
    tensor, ``subcenter_cosines(x)`` the (N, C, K) cosines (what
    ``km.losses.subcenter_report`` reads), ``class_cosines(x, class_ids)`` the max-pooled
    cosines of some classes. ``class_vectors()``, ``.kernel`` and ``.centers`` give one
    vector per class: its *dominant* sub-centre (the one the mask keeps; sub-centre 0 while
    all are in use), so consumers of class vectors (``SampleMarginRegularizer``, retrieval
    on prototypes) see C vectors. ``gather_class_vectors`` raises a ``ValueError`` for K > 1:
    one vector per class would silently drop the other sub-centres from a sampled step.

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

    def __init__(
        self,
        num_classes,
        kernel_initializer="glorot_normal",
        kernel_regularizer=None,
        kernel_constraint=None,
        kernel_layout=None,
        sub_centers=1,
        **kwargs,
    ):
        if not isinstance(sub_centers, int) or isinstance(sub_centers, bool) or sub_centers < 1:
            raise ValueError(f"`sub_centers` must be an integer >= 1; got {sub_centers!r}.")
        if sub_centers > 1 and kernel_layout == "feature_major":
            raise ValueError(
                "`kernel_layout`: sub-centres (sub_centers > 1) are stored class-major (C·K, D); "
                "got kernel_layout='feature_major'."
            )
        super().__init__(num_classes, kernel_initializer, kernel_regularizer, kernel_constraint,
                         kernel_layout, **kwargs)
        self.sub_centers = sub_centers
        self.subcenter_mask = None

    def build(self, input_shape):
        if self.sub_centers == 1:
            return super().build(input_shape)
        dim = self._feature_dim(input_shape)
        self.storage = self._add_class_centers(self.num_classes * self.sub_centers, dim)
        self.subcenter_mask = self.add_weight(
            name="subcenter_mask",
            shape=(self.num_classes, self.sub_centers),
            initializer="ones",
            trainable=False,
        )

    def call(self, inputs):
        if self.sub_centers > 1:
            return self.class_cosines(inputs)
        features = self._check_features(inputs)
        if self.class_major:
            # XLA folds the transpose into the matmul: no (D, C) copy is made.
            return kmops.cosine_similarity(features, ops.transpose(self.storage))
        return kmops.cosine_similarity(features, self.storage)

    # -------------------------------------------------------------------------- sub-centres
    @property
    def subcenters(self):
        """The (C, K, D) sub-centres (K = ``sub_centers``; (C, 1, D) for one per class)."""
        if self.storage is None:
            raise AttributeError(f"{self.name} is not built yet: it has no sub-centres.")
        return ops.reshape(self.centers_all(), (self.num_classes, self.sub_centers, -1))

    def centers_all(self):
        """Every stored prototype, one per row: (C·K, D) (the (C, D) centres for K = 1)."""
        return super().centers

    def dominant_subcenters(self):
        """(C,) int32: the sub-centre of each class that ``class_vectors()`` returns (the one
        the mask keeps; 0 while every sub-centre is in use or for K = 1)."""
        if self.sub_centers == 1:
            return ops.zeros((self.num_classes,), "int32")
        return ops.cast(ops.argmax(self.subcenter_mask, axis=1), "int32")

    def drop_subcenters(self, dominant):
        """Keep only sub-centre ``dominant[j]`` of every class j (sub-center ArcFace's
        dropping of the non-dominant sub-centres); training and ``predict`` then use those.

        Args:
            dominant: (C,) integers in [0, K) (``km.losses.subcenter_report(...).dominant``).
        """
        if self.sub_centers == 1:
            raise ValueError("`dominant`: this head has one centre per class; nothing to drop.")
        dominant = np.asarray(dominant)
        if dominant.shape != (self.num_classes,) or dominant.dtype.kind not in "iu" or (
                dominant.size and (dominant.min() < 0 or dominant.max() >= self.sub_centers)):
            raise ValueError(
                f"`dominant` must be {self.num_classes} integers in [0, {self.sub_centers}); got "
                f"shape {dominant.shape}, dtype {dominant.dtype}."
            )
        self.subcenter_mask.assign(np.eye(self.sub_centers, dtype="float32")[dominant])

    def subcenter_cosines(self, features):
        """(N, C, K) cosines between the features and every sub-centre (mask ignored)."""
        features = self._check_features(features)
        cos = kmops.cosine_similarity(features, ops.transpose(self.centers_all()))
        return ops.reshape(cos, (-1, self.num_classes, self.sub_centers))

    def class_cosines(self, features, class_ids=None):
        """(N, K) cosines of the classes ``class_ids`` (K,) — all C when None — max-pooled
        over their sub-centres in use: a sampled step's columns (Partial FC) on a sub-centre
        head."""
        features = self._check_features(features)
        if class_ids is None:
            rows = self.centers_all()
            keep = self.subcenter_mask
        else:
            per_class = ops.reshape(self.centers_all(), (self.num_classes, -1))
            rows = ops.reshape(ops.take(per_class, class_ids, axis=0),
                               (-1, self.storage.shape[1]))
            keep = None if self.subcenter_mask is None else ops.take(
                self.subcenter_mask, class_ids, axis=0)
        cos = kmops.cosine_similarity(features, ops.transpose(rows))
        return kmops.subcenter_max(cos, self.sub_centers, keep)

    @property
    def centers(self):
        """The (C, D) prototypes; with sub-centres, the dominant one of each class."""
        if self.sub_centers == 1:
            return super().centers
        return ops.take_along_axis(
            self.subcenters, ops.reshape(self.dominant_subcenters(), (-1, 1, 1)), axis=1)[:, 0]

    @property
    def kernel(self):
        """The (D, C) prototypes; with sub-centres, the dominant one of each class."""
        if self.sub_centers == 1:
            return super().kernel
        return ops.transpose(self.centers)

    def gather_class_vectors(self, class_ids):
        """(K, D) rows of the prototypes of ``class_ids`` (one centre per class only)."""
        if self.sub_centers > 1:
            raise ValueError(
                f"`model.head`: {self.name} has {self.sub_centers} sub-centres per class; one "
                "vector per class would drop the others from a sampled step. Use "
                "head.class_cosines(features, class_ids) (max over sub-centres)."
            )
        return super().gather_class_vectors(class_ids)

    gather_centers = gather_class_vectors

    def get_config(self):
        config = super().get_config()
        config["sub_centers"] = self.sub_centers
        return config


__all__ = ["KERNEL_LAYOUTS", "LargestMarginHead"]
