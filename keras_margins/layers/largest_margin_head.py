"""Cosine classification head with learnable class centres (Zhou et al. 2022)."""

import keras
from keras import ops

from keras_margins import ops as kmops
from keras_margins.layers._base import ClassHead
from keras_margins.ops._common import as_float, static_shape


@keras.saving.register_keras_serializable(package="keras_margins")
class LargestMarginHead(ClassHead):
    """Cosine head: (N, D) features -> (N, C) cosines cos θ_ij between ``x_i/||x_i||`` and
    ``w_j/||w_j||``. Pair it with any cosine loss (``LMSoftmax``, ``ArcFace``,
    ``CosFace``, ``SphereFace``, ``NormFace``, ``MarginSoftmax``, ``CircleLoss``): margins are
    applied in the loss, on the target column only, so ``predict`` returns plain cosines whose
    argmax is the class.

    The prototypes are read at ``.kernel`` with shape (D, C) (one column per class) and at
    ``.centers`` with shape (C, D) (one row per class), whatever the storage. ``kernel_layout``
    chooses how the trainable variable is stored:

    * ``"feature_major"`` (default): a (D, C) variable, ``.kernel`` is that variable
      (``head.kernel.assign(...)`` works) and ``.centers`` its transpose;
    * ``"class_major"``: a (C, D) variable, ``.centers`` is that variable and ``.kernel`` its
      (D, C) transpose (a tensor: assign through ``.centers``). Every class is a contiguous
      row, so a step that touches a few classes (``km.losses.PartialFC``) updates rows instead
      of scattering into a dense (D, C) gradient: use it with Partial FC and for very large C
      (measured 3x faster Partial FC steps at C = 1M, ``benchmarks/scale_classes.py``).

    Both layouts give the same outputs, and ``kernel_regularizer`` / ``kernel_constraint``
    always see the (D, C) view. Files saved before this option load as ``"feature_major"``.

    Args:
        num_classes: C >= 2.
        kernel_initializer: initialiser of the (D, C) prototypes (default ``"glorot_normal"``;
            class-major storage draws the same (D, C) values and stores their transpose).
        kernel_regularizer: e.g. ``km.regularizers.ZeroCentroid(5.0)`` for imbalanced data
            (default None).
        kernel_constraint: optional constraint (default None).
        kernel_layout: ``"feature_major"`` (default, (D, C) storage) or ``"class_major"``
            ((C, D) storage).

    Example:
        >>> model = keras.Sequential([backbone, km.layers.LargestMarginHead(10)])
        >>> model.compile("adam", loss=km.losses.ArcFace(), jit_compile=True)
        >>> model.fit(x, y)
        >>> big = km.layers.LargestMarginHead(1_000_000, kernel_layout="class_major")

    Reference:
        - Zhou et al., 2022. [Learning Towards the Largest Margins](https://arxiv.org/abs/2206.11589), ICLR
          2022 (cosine head with learnable prototypes).
    """

    def __init__(
        self,
        num_classes,
        kernel_initializer="glorot_normal",
        kernel_regularizer=None,
        kernel_constraint=None,
        kernel_layout="feature_major",
        **kwargs,
    ):
        super().__init__(num_classes, **kwargs)
        if kernel_layout not in KERNEL_LAYOUTS:
            raise ValueError(
                f"`kernel_layout` must be one of {KERNEL_LAYOUTS}; got {kernel_layout!r}."
            )
        self.kernel_layout = kernel_layout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self._storage = None

    @property
    def class_major(self):
        """True when the variable is stored (C, D) (``kernel_layout="class_major"``)."""
        return self.kernel_layout == "class_major"

    def build(self, input_shape):
        dim = self._feature_dim(input_shape)
        if not self.class_major:
            self._storage = self.add_weight(
                name="kernel",
                shape=(dim, self.num_classes),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
            return
        initializer = self.kernel_initializer

        def transposed_init(shape, dtype=None):
            return ops.transpose(initializer((shape[1], shape[0]), dtype=dtype))

        self._storage = self.add_weight(
            name="centers",
            shape=(self.num_classes, dim),
            initializer=transposed_init,
            regularizer=None if self.kernel_regularizer is None
            else _OnTranspose(self.kernel_regularizer),
            constraint=None if self.kernel_constraint is None
            else _OnTranspose(self.kernel_constraint, transpose_back=True),
        )

    @property
    def kernel(self):
        """The (D, C) prototypes: the variable (feature-major) or its transpose (class-major)."""
        if self._storage is None:
            raise AttributeError(f"{self.name} is not built yet: it has no kernel.")
        return ops.transpose(self._storage) if self.class_major else self._storage

    @property
    def centers(self):
        """The (C, D) prototypes: the variable (class-major) or its transpose (feature-major)."""
        if self._storage is None:
            raise AttributeError(f"{self.name} is not built yet: it has no centers.")
        return self._storage if self.class_major else ops.transpose(self._storage)

    def gather_centers(self, class_ids):
        """(K, D) rows of the prototypes of ``class_ids`` (K,) (what ``km.losses.PartialFC``
        trains on): a row gather of a class-major variable, whose gradient only touches
        those rows (TensorFlow: ``IndexedSlices``)."""
        if self.class_major:
            return ops.take(self._storage, class_ids, axis=0)
        return ops.transpose(ops.take(self._storage, class_ids, axis=1))

    def _check_features(self, features):
        if not self.class_major:
            return super()._check_features(features)
        features = as_float(features, "features", 2, "(N, D)")
        dim, expected = static_shape(features)[1], self._storage.shape[1]
        if dim is not None and dim != expected:
            raise ValueError(
                f"`features` has D={dim} but {type(self).__name__} was built for D={expected}."
            )
        return features

    def call(self, inputs):
        features = self._check_features(inputs)
        if self.class_major:
            # XLA folds the transpose into the matmul: no (D, C) copy is made.
            return kmops.cosine_similarity(features, ops.transpose(self._storage))
        return kmops.cosine_similarity(features, self._storage)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "kernel_layout": self.kernel_layout,
            }
        )
        return config


#: Storage layouts of ``LargestMarginHead``'s prototypes.
KERNEL_LAYOUTS = ("feature_major", "class_major")


class _OnTranspose:
    """Applies a (D, C) regulariser / constraint to a class-major (C, D) variable."""

    def __init__(self, fn, transpose_back=False):
        self.fn = fn
        self.transpose_back = transpose_back

    def __call__(self, centers):
        out = self.fn(ops.transpose(centers))
        return ops.transpose(out) if self.transpose_back else out
